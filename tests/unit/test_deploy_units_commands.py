"""Deploy unit tests, without a Docker engine or an sshd: commands: argument lists.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import pytest

from deployer import commands as cmd
from deployer.hosts import LocalHost
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    SCRUB,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
no_secret_sources = support.no_secret_sources


def test_compose_up_starts_exactly_the_named_services_from_images_already_built() -> None:
    assert cmd.compose_up(
        "hello-gateway-staging", "/srv/s/releases/R/compose.yaml", ["gateway-b1", "gateway-b2"]
    ) == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        "hello-gateway-staging",
        "-f",
        "/srv/s/releases/R/compose.yaml",
        "up",
        "--detach",
        "--no-deps",
        "--no-build",
        "gateway-b1",
        "gateway-b2",
    ]


def test_images_are_built_by_their_own_command_one_service_per_image() -> None:
    assert cmd.compose_build("p", "/f.yaml", ["gateway-a1", "proxy"]) == [
        *SCRUB,
        "docker",
        "compose",
        "-p",
        "p",
        "-f",
        "/f.yaml",
        "build",
        "gateway-a1",
        "proxy",
    ]


def test_the_staged_proxy_config_is_checked_by_haproxy_in_the_running_proxy_or_a_throwaway() -> (
    None
):
    check = ["haproxy", "-c", "-f", "/etc/switchyard/proxy/haproxy.cfg.next"]
    assert cmd.check_proxy_config("/d/proxy", "p/proxy:1", "c0ffee") == [
        "docker",
        "exec",
        "c0ffee",
        *check,
    ]
    assert cmd.check_proxy_config("/d/proxy", "p/proxy:1", None) == [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        "dev.switchyard.managed-by=switchyard",
        "--volume",
        "/d/proxy:/etc/switchyard/proxy:ro",
        "p/proxy:1",
        *check,
    ]


def every_command() -> list[list[str]]:
    return [
        cmd.compose("p", "/f.yaml", "ps"),
        cmd.compose_config_check("p", "/f.yaml"),
        cmd.compose_up("p", "/f.yaml", ["gateway-a1"]),
        cmd.compose_build("p", "/f.yaml", ["gateway-a1", "proxy"]),
        cmd.project_containers("p"),
        cmd.published_containers(),
        cmd.inspect(["abc"]),
        cmd.image_ids(["p/gateway:1"]),
        cmd.remove_image("p/gateway:1"),
        cmd.stop_and_remove(["abc"]),
        cmd.logs("abc"),
        cmd.make_env_dir("/d"),
        cmd.make_env_dir("/d", ["true"]),
        cmd.unpack_release("/t.tgz", "/d/r"),
        cmd.remove_leftovers("/d/releases", [".x"]),
        cmd.point_current("/d", "R"),
        cmd.proxy_workers("c"),
        cmd.stage_proxy_config("/d/r/proxy/haproxy-a.cfg", "/d/proxy", "# h"),
        cmd.check_proxy_config("/d/proxy", "p/proxy:1", "c"),
        cmd.check_proxy_config("/d/proxy", "p/proxy:1", None),
        cmd.reload_proxy("/d/proxy", "c"),
        cmd.restore_proxy_config("/d/proxy", "c"),
        cmd.promote_proxy_config("/d/proxy"),
        cmd.probe("/d", "p", ("p/gateway:1", "p/proxy:1"), True, "/claims.json"),
        cmd.cat_files(["/a", "/b"]),
        cmd.mark_failed("/d/r"),
        cmd.remove_release("/d", "R"),
        cmd.replace_if_changed("/a", "/b"),
        cmd.append_line("/h", "/l.json"),
        cmd.resolve_root("/d", True),
        cmd.resolve_root("/d", False),
        cmd.lock("/l", None),
        cmd.lock("/l", 5),
        cmd.deploy_lock("/d", "/d/deploy.lock", None, "/d/lock.json", "{}"),
        cmd.serialised("/l", ["true"]),
    ]


def test_no_command_takes_anything_down_prunes_or_removes_orphans() -> None:
    for argv in every_command():
        words = " ".join(argv).split()
        assert not {
            "down",
            "prune",
            "--remove-orphans",
            "--force-recreate",
            "system",
            "volume",
            "network",
        } & set(words), argv


def test_every_compose_command_runs_with_project_file_and_scrubbed_variables() -> None:
    composes = [argv for argv in every_command() if "compose" in argv and argv[0] == "env"]
    assert len(composes) == 4
    for argv in composes:
        assert argv[: len(SCRUB) + 6] == [
            *SCRUB,
            "docker",
            "compose",
            "-p",
            "p",
            "-f",
            "/f.yaml",
        ], argv


def test_the_scrub_prefix_really_unsets_the_compose_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in cmd.SCRUBBED:
        monkeypatch.setenv(name, "set-by-the-operator")
    monkeypatch.setenv("SY_UNIT_KEPT", "kept")
    monkeypatch.delenv("COMPOSE_IGNORE_ORPHANS", raising=False)
    argv = cmd.compose("p", "/f.yaml")
    prefix = argv[: argv.index("docker")]
    seen = dict(
        line.split("=", 1)
        for line in LocalHost().run([*prefix, "env"]).stdout.splitlines()
        if "=" in line
    )
    assert [name for name in cmd.SCRUBBED if name in seen] == []
    assert seen["SY_UNIT_KEPT"] == "kept"
    # The other slot's gateways are orphans to compose: it is told to leave them be, quietly.
    assert seen["COMPOSE_IGNORE_ORPHANS"] == "1"


def test_an_unused_image_is_untagged_by_its_exact_name_never_forced() -> None:
    assert cmd.remove_image("p/gateway:abc") == ["docker", "image", "rm", "p/gateway:abc"]


def test_lock_commands() -> None:
    assert cmd.lock("/d/deploy.lock", None) == [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        "75",
        "/d/deploy.lock",
        "sh",
        "-c",
        "echo locked; exec cat >/dev/null",
    ]
    assert cmd.lock("/d/deploy.lock", 2.5)[1:3] == ["--timeout", "2"]
    assert cmd.lock("/d/deploy.lock", 0.2)[1:3] == ["--timeout", "1"]
    assert cmd.serialised("/d/compose.lock", ["docker", "ps"]) == [
        "flock",
        "--timeout",
        "900",
        "/d/compose.lock",
        "docker",
        "ps",
    ]
