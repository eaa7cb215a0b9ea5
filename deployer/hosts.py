"""One interface for the machine a deploy acts on: a host over SSH (Fabric) or this machine.

Commands are argument lists; over SSH they are joined with `shlex.join`, never formatted
into shell strings. Secret values never travel on a command line: they are written as files
(`write`, mode 0600) or passed on stdin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from deployer import interrupts


class HostError(Exception):
    """The host could not be reached or a command on it could not be run (not retried)."""


class ConnectionLost(HostError):
    """The SSH connection broke while a step was running."""


class CommandFailed(HostError):
    """A command exited non-zero."""

    def __init__(self, argv: Sequence[str], result: Result) -> None:
        self.argv = list(argv)
        self.result = result
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-8:]
        super().__init__(
            f"`{shlex.join(argv)}` exited {result.rc}"
            + (": " + "\n  ".join(detail) if detail else "")
        )


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Held(Protocol):
    """A long-running command whose stdin we hold open (a lock holder). `release()` ends it."""

    def release(self) -> None: ...


class Host(Protocol):
    """What a deploy needs from a machine."""

    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run `argv`; raise CommandFailed when `check` and it exits non-zero."""

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write atomically (temporary file with `mode` from the start, then rename)."""

    def hold(self, argv: Sequence[str], ready: str, timeout: float) -> tuple[Held | None, str]:
        """Start `argv`; wait for a stdout line equal to `ready`. (holder, what it printed before
        `ready`), or (None, its output) if it exited first."""

    def http_get(
        self, port: int, path: str, timeout: float = 3.0, addr: str = "127.0.0.1"
    ) -> tuple[int, bytes] | None:
        """(status, body) of GET http://<addr>:<port><path> as seen ON the host (a loopback port,
        or a container's address on its network); None if nothing answers."""

    def close(self) -> None: ...


def _response(data: bytes) -> tuple[int, bytes] | None:
    head, _, body = data.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return int(first[1]), body
    return None


def _request(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: switchyard-deploy\r\n\r\n".encode()
    )


# ---------------------------------------------------------------------------------------
# this machine


class _LocalHeld:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def release(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LocalHost:
    """`target: local`: the same steps, run here with subprocess and plain file I/O."""

    name = "localhost"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin if stdin is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except FileNotFoundError as exc:
            raise HostError(f"{argv[0]}: not installed on this machine") from exc
        except subprocess.TimeoutExpired as exc:
            raise HostError(f"`{shlex.join(argv)}` took longer than {timeout:.0f} s") from exc
        result = Result(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and not result.ok:
            raise CommandFailed(argv, result)
        return result

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise HostError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        target = Path(path)
        try:
            self._write(target, data, mode)
        except OSError as exc:
            raise HostError(f"cannot write {path}: {exc.strerror or exc}") from exc

    @staticmethod
    def _write(target: Path, data: bytes, mode: int) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def hold(self, argv: Sequence[str], ready: str, timeout: float) -> tuple[Held | None, str]:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        lines: list[str] = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == ready:
                return _LocalHeld(proc), "\n".join(lines)
            lines.append(line)
        proc.wait()
        return None, "\n".join(lines)

    def http_get(
        self, port: int, path: str, timeout: float = 3.0, addr: str = "127.0.0.1"
    ) -> tuple[int, bytes] | None:
        try:
            with socket.create_connection((addr, port), timeout=timeout) as sock:
                sock.sendall(_request(path))
                return _response(_recv_all(sock.recv))
        except OSError:
            return None

    def close(self) -> None:
        pass


def _recv_all(recv: Any, limit: int = 65536) -> bytes:
    """Read until the server closes (HTTP/1.0) or `limit` bytes."""
    buf = b""
    while len(buf) < limit:
        chunk = recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------
# a host over SSH


class _SSHHeld:
    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def release(self) -> None:
        try:
            self.channel.shutdown_write()
            deadline = time.monotonic() + 5
            while not self.channel.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.01)
        except Exception:
            pass
        finally:
            self.channel.close()


DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


class _AcceptNew:
    """OpenSSH's `StrictHostKeyChecking accept-new`: trust a host seen for the first time and
    remember its key in the known_hosts file; a host whose key CHANGED is refused by paramiko
    before this is asked."""

    def __init__(self, path: Path, say: Any) -> None:
        self.path = path
        self.say = say

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        self.say(
            f"   first connection to {hostname}: trusted its {key.get_name()} key "
            f"{key.fingerprint} and added it to {self.path}"
        )


class SSHHost:
    """`target: ssh`: a Fabric connection; exec channels for commands and files.

    Host keys are checked against `known_hosts` (default ~/.ssh/known_hosts): a changed key is
    always refused; an unknown host is trusted and remembered (accept-new), or refused when
    `strict_host_keys`.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None,
        port: int,
        identity: str | None,
        connect_timeout: float = 10.0,
        known_hosts: str | None = None,
        strict_host_keys: bool = False,
        say: Any = None,
    ) -> None:
        import paramiko
        from fabric import Connection

        # paramiko logs a failed handshake with a traceback (to stderr, through logging's
        # last-resort handler); the deploy reports it in one line instead.
        logging.getLogger("paramiko").addHandler(logging.NullHandler())

        connect_kwargs: dict[str, Any] = {
            "banner_timeout": connect_timeout,
            "auth_timeout": connect_timeout,
        }
        if identity:
            connect_kwargs["key_filename"] = [os.path.expanduser(identity)]
        self.conn = Connection(
            host,
            user=user,
            port=port,
            connect_timeout=connect_timeout,
            connect_kwargs=connect_kwargs,
        )
        self.name = f"{self.conn.user}@{host}:{port}"
        path = Path(os.path.expanduser(known_hosts or DEFAULT_KNOWN_HOSTS))
        client = self.conn.client
        try:
            if path.is_file():
                client.load_host_keys(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(f"cannot read the known hosts file {path}: {_reason(exc)}") from exc
        # Fabric's default (AutoAddPolicy over an empty key list) would trust any key, even a
        # changed one.
        client.set_missing_host_key_policy(
            paramiko.RejectPolicy()
            if strict_host_keys
            else _AcceptNew(path, say or (lambda _text: None))
        )
        try:
            self.conn.open()
            # Many small request/response exchanges: without this, Nagle + delayed ACKs add
            # ~40 ms to opening every channel.
            self.conn.client.get_transport().sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        except paramiko.BadHostKeyException as exc:
            raise HostError(
                f"cannot connect to {self.name}: its host key CHANGED (now {exc.key.get_name()} "
                f"{exc.key.fingerprint}, "
                f"{path} has {exc.expected_key.fingerprint}). Refusing: this is what a "
                "man-in-the-middle looks like. "
                "If the host was really re-installed, check the new key and remove the old line "
                f"from {path}"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise HostError(
                f"cannot connect to {self.name}: {_login_refused(identity, exc)}"
            ) from exc
        except Exception as exc:
            text = _reason(exc)
            transport = client.get_transport()
            if (
                "not found in known_hosts" in text
            ):  # (before the key's turn: the host was refused, not us)
                text += (
                    f" (--strict-host-keys: check the host's fingerprint, then add it to {path}, "
                    "e.g. "
                    f"`ssh-keyscan -p {port} {host} >> {path}`)"
                )
            elif (
                identity
                and isinstance(exc, FileNotFoundError)
                and exc.filename == os.path.expanduser(identity)
            ):
                text = (
                    f"the SSH key {identity} does not exist; pass an existing one with {_KEY_HINT}"
                )
            elif (
                identity
                and isinstance(exc, paramiko.SSHException)
                and transport is not None
                and transport.is_active()
                and not transport.is_authenticated()
                and "No authentication methods available" not in text
            ):
                # paramiko tries the key file as every key type in turn and re-raises the last
                # failure: a refused RSA key ends as "Invalid key", a .pub file as "not a valid …
                # file".
                text = _login_refused(identity, exc)
            elif "protocol banner" in text or "Incompatible version" in text:
                text = f"port {port} does not speak SSH ({text}); check the environment's ssh_port"
            elif "No authentication methods available" in text:
                text = (
                    "no SSH key to offer; pass one with --identity FILE or "
                    "$SWITCHYARD_SSH_IDENTITY "
                    "(or load it into ssh-agent)"
                )
            raise HostError(f"cannot connect to {self.name}: {text}") from exc

    def _transport(self) -> Any:
        transport = self.conn.client.get_transport() if self.conn.client else None
        if transport is None or not transport.is_active():
            raise ConnectionLost(f"the SSH connection to {self.name} was lost")
        return transport

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        # An exec channel on Fabric's connection: binary stdin with a real EOF, and stdout and
        # stderr drained together so a chatty build cannot stall the channel's window. The
        # exit status can arrive while output is still in flight (sshd sends it when the
        # process exits, not when its output has been delivered), so reading ends at the
        # channel's EOF, never at the exit status.
        command = shlex.join(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            channel = self._transport().open_session(timeout=30)
            try:
                channel.exec_command(command)
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
                out, err = _drain(
                    channel,
                    deadline,
                    lambda: self._lost(command),
                    lambda: self._slow(command, timeout),
                )
                rc = channel.recv_exit_status()
            finally:
                channel.close()
        except HostError:
            raise
        except Exception as exc:
            raise ConnectionLost(
                f"the SSH connection to {self.name} was lost while running `{command}`: "
                f"{_reason(exc)}"
            ) from exc
        if rc < 0:
            raise ConnectionLost(
                f"the SSH connection to {self.name} was lost while running `{command}`"
            )
        result = Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            raise CommandFailed(argv, result)
        return result

    def _lost(self, command: str) -> HostError:
        return ConnectionLost(
            f"the SSH connection to {self.name} was lost while running `{command}`"
        )

    def _slow(self, command: str, timeout: float | None) -> HostError:
        return HostError(f"`{command}` took longer than {timeout or 0:.0f} s on {self.name}")

    def read(self, path: str) -> bytes | None:
        res = self.run(
            [
                "sh",
                "-c",
                'if [ -f "$1" ]; then cat -- "$1"; else echo absent >&2; exit 3; fi',
                "sh",
                path,
            ],
            check=False,
        )
        if res.rc == 3 and res.stderr.strip() == "absent":
            return None
        if not res.ok:
            raise CommandFailed(["cat", path], res)
        return res.stdout.encode("utf-8", errors="surrogateescape")

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        # The bytes go over stdin into a file created with its final mode (umask 077, then
        # chmod): no SFTP subsystem needed, and no value ever on a command line.
        script = (
            'set -e; umask 077; tmp="$1.tmp.$$"; cat > "$tmp"; chmod "$2" "$tmp"; mv -f -- '
            '"$tmp" "$1"'
        )
        self.run(["sh", "-c", script, "sh", path, format(mode, "o")], stdin=data)

    def hold(self, argv: Sequence[str], ready: str, timeout: float) -> tuple[Held | None, str]:
        try:
            channel = self._transport().open_session()
            channel.exec_command(shlex.join(argv))
            f = channel.makefile("rb")
            lines: list[str] = []
            for raw in f:
                line = raw.decode(errors="replace").rstrip("\n")
                if line == ready:
                    return _SSHHeld(channel), "\n".join(lines)
                lines.append(line)
            lines += channel.makefile_stderr("rb").read().decode(errors="replace").splitlines()
            channel.close()
            return None, "\n".join(lines)
        except HostError:
            raise
        except Exception as exc:
            raise ConnectionLost(
                f"the SSH connection to {self.name} was lost: {_reason(exc)}"
            ) from exc

    def http_get(
        self, port: int, path: str, timeout: float = 3.0, addr: str = "127.0.0.1"
    ) -> tuple[int, bytes] | None:
        try:
            channel = self._transport().open_channel(
                "direct-tcpip", (addr, port), ("127.0.0.1", 0), timeout=timeout
            )
        except HostError:
            raise
        except Exception:
            return None
        try:
            channel.settimeout(timeout)
            channel.sendall(_request(path))
            return _response(_recv_all(channel.recv))
        except Exception:
            return None
        finally:
            channel.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _drain(
    channel: Any,
    deadline: float | None,
    lost: Callable[[], HostError],
    slow: Callable[[], HostError],
) -> tuple[bytes, bytes]:
    """Everything an exec channel sends on stdout and stderr, up to its EOF and exit status."""
    out, err = bytearray(), bytearray()
    while True:
        busy = False
        if channel.recv_ready():
            out += channel.recv(1 << 20)
            busy = True
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(1 << 20)
            busy = True
        if busy:
            continue
        # paramiko's transport thread buffers messages in the order they arrive, so once EOF
        # (or the close) has been seen, every byte sent before it is in the buffers above.
        if (
            (channel.eof_received or channel.closed)
            and not channel.recv_ready()
            and not channel.recv_stderr_ready()
        ):
            if channel.exit_status_ready():
                return bytes(out), bytes(err)
            if channel.closed:
                raise lost()
        if deadline is not None and time.monotonic() > deadline:
            raise slow()
        interrupts.check()  # a Ctrl-C lands here, between SSH messages (deployer/interrupts.py)
        select.select([channel], [], [], 0.05)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


_KEY_HINT = "--identity FILE or $SWITCHYARD_SSH_IDENTITY (or load it into ssh-agent)"


def _login_refused(identity: str | None, exc: BaseException) -> str:
    """Why the SSH login failed, in words: a key file paramiko cannot use, or a key the host
    refused."""
    import paramiko

    if identity:
        path = os.path.expanduser(identity)
        usable = False
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                kind.from_private_key_file(path)
                usable = True
                break
            except paramiko.PasswordRequiredException:
                return (
                    f"the SSH key {identity} is protected by a passphrase; load it into ssh-agent "
                    f"(`ssh-add {identity}`) "
                    "and leave out --identity / $SWITCHYARD_SSH_IDENTITY, or pass a key without "
                    "one"
                )
            except (paramiko.SSHException, OSError, ValueError):
                continue
        if not usable:
            return (
                f"{identity} is not an SSH private key (is it the .pub file?); pass the private "
                f"key with {_KEY_HINT}"
            )
    reason = f" ({_reason(exc)})" if isinstance(exc, paramiko.AuthenticationException) else ""
    return (
        f"the host refused our SSH key{reason}; pass the key this user may log in with: {_KEY_HINT}"
    )
