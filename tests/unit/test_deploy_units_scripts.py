"""Deploy unit tests: commands: the sh scripts, run here against hostile directory names.

Shared pieces (a small gateway.yaml, hosts built by hand, the stand-in `docker`) are in
tests/deploy_units_support.py; docs/deploy.md says what is tested here.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from deployer import commands as cmd
from deployer.bundle import DeployError
from deployer.hosts import CommandFailed, LocalHost, Result
from deployer.state import (
    ProxyHeader,
    read_files,
    resolve_root,
)
from tests import deploy_units_support as support
from tests.deploy_units_support import (
    NEW,
    OLD,
    ROOT,
    WEIRD,
)

# pytest finds fixtures among a module's names: the shared ones this file uses.
no_secret_sources = support.no_secret_sources


@pytest.fixture
def weird(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory whose name a shell would execute if it were ever spliced into a script.

    The scripts run with tmp_path as their working directory, so an injection would create
    tmp_path/pwned.
    """
    monkeypatch.chdir(tmp_path)
    yield tmp_path / WEIRD
    assert not (tmp_path / "pwned").exists(), "a path was interpreted by the shell"


def sh(argv: Sequence[str], stdin: bytes | None = None) -> Result:
    return LocalHost().run(argv, stdin=stdin)


def test_make_env_dir_is_private_and_has_releases(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    assert stat.S_IMODE(weird.stat().st_mode) == 0o700
    assert (weird / "releases").is_dir()
    sh(cmd.make_env_dir(str(weird)))  # again: no error, same result
    assert stat.S_IMODE(weird.stat().st_mode) == 0o700


def tarball(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_unpack_release_replaces_the_directory_whole(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    final = weird / "releases" / NEW
    final.mkdir()
    (final / "stale.txt").write_text("from an interrupted attempt")
    packed = weird / "releases" / f".{NEW}.tar.gz"
    packed.write_bytes(tarball({"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}))

    sh(cmd.unpack_release(str(packed), str(final)))

    assert tree(final) == {"compose.yaml": b"name: p\n", "runtime/app.py": b"print(1)\n"}
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [
        NEW
    ]  # no tarball, no .tmp left


def test_unpack_release_of_a_broken_tarball_leaves_the_release_as_it_was(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    final = weird / "releases" / NEW
    final.mkdir()
    (final / "compose.yaml").write_text("name: good\n")
    packed = weird / "releases" / f".{NEW}.tar.gz"
    packed.write_bytes(b"this is not gzip")

    with pytest.raises(CommandFailed):
        sh(cmd.unpack_release(str(packed), str(final)))

    assert tree(final) == {"compose.yaml": b"name: good\n"}


def test_point_current_switches_the_symlink_atomically(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    for rid in (OLD, NEW):
        (weird / "releases" / rid).mkdir()
    assert not (weird / "current").exists()

    sh(cmd.point_current(str(weird), OLD))
    assert os.readlink(weird / "current") == f"releases/{OLD}"
    sh(cmd.point_current(str(weird), NEW))
    assert os.readlink(weird / "current") == f"releases/{NEW}"
    assert (weird / "current").resolve() == (weird / "releases" / NEW).resolve()
    assert sorted(p.name for p in weird.iterdir()) == ["current", "releases"]  # no .current.tmp


def test_mark_failed_leaves_a_marker_that_says_why(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    (weird / "releases" / NEW).mkdir()
    sh(cmd.mark_failed(str(weird / "releases" / NEW)))
    assert (
        weird / "releases" / NEW / "FAILED"
    ).read_text() == "never went live; see history.jsonl\n"
    sh(
        cmd.mark_failed(str(weird / "releases" / OLD))
    )  # never uploaded: nothing to mark, nothing made
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [NEW]


def test_cat_files_reads_several_files_in_one_command(weird: Path) -> None:
    weird.mkdir()
    (weird / "a.json").write_text('{"a": 1}\n')
    (weird / "b.yaml").write_text("no newline at the end")
    (weird / "empty").write_text("")
    paths = [
        str(weird / "a.json"),
        str(weird / "missing"),
        str(weird / "b.yaml"),
        str(weird / "empty"),
    ]
    assert read_files(LocalHost(), paths) == {
        paths[0]: '{"a": 1}\n',
        paths[1]: None,
        paths[2]: "no newline at the end",
        paths[3]: "",
    }
    assert read_files(LocalHost(), []) == {}


def test_remove_release_removes_exactly_that_release(weird: Path) -> None:
    sh(cmd.make_env_dir(str(weird)))
    for rid in (OLD, NEW):
        (weird / "releases" / rid).mkdir()
    sh(cmd.remove_release(str(weird), OLD))
    assert sorted(p.name for p in (weird / "releases").iterdir()) == [NEW]


def test_replace_if_changed_says_same_or_changed(weird: Path) -> None:
    weird.mkdir()
    target, new = weird / "secrets.env", weird / "secrets.env.new"

    new.write_text("A='1'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"  # no target yet
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='1'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "same\n"
    assert target.read_text() == "A='1'\n" and not new.exists()

    new.write_text("A='2'\n")
    assert sh(cmd.replace_if_changed(str(new), str(target))).stdout == "changed\n"
    assert target.read_text() == "A='2'\n" and not new.exists()
    # The one it replaced is kept, with its mode, and put back by restore_previous.
    prev = weird / "secrets.env.prev"
    assert prev.read_text() == "A='1'\n"
    sh(cmd.restore_previous(str(target)))
    assert target.read_text() == "A='1'\n" and not prev.exists()
    sh(cmd.restore_previous(str(target)))  # nothing to put back: a no-op
    assert target.read_text() == "A='1'\n"


def test_append_line(weird: Path) -> None:
    weird.mkdir()
    history = weird / "history.jsonl"
    sh(cmd.append_line(str(history)), stdin=b'{"n": 1}\n')
    sh(cmd.append_line(str(history)), stdin=b'{"n": "$(touch pwned)"}\n')
    assert history.read_text() == '{"n": 1}\n{"n": "$(touch pwned)"}\n'


def test_resolve_root_creates_or_reports_absent(weird: Path) -> None:
    assert sh(cmd.resolve_root(str(weird), False)).stdout == "absent\n"
    assert not weird.exists()
    assert resolve_root(LocalHost(), str(weird), create=False, env="staging") is None

    assert sh(cmd.resolve_root(str(weird), True)).stdout == os.path.realpath(weird) + "\n"
    assert weird.is_dir()
    assert resolve_root(LocalHost(), str(weird), create=False, env="staging") == os.path.realpath(
        weird
    )


def test_a_deploy_dir_that_is_a_file_is_refused_naming_the_setting(weird: Path) -> None:
    weird.write_text("not a directory")
    assert sh(cmd.resolve_root(str(weird), True)).stdout == "notdir\n"
    with pytest.raises(DeployError) as err:
        resolve_root(LocalHost(), str(weird), create=True, env="staging")
    assert str(err.value) == (
        f"environments.staging.deploy_dir: {weird} on localhost is a file, not a directory; "
        "pick another deploy_dir, or move that file away"
    )
    assert weird.read_text() == "not a directory"


def test_a_home_relative_deploy_dir_on_this_machine_is_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "repo"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    assert resolve_root(
        LocalHost(), "~/switchyard", create=True, env="staging"
    ) == os.path.realpath(home / "switchyard")
    assert list(elsewhere.iterdir()) == []


# -- the lock ----------------------------------------------------------------------------


@pytest.fixture
def lock_path(weird: Path) -> Path:
    weird.mkdir()
    return weird / "deploy.lock"


def test_a_second_holder_is_refused_while_the_first_holds_the_lock(lock_path: Path) -> None:
    host = LocalHost()
    first, out = host.hold(cmd.lock(str(lock_path), None), "locked", 5)
    second = None
    try:
        assert first is not None and out == ""
        assert host.hold(cmd.lock(str(lock_path), None), "locked", 5) == (None, "")
        first.release()
        first = None
        second, out = host.hold(cmd.lock(str(lock_path), None), "locked", 5)
        assert second is not None and out == ""
    finally:
        for held in (first, second):
            if held is not None:
                held.release()


HOLDER = """
import sys
from deployer import commands
from deployer.hosts import LocalHost
held, _ = LocalHost().hold(commands.lock(sys.argv[1], None), "locked", 5)
print("held" if held else "refused", flush=True)
sys.stdin.read()
"""


def test_the_lock_dies_with_its_holder(lock_path: Path) -> None:
    """A deploy killed outright (kill -9, a lost connection) leaves no stale lock behind."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    held = None
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert LocalHost().hold(cmd.lock(str(lock_path), None), "locked", 5) == (None, "")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        held, out = LocalHost().hold(cmd.lock(str(lock_path), 5), "locked", 10)  # waits at most 5 s
        assert held is not None and out == ""
    finally:
        if held is not None:
            held.release()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# -- scripts that call docker: run here with a stand-in `docker` that logs its calls ----

STAND_IN_DOCKER = r"""#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["SY_FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
if args[:1] == ["exec"]:
    canned = os.environ.get("SY_FAKE_DOCKER_EXEC_STDOUT")
    if canned is not None:
        sys.stdout.write(canned)
        sys.exit(0)
    sys.exit(subprocess.run(args[2:]).returncode)   # "in the container": here
sys.exit(int(os.environ.get("SY_FAKE_DOCKER_EXIT_" + args[0].upper(), "0")))
"""
# A container reference that would run something if a script spliced it into its text.
HOSTILE_ID = "c0ffee $(touch pwned) `touch pwned`;touch pwned"


class StandInDocker:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        directory.mkdir()
        self.log = directory / "calls.jsonl"
        (directory / "docker").write_text(STAND_IN_DOCKER.replace("{python}", sys.executable))
        (directory / "docker").chmod(0o755)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("SY_FAKE_DOCKER_LOG", str(self.log))
        monkeypatch.delenv("SY_FAKE_DOCKER_EXEC_STDOUT", raising=False)

    def exec_prints(self, text: str) -> None:
        self.monkeypatch.setenv("SY_FAKE_DOCKER_EXEC_STDOUT", text)

    def fails(self, subcommand: str, code: int = 1) -> None:
        self.monkeypatch.setenv(f"SY_FAKE_DOCKER_EXIT_{subcommand.upper()}", str(code))

    def calls(self) -> list[list[str]]:
        return (
            [json.loads(line) for line in self.log.read_text().splitlines()]
            if self.log.exists()
            else []
        )


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandInDocker:
    return StandInDocker(tmp_path / "stand-in-bin", monkeypatch)


def test_stop_and_remove_stops_then_removes_exactly_the_given_containers(
    weird: Path, docker: StandInDocker
) -> None:
    sh(cmd.stop_and_remove(["a" * 64, HOSTILE_ID]))
    assert docker.calls() == [
        ["stop", "--", "a" * 64, HOSTILE_ID],
        [
            "rm",
            "--force",
            "--volumes",
            "--",
            "a" * 64,
            HOSTILE_ID,
        ],  # anonymous volumes only; `data` is named
    ]


def test_stop_and_remove_still_removes_when_the_stop_fails(
    weird: Path, docker: StandInDocker
) -> None:
    docker.fails("stop")  # say, one of them had already exited and been removed
    sh(cmd.stop_and_remove(["b" * 64]))
    assert [c[0] for c in docker.calls()] == ["stop", "rm"]
    docker.fails("rm")
    with pytest.raises(CommandFailed):  # but a removal that fails is reported
        sh(cmd.stop_and_remove(["b" * 64]))


def proxy_files(proxy_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(proxy_dir.iterdir())}


@pytest.fixture
def release_cfg(weird: Path) -> Path:
    """A release's proxy/haproxy-b.cfg, under a directory name made to break quoting."""
    source = weird / "releases" / NEW / "proxy" / "haproxy-b.cfg"
    source.parent.mkdir(parents=True)
    source.write_text('global\n  maxconn 4096\n# "quoted" $(touch pwned)\n')
    return source


def test_stage_proxy_config_writes_the_release_config_headed_by_what_goes_live(
    weird: Path, release_cfg: Path
) -> None:
    proxy_dir = weird / "proxy"
    live = ProxyHeader(NEW, "b", "sha256:" + "ab" * 32)
    old_umask = os.umask(0o077)  # the host's umask does not decide whether HAProxy can read it
    try:
        sh(cmd.stage_proxy_config(str(release_cfg), str(proxy_dir), live.line()))
    finally:
        os.umask(old_umask)
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg.next": live.line() + "\n" + release_cfg.read_text()
    }
    assert stat.S_IMODE(proxy_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((proxy_dir / "haproxy.cfg.next").stat().st_mode) == 0o644
    # What the probe reads back (the first line) is what was staged.
    first = (proxy_dir / "haproxy.cfg.next").read_text().splitlines()[0]
    assert ProxyHeader.parse(first) == live


def test_stage_proxy_config_leaves_the_live_config_alone_and_opens_a_private_directory(
    weird: Path, release_cfg: Path
) -> None:
    proxy_dir = weird / "proxy"
    proxy_dir.mkdir(mode=0o700)
    (proxy_dir / "haproxy.cfg").write_text("# live\n")
    (proxy_dir / "haproxy.cfg.next").write_text("# staged by an earlier attempt\n")
    sh(cmd.stage_proxy_config(str(release_cfg), str(proxy_dir), "# h"))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# live\n",
        "haproxy.cfg.next": "# h\n" + release_cfg.read_text(),
    }
    assert stat.S_IMODE(proxy_dir.stat().st_mode) == 0o755


def test_stage_proxy_config_of_a_missing_file_fails_and_stages_nothing(weird: Path) -> None:
    proxy_dir = weird / "proxy"
    with pytest.raises(CommandFailed):
        sh(
            cmd.stage_proxy_config(
                str(weird / "releases" / NEW / "proxy" / "haproxy-a.cfg"), str(proxy_dir), "# h"
            )
        )
    assert "haproxy.cfg.next" not in proxy_files(proxy_dir)


@pytest.fixture
def proxy_dir(weird: Path) -> Path:
    """<env dir>/proxy with a live config and a staged one."""
    d = weird / "proxy"
    d.mkdir(parents=True)
    (d / "haproxy.cfg").write_text("# live: slot a\n")
    (d / "haproxy.cfg.next").write_text("# staged: slot b\n")
    return d


def test_reload_proxy_lists_the_workers_then_makes_the_staged_config_live_and_signals_the_master(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("101\n102\n")
    out = sh(cmd.reload_proxy(str(proxy_dir), HOSTILE_ID)).stdout
    # The workers from before the reload: the ones the drain waits for (as CutOver reads them).
    assert out.splitlines() == ["workers 101 102 "]
    assert out.split()[1:] == ["101", "102"]
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# staged: slot b\n",
        "haproxy.cfg.prev": "# live: slot a\n",
    }
    assert docker.calls() == [
        cmd.proxy_workers(HOSTILE_ID)[1:],  # listed before the signal, not after
        ["kill", "--signal", "USR2", HOSTILE_ID],  # a graceful reload, never a plain kill
    ]


def test_reload_proxy_without_a_staged_config_fails_without_signalling(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    (proxy_dir / "haproxy.cfg.next").unlink()
    docker.exec_prints("101\n")
    with pytest.raises(CommandFailed):
        sh(cmd.reload_proxy(str(proxy_dir), "c0ffee"))
    assert (proxy_dir / "haproxy.cfg").read_text() == "# live: slot a\n"
    assert [c[0] for c in docker.calls()] == ["exec"]


def test_reload_proxy_fails_when_the_signal_cannot_be_sent(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("")
    docker.fails("kill")  # the proxy is gone
    with pytest.raises(CommandFailed):
        sh(cmd.reload_proxy(str(proxy_dir), "c0ffee"))


def test_restore_proxy_config_puts_the_previous_config_back_and_reloads(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    docker.exec_prints("")
    sh(cmd.reload_proxy(str(proxy_dir), HOSTILE_ID))
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert docker.calls()[-1] == ["kill", "--signal", "USR2", HOSTILE_ID]
    assert len(docker.calls()) == 3

    # Again: nothing to put back, nothing is signalled.
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert len(docker.calls()) == 3


def test_restore_proxy_config_only_undoes_this_deploys_promote(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    mine, earlier = (
        ProxyHeader(NEW, "b", "sha256:2").line(),
        ProxyHeader(OLD, "a", "sha256:1").line(),
    )
    (proxy_dir / "haproxy.cfg.next").unlink()
    # Interrupted before its promote: the live config is an earlier deploy's, .prev older still.
    (proxy_dir / "haproxy.cfg").write_text(f"{earlier}\n# live: slot a\n")
    (proxy_dir / "haproxy.cfg.prev").write_text("# two deploys ago\n")
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID, mine))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": f"{earlier}\n# live: slot a\n",
        "haproxy.cfg.prev": "# two deploys ago\n",
    }
    assert docker.calls() == []

    # Its promote happened: the live config carries its header, and is undone.
    (proxy_dir / "haproxy.cfg").write_text(f"{mine}\n# staged: slot b\n")
    (proxy_dir / "haproxy.cfg.prev").write_text(f"{earlier}\n# live: slot a\n")
    sh(cmd.restore_proxy_config(str(proxy_dir), HOSTILE_ID, mine))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": f"{earlier}\n# live: slot a\n"}
    assert docker.calls() == [["kill", "--signal", "USR2", HOSTILE_ID]]


def test_restore_proxy_config_without_a_proxy_only_puts_the_file_back(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    sh(cmd.promote_proxy_config(str(proxy_dir)))
    sh(cmd.restore_proxy_config(str(proxy_dir), None))
    assert proxy_files(proxy_dir) == {"haproxy.cfg": "# live: slot a\n"}
    assert docker.calls() == []


def test_promote_proxy_config_makes_the_staged_config_live_keeping_the_old_one(
    proxy_dir: Path, docker: StandInDocker
) -> None:
    sh(cmd.promote_proxy_config(str(proxy_dir)))
    assert proxy_files(proxy_dir) == {
        "haproxy.cfg": "# staged: slot b\n",
        "haproxy.cfg.prev": "# live: slot a\n",
    }
    assert docker.calls() == []  # the proxy is (re)created afterwards; nothing to signal


def test_promote_proxy_config_on_a_first_deploy_keeps_no_previous_config(weird: Path) -> None:
    d = weird / "proxy"
    d.mkdir(parents=True)
    (d / "haproxy.cfg.next").write_text("# staged: slot a\n")
    sh(cmd.promote_proxy_config(str(d)))
    assert proxy_files(d) == {"haproxy.cfg": "# staged: slot a\n"}
    sh(cmd.restore_proxy_config(str(d), None))  # nothing to put back
    assert proxy_files(d) == {"haproxy.cfg": "# staged: slot a\n"}


def processes() -> dict[str, tuple[str, str]]:
    """pid -> (name as /proc shows it, parent pid), for every process this machine shows."""
    found = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            pid, name, _, ppid = stat_file.read_text().split()[:4]
            found[pid] = (name, ppid)
    return found


def test_proxy_workers_are_the_haproxy_processes_whose_parent_is_haproxy(
    weird: Path, docker: StandInDocker
) -> None:
    """The listing script, run for real over /proc: a `haproxy` master (here a shell named
    haproxy) and its `haproxy` worker; only the worker is listed. (HAProxy processes of other
    containers on this machine may be listed too: only ours are asserted.)"""
    weird.mkdir()
    haproxy = weird / "haproxy"
    haproxy.symlink_to(shutil.which("sh") or "/bin/sh")  # a process's name is its executable's
    master = subprocess.Popen(
        [str(haproxy), "-c", '"$0" -c "sleep 60; :" & wait', str(haproxy)], start_new_session=True
    )
    try:
        worker = None
        deadline = time.monotonic() + 10
        while worker is None and time.monotonic() < deadline:  # until the child has exec'd haproxy
            worker = next(
                (
                    pid
                    for pid, (name, ppid) in processes().items()
                    if ppid == str(master.pid) and name == "(haproxy)"
                ),
                None,
            )
            time.sleep(0.05)
        assert worker is not None, "the stand-in worker did not start"
        listed = sh(cmd.proxy_workers("c0ffee")).stdout.split()
        assert worker in listed and str(master.pid) not in listed, (listed, master.pid, worker)
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()
