"""What the audit of `check` found (issue 14, point 6), one behaviour per test.

The audit mutated the example gateway.yaml 177 ways against DESIGN.md section 3; each miss
it found is pinned here, and by an example under schema/examples/ with its exact output.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from compiler.secret_values import has_known_secret, known_secret_kind, looks_like_secret, redact
from compiler.validate import CheckResult, check_bytes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "gateway.yaml").read_text(encoding="utf-8")
# Fakes in the documented shapes, built so no scanner mistakes this file for a leak.
OPENAI_KEY = "sk-" + "proj-" + "Zq4Xw9Lm2Rt7Yb8Kc3Nd5Vf6Hg1Js0Pa"
ANTHROPIC_KEY = "sk-" + "ant-api03-" + "Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz"


def codes(result: CheckResult) -> list[tuple[str, str]]:
    return [(d.code, d.dotted_path) for d in result.diagnostics]


def _edit(old: str, new: str, text: str = EXAMPLE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


# ---------------------------------------------------------------------------------------
# 1. a key pasted into a comment


def test_a_key_in_a_comment_is_an_error_at_the_comment() -> None:
    raw = _edit(
        "routes:\n",
        f"# temporary, until ops sets the variable: {OPENAI_KEY}\nroutes:\n",
    )
    line = raw.splitlines().index(f"# temporary, until ops sets the variable: {OPENAI_KEY}") + 1
    result = check_bytes(raw)
    found = [d for d in result.diagnostics if d.code == "E040"]
    assert len(found) == 1
    d = found[0]
    assert (d.line, d.column) == (line, 1)
    assert "an OpenAI API key" in d.message and "comment" in d.message
    assert d.hint is not None and "rotate" in d.hint
    assert OPENAI_KEY not in d.message + d.hint
    assert not result.ok


def test_a_key_in_a_trailing_comment_is_reported_at_its_column() -> None:
    old = "    port: 8300\n"
    if old not in EXAMPLE:  # the example's production port
        pytest.skip("the example changed")
    raw = _edit(old, f"    port: 8300  # old key {ANTHROPIC_KEY}\n")
    line_text = f"    port: 8300  # old key {ANTHROPIC_KEY}"
    line = raw.splitlines().index(line_text) + 1
    found = [d for d in check_bytes(raw).diagnostics if d.code == "E040"]
    assert [(d.line, d.column) for d in found] == [(line, line_text.index("#") + 1)]
    assert "an Anthropic API key" in found[0].message


def test_every_comment_with_a_key_is_reported() -> None:
    raw = _edit("routes:\n", f"# {OPENAI_KEY}\nroutes:\n  # {OPENAI_KEY}\n")
    found = [d for d in check_bytes(raw).diagnostics if d.code == "E040"]
    assert [d.dotted_path for d in found] == ["<comment>", "<comment>"]
    assert found[0].line + 2 == found[1].line
    assert [d.column for d in found] == [1, 3]


def test_a_hash_inside_a_value_is_not_a_comment() -> None:
    # `#` without a space before it, and `#` inside quotes, are part of the value; a key in
    # a value is reported once, at the value, not again as a comment.
    raw = _edit(
        "description: LLM gateway for Acme's assistant and document pipeline.",
        f'description: "issue #12: rotate {OPENAI_KEY}"',
    )
    found = [d for d in check_bytes(raw).diagnostics if d.code == "E040"]
    assert [(d.dotted_path, "comment" in d.message) for d in found] == [("description", False)]


def test_comments_without_keys_and_words_like_keys_pass() -> None:
    raw = _edit(
        "routes:\n",
        "# the helpdesk-integration-for-the-support-team route comes later\n"
        "# see https://example.com/docs#routes, ask the desk-assistant team\nroutes:\n",
    )
    assert check_bytes(raw).diagnostics == []


def test_a_key_in_a_comment_of_a_file_that_does_not_parse_is_still_reported() -> None:
    raw = f"# {OPENAI_KEY}\nversion: 1\nproject: [unclosed\n"
    found = [d.code for d in check_bytes(raw).diagnostics]
    assert "E040" in found and "E001" in found


# ---------------------------------------------------------------------------------------
# 2. linear-time secret patterns


@pytest.mark.parametrize(
    "value",
    [
        "a" * 1_000_000,
        "a://" + "x:" * 500_000,
        "redis://:" + "p" * 1_000_000,
        "sk-" * 333_334,
        "-----BEGIN " * 90_000,
        ("a://b:" + "c" * 50) * 18_000,
    ],
    ids=["letters", "colons", "url-no-at", "prefixes", "pem-heads", "many-urls"],
)
def test_every_secret_pattern_is_linear(value: str) -> None:
    assert len(value) >= 990_000
    start = time.perf_counter()
    has_known_secret(value)
    redact(value)
    looks_like_secret(value)
    assert time.perf_counter() - start < 1.0


def test_a_config_with_a_million_character_value_is_checked_in_under_a_second() -> None:
    raw = _edit(
        "description: LLM gateway for Acme's assistant and document pipeline.",
        "description: https://" + "a" * 1_000_000,
    )
    start = time.perf_counter()
    result = check_bytes(raw)
    assert time.perf_counter() - start < 1.0
    assert result.ok


# ---------------------------------------------------------------------------------------
# 4. no false alarms on prose and model ids


@pytest.mark.parametrize(
    "text",
    [
        "Routes for the helpdesk-integration-and-escalation-service team.",
        "ft:gpt-4o-2024-08-06:acme:desk-assistant-2024-11-v3:AbC123xyz",
        "accounts/acme/models/task-classifier-2024-11-20-large-v2",
        "ft:gpt-4o-mini:acme:sk-classifier-2024-11-20-large:Xy9",
        "the risk-assessment-pipeline-for-invoices-v2",
    ],
)
def test_prose_and_model_ids_are_not_keys(text: str) -> None:
    assert known_secret_kind(text) is None


@pytest.mark.parametrize(
    "text",
    [
        OPENAI_KEY,
        f"key={OPENAI_KEY}",
        f'"{OPENAI_KEY}"',
        f"'{OPENAI_KEY}'",
        f"Authorization: Bearer {OPENAI_KEY}",
        f"https://api.example.com/v1?api_key={OPENAI_KEY}&x=1",
        f"(old key: {OPENAI_KEY})",
    ],
)
def test_real_keys_in_urls_quotes_and_assignments_are_found(text: str) -> None:
    assert known_secret_kind(text) == "an OpenAI API key"
    assert OPENAI_KEY not in redact(text)


def test_a_fine_tuned_upstream_id_and_a_description_pass_check() -> None:
    raw = _edit(
        "upstream: gpt-4o-2024-11-20",
        "upstream: ft:gpt-4o-2024-08-06:acme:desk-assistant-2024-11:AbC123",
    )
    raw = _edit(
        "description: LLM gateway for Acme's assistant and document pipeline.",
        "description: LLM gateway for the helpdesk-integration-and-escalation team.",
        raw,
    )
    assert check_bytes(raw).diagnostics == []


# ---------------------------------------------------------------------------------------
# 6. the E041 hint gives each environment a path of its own


def _shared_file_hint(staging_file: str, production_file: str) -> str:
    """The E041 hint when staging and production read their key from these files."""
    raw = (ROOT / "schema/examples/invalid/041-shared-secret-file.yaml").read_text()
    old = "{file: ~/.config/switchyard/openai.key}"
    assert raw.count(old) == 2
    raw = raw.replace(old, "{file: " + staging_file + "}", 1)
    raw = raw.replace(old, "{file: " + production_file + "}", 1)
    found = [d for d in check_bytes(raw).diagnostics if d.code == "E041"]
    assert len(found) == 1 and found[0].hint is not None
    return found[0].hint


@pytest.mark.parametrize(
    ("shared", "staging", "production"),
    [
        (
            "~/.config/switchyard/openai.key",
            "~/.config/switchyard/staging/openai.key",
            "~/.config/switchyard/production/openai.key",
        ),
        (
            "~/.config/switchyard/staging/openai.key",
            "~/.config/switchyard/staging/openai.key",
            "~/.config/switchyard/production/openai.key",
        ),
        (
            "/etc/switchyard/production/keys/openai.key",
            "/etc/switchyard/staging/keys/openai.key",
            "/etc/switchyard/production/keys/openai.key",
        ),
        (
            "/run/secrets/staging-openai.key",
            "/run/secrets/staging-openai.key",
            "/run/secrets/production-openai.key",
        ),
    ],
)
def test_the_shared_file_hint_never_nests_one_environment_in_another(
    shared: str, staging: str, production: str
) -> None:
    hint = _shared_file_hint(shared, shared)
    assert hint.endswith(f"e.g. {staging} and {production}")
    assert "staging/production" not in hint and "production/staging" not in hint


# ---------------------------------------------------------------------------------------
# 5. "did you mean" for secret names


def test_a_misspelt_credential_name_gets_did_you_mean_and_no_unused_warning() -> None:
    raw = _edit("api_key: GEMINI_API_KEY", "api_key: GEMINI_APIKEY")
    result = check_bytes(raw)
    found = [(d.code, d.dotted_path) for d in result.diagnostics]
    assert found == [
        ("E042", "environments.dev.secrets.GEMINI_API_KEY"),
        ("E042", "environments.staging.secrets.GEMINI_API_KEY"),
    ]
    for d in result.diagnostics:
        assert d.hint is not None and d.hint.startswith("did you mean GEMINI_API_KEY?")
        assert "providers.gemini.credentials.api_key" in d.hint
        assert "add `GEMINI_APIKEY" not in d.hint  # the typo is not spread


def test_a_misspelt_source_name_is_paired_with_the_name_needed() -> None:
    raw = _edit(
        "      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}",
        "      GEMINI_APIKEY: {env: STAGING_GEMINI_API_KEY}",
    )
    result = check_bytes(raw)
    assert codes(result) == [("E042", "environments.staging.secrets.GEMINI_APIKEY")]
    hint = result.diagnostics[0].hint
    assert hint is not None and hint.startswith("did you mean GEMINI_APIKEY?")


def test_a_name_used_in_another_environment_is_suggested() -> None:
    raw = ROOT / "schema/examples/invalid/083-misspelt-secret-name-in-one-environment.yaml"
    result = check_bytes(raw.read_text())
    production = [d for d in result.diagnostics if d.path[:2] == ("environments", "production")]
    assert [d.code for d in production] == ["E042"]
    assert production[0].hint is not None
    assert production[0].hint.startswith(
        "did you mean GLOBEX_BYOK_ENCRYPTION_KEY, the name used elsewhere in this file?"
    )


def test_an_unrelated_missing_secret_keeps_the_add_hint() -> None:
    raw = _edit("      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}\n", "")
    result = check_bytes(raw)
    assert codes(result) == [("E042", "environments.staging.secrets")]
    assert result.diagnostics[0].hint == (
        "add `GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}` under environments.staging.secrets"
    )


# ---------------------------------------------------------------------------------------
# 3. one bad value hides nothing else, and no warning follows from it

DUPLICATE = (
    "      - gemini/gemini-2.5-pro\n      - mock/echo\n    requires: [streaming, tools]",
    "      - gemini/gemini-2.5-pro\n      - mock/echo\n      - openai/gpt-4o\n"
    "    requires: [streaming, tools, json_schema]",
)


def test_a_bad_provider_timeout_hides_no_route_problem_and_no_warning_follows() -> None:
    raw = _edit(
        "    timeout_s: 120\n    models:\n      gpt-4o:",
        "    timeout_s: fast\n    models:\n      gpt-4o:",
    )
    raw = _edit(*DUPLICATE, raw)
    assert codes(check_bytes(raw)) == [
        ("E011", "providers.openai.timeout_s"),
        ("E030", "routes.chat.candidates[1]"),  # claude-sonnet-4 lacks json_schema
        ("E034", "routes.chat.candidates[4]"),
    ]


def test_a_bad_max_attempts_hides_no_duplicate_candidate() -> None:
    raw = _edit(
        "      max_attempts: 3\n      first_byte_timeout_s: 10",
        "      max_attempts: three\n      first_byte_timeout_s: 10",
    )
    raw = _edit(*DUPLICATE, raw)
    assert codes(check_bytes(raw)) == [
        ("E030", "routes.chat.candidates[1]"),
        ("E034", "routes.chat.candidates[4]"),
        ("E011", "routes.chat.fallback.max_attempts"),
    ]


def test_a_bad_port_hides_no_shared_credential_and_is_not_compared() -> None:
    raw = _edit("    port: 8200", "    port: eighty")
    shared = "{file: ~/.config/switchyard/production/openai.key}"
    raw = _edit(
        "      OPENAI_API_KEY: {env: STAGING_OPENAI_API_KEY}",
        "      OPENAI_API_KEY: " + shared,
        raw,
    )
    assert codes(check_bytes(raw)) == [
        ("E011", "environments.staging.port"),
        ("E041", "environments.production.secrets.OPENAI_API_KEY.file"),
    ]
    # the stand-in for the bad port is never compared with a real one
    both = _edit("    port: 8300", "    port: 65535", _edit("    port: 8200", "    port: eighty"))
    assert codes(check_bytes(both)) == [("E011", "environments.staging.port")]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        (
            "    timeout_s: 120\n    models:\n      gpt-4o:",
            "    timeout_s: fast\n    models:\n      gpt-4o:",
            "providers.openai.timeout_s",
        ),
        (
            "upstream: gpt-4o-2024-11-20\n        context_window: 128000\n",
            "upstream: gpt-4o-2024-11-20\n        context_window: big\n",
            "providers.openai.models.gpt-4o.context_window",
        ),
        (
            "      api_key: OPENAI_API_KEY\n",
            "      api_key: openai key\n",
            "providers.openai.credentials.api_key",
        ),
        ("    replicas: 2\n", "    replicas: two\n", "environments.production.replicas"),
        (
            "    ssh_user: deploy\n    port: 8300",
            "    ssh_user: deploy\n    port: eighty",
            "environments.production.port",
        ),
    ],
)
def test_no_warning_and_no_error_cascades_from_one_bad_value(old: str, new: str, path: str) -> None:
    result = check_bytes(_edit(old, new))
    assert [d.dotted_path for d in result.diagnostics] == [path]
    assert [d.code for d in result.diagnostics] in (["E011"], ["E013"])


def test_unused_warnings_still_come_when_the_shape_is_valid() -> None:
    raw = _edit(
        "      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}\n",
        "      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}\n"
        "      MISTRAL_API_KEY: {env: STAGING_MISTRAL_API_KEY}\n",
    )
    assert codes(check_bytes(raw)) == [("W044", "environments.staging.secrets.MISTRAL_API_KEY")]


def test_an_unknown_key_elsewhere_does_not_silence_unused_warnings() -> None:
    raw = _edit(
        "      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}\n",
        "      GEMINI_API_KEY: {env: STAGING_GEMINI_API_KEY}\n"
        "      MISTRAL_API_KEY: {env: STAGING_MISTRAL_API_KEY}\n",
    )
    raw = _edit(
        "    timeout_s: 120\n    models:\n      gpt-4o:",
        "    timeout: 120\n    models:\n      gpt-4o:",
        raw,
    )
    assert codes(check_bytes(raw)) == [
        ("E010", "providers.openai.timeout"),
        ("W044", "environments.staging.secrets.MISTRAL_API_KEY"),
    ]
