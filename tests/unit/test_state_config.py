"""environments.<env>.state: Redis and PostgreSQL per environment, as the compiler checks and
renders it (docs/runtime.md "Shared state in gateway.yaml", docs/diagnostics.md E070-E073).

Each config here is written as YAML text, so a diagnostic's line and column are asserted
exactly; schema/examples/ holds one example per code as well.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from compiler import reporters
from compiler.diagnostics import Diagnostic
from compiler.render import ImageInputs, render_environment
from compiler.schema import schema_text
from compiler.validate import CheckResult, check_bytes
from deployer.bundle import Bundle, DeployError
from deployer.secrets_env import secrets_file
from runtime.config import RuntimeConfig
from tests import deploy_units_support as support

compile_env = support.compile_env

HEAD = """\
version: 1
project: acme-chat
providers:
  openai:
    adapter: openai
    credentials:
      api_key: OPENAI_API_KEY
    models:
      gpt-4o:
        context_window: 128000
        capabilities: [streaming, tools]
        price: {input: 2.5, cached_input: 1.25, output: 10.0}
routes:
  chat:
    candidates: [openai/gpt-4o]
"""


def _env(name: str, port: int, body: str = "", secrets: str = "", replicas: int = 1) -> str:
    """One ssh environment; `body` and `secrets` are YAML lines at the environment's and the
    secrets' indentation (written without it)."""
    text = f"  {name}:\n    target: ssh\n    host: gw1.example.com\n    port: {port}\n"
    if replicas != 1:
        text += f"    replicas: {replicas}\n"
    text += textwrap.indent(textwrap.dedent(body), "    ") if body else ""
    up = name.upper()
    text += f"    secrets:\n      OPENAI_API_KEY: {{env: {up}_OPENAI_API_KEY}}\n"
    text += textwrap.indent(textwrap.dedent(secrets), "      ") if secrets else ""
    return text


def config(*envs: str, extra: str = "") -> str:
    return HEAD + extra + "environments:\n" + "".join(envs)


def check(text: str) -> CheckResult:
    return check_bytes(text)


def found(text: str) -> list[tuple[str, str, int, int]]:
    """(code, dotted path, line, column) of every diagnostic."""
    return [(d.code, d.dotted_path, d.line, d.column) for d in check(text).diagnostics]


def only(text: str, code: str) -> Diagnostic:
    ds = [d for d in check(text).diagnostics if d.code == code]
    assert len(ds) == 1, [(d.code, d.message) for d in check(text).diagnostics]
    return ds[0]


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth - 1]


FIXED = ImageInputs(runtime_digest="sha256:" + "0" * 64, requirements="")


def runtime_json(text: str, env: str) -> dict[str, Any]:
    result = check(text)
    assert result.config is not None and result.ok, [d.message for d in result.diagnostics]
    doc: dict[str, Any] = json.loads(
        render_environment(result.config, env, FIXED, resolved=result.resolved[env])["runtime.json"]
    )
    return doc


# ---------------------------------------------------------------------------------------
# rendering: runtime.json `state`, `logging` and `secrets`

REDIS_AND_PG = _env(
    "production",
    8300,
    "state:\n  redis: PRODUCTION_REDIS_URL\n  postgres: PRODUCTION_DATABASE_URL\n",
    "PRODUCTION_REDIS_URL: {file: ~/prod/redis.url}\n"
    "PRODUCTION_DATABASE_URL: {file: ~/prod/db.url}\n",
)


def test_without_state_the_embedded_stores_are_rendered() -> None:
    doc = runtime_json(config(_env("staging", 8200)), "staging")
    assert doc["state"] == {
        "limits": {"store": "memory", "url_secret": None, "on_unavailable": "closed"},
        "keys": {"store": "sqlite", "url_secret": None},
    }
    assert (doc["logging"]["sink"], doc["logging"]["url_secret"]) == ("sqlite", None)
    assert sorted(doc["secrets"]) == ["OPENAI_API_KEY"]


def test_redis_and_postgres_are_rendered_and_their_secrets_named() -> None:
    doc = runtime_json(config(REDIS_AND_PG), "production")
    assert doc["state"] == {
        "limits": {
            "store": "redis",
            "url_secret": "PRODUCTION_REDIS_URL",
            "on_unavailable": "closed",
        },
        "keys": {"store": "postgres", "url_secret": "PRODUCTION_DATABASE_URL"},
    }
    assert (doc["logging"]["sink"], doc["logging"]["url_secret"]) == (
        "postgres",
        "PRODUCTION_DATABASE_URL",
    )
    assert doc["secrets"]["PRODUCTION_REDIS_URL"] == {
        "needed_by": "environments.production.state.redis",
        "optional": False,
    }
    assert doc["secrets"]["PRODUCTION_DATABASE_URL"] == {
        "needed_by": "environments.production.state.postgres",
        "optional": False,
    }
    # The gateway reads it back as the contract's StateConfig.
    state = RuntimeConfig.from_dict(doc).state
    assert (state.limits_store, state.redis_url_secret, state.keys_store) == (
        "redis",
        "PRODUCTION_REDIS_URL",
        "postgres",
    )


def test_redis_alone_keeps_keys_and_records_embedded() -> None:
    text = config(
        _env(
            "staging",
            8200,
            "state: {redis: STAGING_REDIS_URL, on_redis_unavailable: open}\n",
            "STAGING_REDIS_URL: {env: STAGING_REDIS_URL}\n",
        )
    )
    doc = runtime_json(text, "staging")
    assert doc["state"]["limits"] == {
        "store": "redis",
        "url_secret": "STAGING_REDIS_URL",
        "on_unavailable": "open",
    }
    assert doc["state"]["keys"]["store"] == "sqlite"
    assert doc["logging"]["sink"] == "sqlite"


LOGGING_PG = "logging:\n  sink: postgres\n  url_secret: REQUEST_LOG_DATABASE_URL\n"


def test_top_level_postgres_logging_holds_where_state_postgres_is_absent() -> None:
    text = config(
        _env("staging", 8200, "", "REQUEST_LOG_DATABASE_URL: {env: STAGING_LOG_DB}\n"),
        REDIS_AND_PG,
        extra=LOGGING_PG,
    )
    staging = runtime_json(text, "staging")
    assert (staging["logging"]["sink"], staging["logging"]["url_secret"]) == (
        "postgres",
        "REQUEST_LOG_DATABASE_URL",
    )
    assert staging["state"]["keys"]["store"] == "sqlite", "logging moves records, not keys"
    assert staging["secrets"]["REQUEST_LOG_DATABASE_URL"]["needed_by"] == "logging.url_secret"
    production = runtime_json(text, "production")
    assert production["logging"]["url_secret"] == "PRODUCTION_DATABASE_URL"
    assert "REQUEST_LOG_DATABASE_URL" not in production["secrets"]


def test_deploy_writes_the_store_urls_into_the_secrets_file(
    compile_env: support.Compile, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = support.base_config()
    prod = cfg["environments"]["production"]
    prod["state"] = {"redis": "PRODUCTION_REDIS_URL", "postgres": "PRODUCTION_DATABASE_URL"}
    prod["secrets"]["PRODUCTION_REDIS_URL"] = {"env": "SY_UNIT_PROD_REDIS"}
    prod["secrets"]["PRODUCTION_DATABASE_URL"] = {"env": "SY_UNIT_PROD_DB"}
    for var in ("SY_UNIT_PRODUCTION_VENDOR_KEY", "SY_UNIT_PRODUCTION_BACKUP_KEY"):
        monkeypatch.setenv(var, "k")
    monkeypatch.setenv("SY_UNIT_PROD_REDIS", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("SY_UNIT_PROD_DB", "postgresql://gw@127.0.0.1/gw")
    bundle: Bundle = compile_env(cfg, "production")
    runtime = json.loads(bundle.files["runtime.json"])
    sf = secrets_file(bundle)
    assert set(runtime["secrets"]) <= set(sf.names)
    assert {"PRODUCTION_REDIS_URL", "PRODUCTION_DATABASE_URL"} <= set(sf.names)
    assert b"PRODUCTION_REDIS_URL='redis://127.0.0.1:6379/0'\n" in sf.content


def test_deploy_refuses_a_store_secret_without_a_source(compile_env: support.Compile) -> None:
    cfg = support.base_config()
    cfg["environments"]["production"]["state"] = {"redis": "PRODUCTION_REDIS_URL"}
    with pytest.raises(DeployError, match="PRODUCTION_REDIS_URL"):
        compile_env(cfg, "production")


# ---------------------------------------------------------------------------------------
# shape: unknown keys, secret names, URLs pasted in, the schema


def test_an_unknown_key_in_state_gets_did_you_mean() -> None:
    text = config(_env("staging", 8200, "state:\n  reddis: STAGING_REDIS_URL\n"))
    d = only(text, "E010")
    assert (d.dotted_path, d.line, d.column) == (
        "environments.staging.state.reddis",
        line_of(text, "reddis"),
        7,
    )
    assert d.hint == "did you mean 'redis'?"


def test_a_store_secret_name_is_checked_for_shape() -> None:
    text = config(_env("staging", 8200, "state:\n  postgres: staging_db\n"))
    d = only(text, "E013")
    assert d.dotted_path == "environments.staging.state.postgres"
    assert d.message == "'staging_db' is not a valid secret name"


def test_an_unknown_on_redis_unavailable_value_is_refused() -> None:
    text = config(_env("staging", 8200, "state: {redis: R_URL, on_redis_unavailable: opne}\n"))
    d = only(text, "E015")
    assert d.dotted_path == "environments.staging.state.on_redis_unavailable"
    assert d.hint == "did you mean 'open'?"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("redis://:FAKEpass0123@redis.internal:6379/0", "a URL with a password in it"),
        ("rediss://default:FAKEpass0123@redis.internal:6380", "a URL with a password in it"),
        ("redis://redis.internal:6379/0", "a URL"),
    ],
)
@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_a_url_where_the_secret_name_belongs_is_refused_and_never_echoed(
    value: str, kind: str, fmt: str
) -> None:
    text = config(_env("production", 8300, f"state:\n  redis: {value}\n"))
    result = check(text)
    assert [(d.code, d.dotted_path) for d in result.diagnostics] == [
        ("E040", "environments.production.state.redis")
    ]
    d = result.diagnostics[0]
    assert (d.line, d.column) == (line_of(text, "redis:"), 14)
    assert (
        d.message
        == f"this looks like {kind} written into the config; the config may only name secrets"
    )
    assert d.hint is not None and "redis: PRODUCTION_REDIS_URL" in d.hint
    out = {"text": reporters.text, "json": reporters.as_json, "github": reporters.github}[fmt](
        "gateway.yaml", result.diagnostics
    )
    assert "redis.internal" not in out and "FAKEpass" not in out


def test_the_schema_validates_the_state_block() -> None:
    schema = json.loads(schema_text())
    validator = Draft202012Validator(schema)
    good = yaml.safe_load(config(REDIS_AND_PG))
    good["environments"]["production"]["state"].update(
        on_redis_unavailable="open", shared_with=["staging"]
    )
    assert not list(validator.iter_errors(good))
    for bad in (
        {"redis": "R", "reddis": "R"},
        {"redis": "redis://host"},
        {"on_redis_unavailable": "maybe"},
        {"shared_with": "staging"},
        {"shared_with": ["Staging"]},
    ):
        doc = yaml.safe_load(config(REDIS_AND_PG))
        doc["environments"]["production"]["state"] = bad
        assert list(validator.iter_errors(doc)), bad


# ---------------------------------------------------------------------------------------
# secrets: sources, sharing between environments


def test_a_store_secret_without_a_source_is_e042_where_the_others_are() -> None:
    text = config(_env("production", 8300, "state: {redis: PRODUCTION_REDIS_URL}\n"))
    d = only(text, "E042")
    assert (d.dotted_path, d.line, d.column) == (
        "environments.production.secrets",
        line_of(text, "OPENAI_API_KEY: {env"),
        7,
    )
    assert "PRODUCTION_REDIS_URL (named by environments.production.state.redis)" in d.message
    assert d.hint == (
        "add `PRODUCTION_REDIS_URL: {env: PRODUCTION_REDIS_URL}` under "
        "environments.production.secrets"
    ), "the environment's prefix is not doubled"


def _two(staging_state: str, production_state: str, staging_src: str, production_src: str) -> str:
    return config(
        _env("staging", 8200, staging_state, f"STAGING_REDIS_URL: {staging_src}\n"),
        _env("production", 8300, production_state, f"PRODUCTION_REDIS_URL: {production_src}\n"),
    )


def test_a_redis_shared_through_one_variable_is_an_error_at_the_second_source() -> None:
    text = _two(
        "state: {redis: STAGING_REDIS_URL}\n",
        "state: {redis: PRODUCTION_REDIS_URL}\n",
        "{env: REDIS_URL}",
        "{env: REDIS_URL}",
    )
    assert found(text) == [
        (
            "E070",
            "environments.production.secrets.PRODUCTION_REDIS_URL.env",
            line_of(text, "PRODUCTION_REDIS_URL: {env"),
            35,
        )
    ]
    d = only(text, "E070")
    assert d.message == (
        "environments 'staging' and 'production' share one Redis: both read its URL from the "
        "environment variable 'REDIS_URL'"
    )
    assert d.hint is not None and "shared_with: [production]" in d.hint
    assert "shared_with: [staging]" in d.hint


def test_one_side_of_shared_with_is_not_enough() -> None:
    text = _two(
        "state: {redis: STAGING_REDIS_URL, shared_with: [production]}\n",
        "state: {redis: PRODUCTION_REDIS_URL}\n",
        "{file: /etc/sy/redis.url}",
        "{file: /etc/sy/../sy/redis.url}",
    )
    d = only(text, "E070")
    assert d.dotted_path == "environments.production.secrets.PRODUCTION_REDIS_URL.file"
    assert d.hint is not None and d.hint.startswith(
        "environments.staging.state lists 'production' in shared_with, but "
        "environments.production.state does not list 'staging'"
    )


def test_both_sides_of_shared_with_allow_the_share() -> None:
    text = _two(
        "state: {redis: STAGING_REDIS_URL, shared_with: [production]}\n",
        "state: {redis: PRODUCTION_REDIS_URL, shared_with: [staging]}\n",
        "{env: REDIS_URL}",
        "{env: REDIS_URL}",
    )
    assert found(text) == []


def test_a_third_environment_needs_the_agreement_of_each_it_shares_with() -> None:
    text = config(
        _env(
            "staging",
            8200,
            "state: {redis: STAGING_REDIS_URL, shared_with: [production, qa]}\n",
            "STAGING_REDIS_URL: {env: REDIS_URL}\n",
        ),
        _env(
            "production",
            8300,
            "state: {redis: PRODUCTION_REDIS_URL, shared_with: [staging]}\n",
            "PRODUCTION_REDIS_URL: {env: REDIS_URL}\n",
        ),
        _env(
            "qa",
            8400,
            "state: {redis: QA_REDIS_URL, shared_with: [staging]}\n",
            "QA_REDIS_URL: {env: REDIS_URL}\n",
        ),
    )
    assert [(c, p) for c, p, *_ in found(text)] == [
        ("E070", "environments.qa.secrets.QA_REDIS_URL.env")
    ], "qa and staging agree; production never agreed to qa"
    assert only(text, "E070").message.startswith("environments 'production' and 'qa' share")


def test_a_shared_records_database_of_top_level_logging_is_a_store_share() -> None:
    text = config(
        _env("staging", 8200, "", "REQUEST_LOG_DATABASE_URL: {env: LOG_DB}\n"),
        _env("production", 8300, "", "REQUEST_LOG_DATABASE_URL: {env: LOG_DB}\n"),
        extra=LOGGING_PG,
    )
    assert [c for c, *_ in found(text)] == ["E070"], "a store, not a shared credential (E041)"
    allowed = config(
        _env(
            "staging",
            8200,
            "state: {shared_with: [production]}\n",
            "REQUEST_LOG_DATABASE_URL: {env: LOG_DB}\n",
        ),
        _env(
            "production",
            8300,
            "state: {shared_with: [staging]}\n",
            "REQUEST_LOG_DATABASE_URL: {env: LOG_DB}\n",
        ),
        extra=LOGGING_PG,
    )
    assert found(allowed) == []


def test_a_redis_and_a_postgres_from_one_source_are_still_a_shared_credential() -> None:
    text = config(
        _env(
            "staging",
            8200,
            "state: {redis: STAGING_REDIS_URL}\n",
            "STAGING_REDIS_URL: {env: URL}\n",
        ),
        _env(
            "production", 8300, "state: {postgres: PRODUCTION_DB}\n", "PRODUCTION_DB: {env: URL}\n"
        ),
    )
    assert [c for c, *_ in found(text)] == ["E041"]


def test_shared_with_names_known_other_environments() -> None:
    text = config(
        _env(
            "staging",
            8200,
            "state:\n  redis: STAGING_REDIS_URL\n  shared_with: [prodution, staging]\n",
            "STAGING_REDIS_URL: {env: STAGING_REDIS_URL}\n",
        ),
        _env("production", 8300),
    )
    row = line_of(text, "shared_with")
    assert found(text) == [
        ("E071", "environments.staging.state.shared_with[0]", row, 21),
        ("E071", "environments.staging.state.shared_with[1]", row, 32),
    ]
    assert only(text.replace(", staging]", "]"), "E071").hint == "did you mean 'production'?"


def test_an_allowance_for_nothing_is_a_warning() -> None:
    text = _two(
        "state: {redis: STAGING_REDIS_URL, shared_with: [production]}\n",
        "state: {redis: PRODUCTION_REDIS_URL, shared_with: [staging]}\n",
        "{env: STAGING_REDIS_URL}",
        "{env: PRODUCTION_REDIS_URL}",
    )
    assert [(c, p) for c, p, *_ in found(text)] == [
        ("W071", "environments.staging.state.shared_with[0]"),
        ("W071", "environments.production.state.shared_with[0]"),
    ]


def test_one_secret_for_two_things_is_refused() -> None:
    both = config(
        _env(
            "production",
            8300,
            "state: {redis: PRODUCTION_URL, postgres: PRODUCTION_URL}\n",
            "PRODUCTION_URL: {env: PRODUCTION_URL}\n",
        )
    )
    assert only(both, "E072").dotted_path == "environments.production.state.redis"
    records = config(
        _env(
            "production",
            8300,
            "state: {redis: REQUEST_LOG_DATABASE_URL}\n",
            "REQUEST_LOG_DATABASE_URL: {env: PRODUCTION_LOG_DB}\n",
        ),
        extra=LOGGING_PG,
    )
    assert only(records, "E072").message == (
        "REQUEST_LOG_DATABASE_URL is named for both the Redis and the PostgreSQL URL"
    )
    credential = config(_env("production", 8300, "state: {postgres: OPENAI_API_KEY}\n"))
    d = only(credential, "E072")
    assert d.message == (
        "OPENAI_API_KEY holds the PostgreSQL URL but is also named by "
        "providers.openai.credentials.api_key"
    )


def test_a_store_secret_cannot_be_optional() -> None:
    text = config(
        _env(
            "production",
            8300,
            "state: {postgres: PRODUCTION_DATABASE_URL}\n",
            "PRODUCTION_DATABASE_URL: {env: PRODUCTION_DATABASE_URL, optional: true}\n",
        )
    )
    assert [(c, p) for c, p, *_ in found(text)] == [
        ("E073", "environments.production.secrets.PRODUCTION_DATABASE_URL.optional")
    ]


# ---------------------------------------------------------------------------------------
# exact limits


LIMITS = "limits:\n  per_key:\n    requests_per_minute: 60\n"


def test_replicas_with_limits_and_no_redis_warn_at_replicas() -> None:
    text = config(_env("production", 8300, replicas=2), extra=LIMITS)
    d = only(text, "W070")
    assert (d.dotted_path, d.line, d.column) == (
        "environments.production.replicas",
        line_of(text, "replicas: 2"),
        15,
    )
    assert "2 gateway processes (2 replicas × 1 worker)" in d.message
    assert d.hint is not None and "state: {redis: PRODUCTION_REDIS_URL}" in d.hint


def test_workers_with_a_budget_and_no_redis_warn_at_the_environment() -> None:
    runtime = "runtime:\n  workers: 4\nlimits:\n  per_org:\n    usd_per_day: 5\n"
    text = config(_env("production", 8300), extra=runtime)
    d = only(text, "W070")
    assert (d.dotted_path, d.line, d.column) == (
        "environments.production",
        line_of(text, "  production:"),
        3,
    )
    assert "4 gateway processes (1 replica × 4 workers)" in d.message


@pytest.mark.parametrize(
    ("env", "extra"),
    [
        (_env("production", 8300, replicas=2), ""),  # no limits to be exact about
        (_env("production", 8300, replicas=1), LIMITS),  # one process counts exactly
        (
            _env(
                "production",
                8300,
                "state: {redis: PRODUCTION_REDIS_URL}\n",
                "PRODUCTION_REDIS_URL: {env: PRODUCTION_REDIS_URL}\n",
                replicas=2,
            ),
            LIMITS,
        ),
    ],
)
def test_no_limits_warning_where_limits_are_exact(env: str, extra: str) -> None:
    assert found(config(env, extra=extra)) == []


def test_on_redis_unavailable_without_redis_is_a_warning() -> None:
    text = config(_env("production", 8300, "state: {on_redis_unavailable: open}\n"))
    assert [(c, p) for c, p, *_ in found(text)] == [
        ("W072", "environments.production.state.on_redis_unavailable")
    ]
