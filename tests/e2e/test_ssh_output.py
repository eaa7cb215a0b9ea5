"""A command's output over SSH arrives whole, whatever its size (the real test sshd on 127.0.0.1).

sshd sends a command's exit status when the process exits, which can be before all of its
output has crossed the connection; a reader that stops at the exit status loses the tail
(seen: outputs cut at exactly 32,768 bytes). The command here writes and exits at once, which
is the case that loses data, many times per size, on stdout and stderr together.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator

import pytest

from deployer.hosts import SSHHost
from tests.deploy_env import Sshd, tmpdir

# Writes a known pattern of N bytes to a file on the host (once per size).
WRITER = (
    "import sys, hashlib\n"
    "n, path = int(sys.argv[1]), sys.argv[2]\n"
    "block = b''.join(hashlib.sha256(str(i).encode()).hexdigest().encode() for i in range(2048))\n"
    "open(path, 'wb').write((block * (n // len(block) + 1))[:n])\n"
)
# stderr first, then stdout, and exit the moment the last byte is in the pipe: `cat` is the
# writer that loses data (a Python writer exits slowly enough to hide the race).
CAT = 'cat -- "$2" >&2; exec cat -- "$1"'


def expected(n: int) -> bytes:
    block = b"".join(hashlib.sha256(str(i).encode()).hexdigest().encode() for i in range(2048))
    return (block * (n // len(block) + 1))[:n]


def files(host: SSHHost, size: int) -> tuple[str, str]:
    out, err = f"/tmp/sytest-ssh-out-{size}", f"/tmp/sytest-ssh-err-{size}"
    host.run(["python3", "-c", WRITER, str(size), out])
    host.run(["python3", "-c", WRITER, str(size // 3), err])
    return out, err


@pytest.fixture(scope="module")
def host() -> Iterator[SSHHost]:
    d = tmpdir("sytest-ssh-")
    sshd = Sshd(d / "sshd").start()
    try:
        h = SSHHost(
            "127.0.0.1",
            user=sshd.user,
            port=sshd.port,
            identity=str(sshd.identity),
            known_hosts=str(d / "known_hosts"),
        )
        try:
            yield h
        finally:
            h.close()
    finally:
        sshd.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize(
    ("size", "times"), [(40_000, 120), (100_000, 60), (1_000_000, 20), (20_000_000, 3)]
)
def test_output_arrives_whole(host: SSHHost, size: int, times: int) -> None:
    want, want_err = expected(size), expected(size // 3)
    out, err = files(host, size)
    cut = []
    for i in range(times):
        res = host.run(["sh", "-c", CAT, "sh", out, err])
        if res.stdout.encode() != want or res.stderr.encode() != want_err:
            cut.append((i, len(res.stdout), len(res.stderr)))
    assert not cut, (
        f"{len(cut)} of {times} runs lost output (run, stdout bytes, stderr bytes): {cut[:5]}; "
        f"want {size}"
    )


def test_output_of_a_command_that_fails_arrives_whole_too(host: SSHHost) -> None:
    out, err = files(host, 60_000)
    res = host.run(
        ["sh", "-c", 'cat -- "$2" >&2; cat -- "$1"; exit 7', "sh", out, err], check=False
    )
    assert res.rc == 7
    assert res.stdout.encode() == expected(60_000)
    assert res.stderr.encode() == expected(20_000)
