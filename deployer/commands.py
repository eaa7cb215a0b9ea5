"""The commands a deploy runs on a host, as argument lists. Built here, run elsewhere.

Every compose command names its project with `-p` and its file with `-f`, and runs with the
compose variables that could widen its reach scrubbed from the environment
(`COMPOSE_REMOVE_ORPHANS` would silently remove whatever shares the project label).
"""

from __future__ import annotations

from collections.abc import Sequence

SCRUBBED = (
    "COMPOSE_REMOVE_ORPHANS",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
    "COMPOSE_PATH_SEPARATOR",
    "COMPOSE_ENV_FILES",
)
OWNER_LABEL = "dev.switchyard.managed-by"
OWNER = "switchyard"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
ROLE_LABEL = (
    "dev.switchyard.service"  # gateway, proxy (what a container is, whatever its compose name)
)
SLOT_LABEL = "dev.switchyard.slot"
PROXY_CONFIG_DIR = "/etc/switchyard/proxy"  # where the proxy container sees <env dir>/proxy


def _env() -> list[str]:
    argv = ["env"]
    for name in SCRUBBED:
        argv += ["-u", name]
    # The gateways of the slot not named in a command are orphans to compose: fine, say nothing.
    return [*argv, "COMPOSE_IGNORE_ORPHANS=1"]


def compose(project: str, compose_file: str, *args: str) -> list[str]:
    """`docker compose -p <project> -f <file> ...`, with the dangerous variables unset."""
    return [*_env(), "docker", "compose", "-p", project, "-f", compose_file, *args]


def compose_config_check(project: str, compose_file: str) -> list[str]:
    return compose(project, compose_file, "config", "--quiet")


def compose_build(project: str, compose_file: str, services: Sequence[str]) -> list[str]:
    """Build the images of `services` (one service per image is enough)."""
    return compose(project, compose_file, "build", *services)


def compose_up(project: str, compose_file: str, services: Sequence[str]) -> list[str]:
    """Create or recreate exactly `services` from images already built; never their
    dependencies, never orphans (the other slot's gateways are, to compose, orphans)."""
    return compose(project, compose_file, "up", "--detach", "--no-deps", "--no-build", *services)


def project_containers(project: str) -> list[str]:
    """Ids of every container (running or not) in the compose project, whoever made it."""
    return [
        "docker",
        "ps",
        "--all",
        "--quiet",
        "--no-trunc",
        "--filter",
        f"label={PROJECT_LABEL}={project}",
    ]


def published_containers() -> list[str]:
    """Every running container with the ports it publishes, for the host-wide port check."""
    return ["docker", "ps", "--format", '{{.ID}}\t{{.Label "' + PROJECT_LABEL + '"}}\t{{.Ports}}']


def inspect(ids: Sequence[str]) -> list[str]:
    return ["docker", "inspect", "--type", "container", *ids]


def image_ids(refs: Sequence[str]) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *refs]


def remove_image(ref: str) -> list[str]:
    """Untag one image of ours by its exact name (no --force: an image in use stays)."""
    return ["docker", "image", "rm", ref]


def stop_and_remove(ids: Sequence[str]) -> list[str]:
    """Stop (SIGTERM, then SIGKILL after the container's own grace) and remove exactly these
    containers (ours: checked by the caller against the labels), with their anonymous volumes
    (`--volumes` never touches a named volume such as `data`)."""
    return [
        "sh",
        "-c",
        'docker stop -- "$@" >/dev/null 2>&1; docker rm --force --volumes -- "$@"',
        "sh",
        *ids,
    ]


def logs(container: str, tail: int = 20) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), container]


def make_env_dir(env_dir: str, then: Sequence[str] = ()) -> list[str]:
    """The environment's directory (0700: it holds the secrets file) and its releases/;
    then, if given, exec `then` (so the lock can make the directory in the same round trip)."""
    script = (
        'mkdir -p -- "$1/releases" && chmod 700 -- "$1" || exit 1; shift; [ "$#" -eq 0 ] || '
        'exec "$@"'
    )
    return ["sh", "-c", script, "sh", env_dir, *then]


def unpack_release(tarball: str, final_dir: str) -> list[str]:
    """Unpack into a hidden directory beside it, then rename: a release appears whole or not
    at all, and nothing half-written ever carries a release's name."""
    script = (
        'set -e; tmp="$(dirname -- "$2")/.$(basename -- "$2").unpack"; rm -rf -- "$tmp"; mkdir -p '
        '-- "$tmp"; '
        'tar -xzf "$1" -C "$tmp"; rm -f -- "$1"; rm -rf -- "$2"; mv -- "$tmp" "$2"'
    )
    return ["sh", "-c", script, "sh", tarball, final_dir]


def remove_leftovers(releases_dir: str, names: Sequence[str]) -> list[str]:
    """Remove half-written uploads (hidden entries of releases/) by name."""
    return [
        "sh",
        "-c",
        'cd -- "$1" || exit 0; shift; for n in "$@"; do case "$n" in .?*) rm -rf -- "$n";; esac; '
        "done",
        "sh",
        releases_dir,
        *names,
    ]


# ---------------------------------------------------------------------------------------
# the proxy

# HAProxy's worker processes in its container: haproxy processes whose parent is haproxy
# (the master). After a reload the old workers stay until their connections have closed.
_WORKERS = r"""
all=""
for d in /proc/[0-9]*; do
  read -r pid comm rest < "$d/stat" 2>/dev/null || continue
  [ "$comm" = "(haproxy)" ] && all="$all $pid"
done
for pid in $all; do
  read -r _ _ _ ppid rest < "/proc/$pid/stat" 2>/dev/null || continue
  case " $all " in *" $ppid "*) echo "$pid";; esac
done
"""


def proxy_workers(container: str) -> list[str]:
    """The pids of the proxy's HAProxy workers, one per line."""
    return ["docker", "exec", container, "sh", "-c", _WORKERS]


def stage_proxy_config(source: str, proxy_dir: str, header: str) -> list[str]:
    """Copy a release's haproxy-<slot>.cfg to <proxy dir>/haproxy.cfg.next, headed by `header`.

    The directory is mounted into the proxy container (0755, files 0644: HAProxy runs as an
    unprivileged user there)."""
    script = (
        'set -e; umask 022; mkdir -p -- "$2"; chmod 755 -- "$2"; '
        '{ printf "%s\n" "$3"; cat -- "$1"; } > "$2/haproxy.cfg.next.tmp"; mv -f -- '
        '"$2/haproxy.cfg.next.tmp" "$2/haproxy.cfg.next"'
    )
    return ["sh", "-c", script, "sh", source, proxy_dir, header]


def check_proxy_config(proxy_dir: str, image: str, container: str | None) -> list[str]:
    """HAProxy's own check (`haproxy -c`) of the staged config: in the running proxy when it
    has the same image, else in a throwaway container of the image (no network, removed)."""
    check = ["haproxy", "-c", "-f", f"{PROXY_CONFIG_DIR}/haproxy.cfg.next"]
    if container:
        return ["docker", "exec", container, *check]
    return [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--label",
        f"{OWNER_LABEL}={OWNER}",
        "--volume",
        f"{proxy_dir}:{PROXY_CONFIG_DIR}:ro",
        image,
        *check,
    ]


def reload_proxy(proxy_dir: str, container: str) -> list[str]:
    """Make the staged config live and reload HAProxy (SIGUSR2 to its master: a new worker
    takes the listening sockets, the old ones finish their connections).

    Prints `workers <pids>` (the workers before the reload: the ones to wait for). One remote
    script: once started it runs to the end even if the deploy's connection goes."""
    script = (
        'd="$1"; c="$2"; set -e; w=$(docker exec "$c" sh -c "$3" | tr "\n" " "); '
        '[ ! -f "$d/haproxy.cfg" ] || cp -p -- "$d/haproxy.cfg" "$d/haproxy.cfg.prev"; '
        'mv -f -- "$d/haproxy.cfg.next" "$d/haproxy.cfg"; docker kill --signal USR2 "$c" '
        '>/dev/null; echo "workers $w"'
    )
    return ["sh", "-c", script, "sh", proxy_dir, container, _WORKERS]


def restore_proxy_config(proxy_dir: str, container: str | None, if_header: str = "") -> list[str]:
    """Put the config that was live before back, and reload (after a cut-over that failed).

    With `if_header`, only when the live config is the one this deploy made live (its first
    line is that header): a cut-over interrupted before its promote must not bring back an
    older deploy's haproxy.cfg.prev."""
    script = (
        'd="$1"; c="$2"; [ -f "$d/haproxy.cfg.prev" ] || exit 0; '
        'if [ -n "$3" ]; then IFS= read -r first < "$d/haproxy.cfg" || exit 0; [ "$first" = "$3" ] '
        "|| exit 0; fi; "
        'mv -f -- "$d/haproxy.cfg.prev" "$d/haproxy.cfg"; '
        '[ -z "$c" ] || docker kill --signal USR2 "$c" >/dev/null'
    )
    return ["sh", "-c", script, "sh", proxy_dir, container or "", if_header]


def promote_proxy_config(proxy_dir: str) -> list[str]:
    """Make the staged config the live one (before the proxy container is (re)created)."""
    script = (
        'd="$1"; [ ! -f "$d/haproxy.cfg" ] || cp -p -- "$d/haproxy.cfg" '
        '"$d/haproxy.cfg.prev"; mv -f -- "$d/haproxy.cfg.next" "$d/haproxy.cfg"'
    )
    return ["sh", "-c", script, "sh", proxy_dir]


def point_current(env_dir: str, release_id: str) -> list[str]:
    """Atomically point `current` at a release (ln -s to a temporary name, then mv -T)."""
    script = (
        'set -e; cd -- "$1"; ln -sfn -- "releases/$2" .current.tmp; mv -T -- .current.tmp current'
    )
    return ["sh", "-c", script, "sh", env_dir, release_id]


_PROBE = r"""
d="$1"; p="$2"; img="$3"; compare="$4"; claims="$5"
echo "@@sy current"; readlink -- "$d/current" 2>/dev/null || true
echo "@@sy releases"
(cd -- "$d/releases" 2>/dev/null || exit 0
 for r in *; do
   [ -d "$r" ] || continue
   if [ -e "$r/FAILED" ]; then echo "$r failed"; else echo "$r ok"; fi
 done)
echo "@@sy leftovers"
(cd -- "$d/releases" 2>/dev/null || exit 0
 for r in .[!.]*; do [ -e "$r" ] && echo "$r"; done; true)
echo "@@sy image"
for i in $img; do
  docker image inspect --format '{{.Id}}' "$i" >/dev/null 2>&1 && echo "$i present" ||
    echo "$i absent"
done
echo "@@sy secrets"
if [ "$compare" = 1 ]; then
  if cmp -s - "$d/secrets.env" 2>/dev/null; then echo same; else echo changed; fi
fi
echo "@@sy claims"
if [ -n "$claims" ]; then cat -- "$claims" 2>/dev/null; echo; fi
echo "@@sy proxy"
head -n 1 -- "$d/proxy/haproxy.cfg" 2>/dev/null || true
echo "@@sy lock"
if [ -s "$d/lock.json" ]; then
  cat -- "$d/lock.json"; echo
  if flock --nonblock "$d/deploy.lock" true 2>/dev/null; then echo free; else echo held; fi
fi
echo "@@sy compose"
docker compose version --short 2>/dev/null || true
echo "@@sy published"
docker ps --format "$6" || exit 1
echo "@@sy containers"
ids=$(docker ps --all --quiet --no-trunc --filter "label=com.docker.compose.project=$p") || exit 1
if [ -n "$ids" ]; then docker inspect --type container $ids || true; else echo "[]"; fi
"""


def probe(
    env_dir: str,
    project: str,
    images: Sequence[str] = (),
    compare_secrets: bool = False,
    claims: str = "",
) -> list[str]:
    """Everything a plan reads, in one round trip: `current`, the releases (and which failed),
    half-written uploads, which of `images` exist, whether stdin equals the secrets file
    (`cmp`: the content never leaves stdin), the host's claims file, what the proxy's live
    config says it serves, the lock's holder, Compose v2's version, the ports running
    containers publish, and `docker inspect` of every container of the compose project.
    Output: sections headed `@@sy <name>`."""
    fmt = published_containers()[-1]
    return [
        "sh",
        "-c",
        _PROBE,
        "sh",
        env_dir,
        project,
        " ".join(images),
        "1" if compare_secrets else "0",
        claims,
        fmt,
    ]


def cat_files(paths: Sequence[str]) -> list[str]:
    """Several files in one round trip: `\n@@sy-file <path>\n<content>` each (`@@sy-absent` if
    missing)."""
    script = (
        'for f in "$@"; do printf \'\n@@sy-file %s\n\' "$f"; if [ -f "$f" ]; then cat -- '
        '"$f"; else echo @@sy-absent; fi; done'
    )
    return ["sh", "-c", script, "sh", *paths]


def mark_failed(release_dir: str) -> list[str]:
    """Mark a release that never went live (a rollback never picks it); nothing if it was never
    uploaded."""
    return [
        "sh",
        "-c",
        '[ ! -d "$1" ] || echo "$2" > "$1/FAILED"',
        "sh",
        release_dir,
        "never went live; see history.jsonl",
    ]


def remove_release(env_dir: str, release_id: str) -> list[str]:
    return ["sh", "-c", 'rm -rf -- "$1/releases/$2"', "sh", env_dir, release_id]


def replace_if_changed(new: str, target: str) -> list[str]:
    """mv new over target unless equal, keeping the one it replaces as `<target>.prev` (put back
    when the release that brought the new one never goes live); prints `changed` or `same`
    (never the content)."""
    script = (
        'if cmp -s -- "$1" "$2"; then rm -f -- "$1"; echo same; else '
        'rm -f -- "$2.prev"; [ ! -f "$2" ] || cp -p -- "$2" "$2.prev"; mv -f -- "$1" "$2"; echo '
        "changed; fi"
    )
    return ["sh", "-c", script, "sh", new, target]


def restore_previous(target: str) -> list[str]:
    """Put `<target>.prev` back as `target` (nothing if there is none)."""
    return ["sh", "-c", '[ ! -f "$1.prev" ] || mv -f -- "$1.prev" "$1"', "sh", target]


def drop_previous(target: str) -> list[str]:
    """Remove `<target>.prev`: the new one went live, the old values are not kept."""
    return ["rm", "-f", "--", target + ".prev"]


def append_line(path: str, then_remove: str = "") -> list[str]:
    """Append stdin to `path` (one history line); then remove `then_remove` (the lock's
    holder file: this deploy has finished)."""
    return ["sh", "-c", 'cat >> "$1" && { [ -z "$2" ] || rm -f -- "$2"; }', "sh", path, then_remove]


def resolve_root(root: str, create: bool) -> list[str]:
    """The absolute deploy directory; `~/x` is under the (SSH) user's $HOME on the host.

    Prints the path, or one word: `absent` (not created), `notdir` (a file is in the way),
    `cannotcreate <mkdir's reason>`, `notwritable`."""
    home = 'case "$1" in "~/"*) set -- "$HOME/${1#"~/"}";; esac; '
    notdir = '[ ! -e "$1" ] || [ -d "$1" ] || { echo notdir; exit 0; }; '
    if create:
        make = (
            'e=$(mkdir -p -- "$1" 2>&1) || { echo "cannotcreate ${e##*: }"; exit 0; }; '
            # `true`, not `:`: a failed redirection on a special built-in exits a POSIX sh (dash).
            't="$1/.switchyard-write-test.$$"; { true > "$t"; } 2>/dev/null && rm -f -- "$t" || { '
            "echo notwritable; exit 0; }; "
        )
    else:
        make = '[ -d "$1" ] || { echo absent; exit 0; }; '
    return ["sh", "-c", home + notdir + make + 'cd -- "$1" && pwd -P', "sh", root]


def lock(lock_file: str, wait_s: float | None) -> list[str]:
    """Hold `flock` on `lock_file` while our stdin stays open.

    The kernel drops the lock when the holder is gone (deploy finished, Ctrl-C, SSH
    connection dropped), so a lock never outlives its deploy. Exit 75 means "held by another".
    """
    wait = ["--nonblock"] if not wait_s else ["--timeout", str(max(1, int(wait_s)))]
    return [
        "flock",
        *wait,
        "--conflict-exit-code",
        "75",
        lock_file,
        "sh",
        "-c",
        "echo locked; exec cat >/dev/null",
    ]


def deploy_lock(
    env_dir: str, lock_file: str, wait_s: float | None, holder_file: str, holder: str
) -> list[str]:
    """`lock` on the environment's deploy lock, in one round trip: make the environment's
    directory (0700) first, and once the lock is ours write who holds it to `holder_file`."""
    flock = lock(lock_file, wait_s)
    # A holder file left behind is a deploy that never finished (its connection was lost):
    # print it before taking over, so this deploy can record it.
    inner = (
        '[ ! -s "$1" ] || printf "previous %s\\n" "$(cat -- "$1")"; printf "%s\\n" "$2" > "$1"; '
        "echo locked; exec cat >/dev/null"
    )
    return make_env_dir(
        env_dir, [*flock[: flock.index("sh")], "sh", "-c", inner, "sh", holder_file, holder]
    )


def serialised(lock_file: str, argv: Sequence[str]) -> list[str]:
    """Run `argv` under the environment's operation lock.

    A compose command left running by a deploy whose SSH connection dropped still holds it,
    so the next deploy's compose commands wait for it instead of racing it.
    """
    return ["flock", "--timeout", "900", lock_file, *argv]
