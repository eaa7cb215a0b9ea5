"""The commands a deploy runs on a host, as argument lists. Built here, run elsewhere.

Every compose command names its project with `-p` and its file with `-f`, and runs with the
compose variables that could widen its reach scrubbed from the environment
(`COMPOSE_REMOVE_ORPHANS` would silently remove whatever shares the project label).
"""

from __future__ import annotations

from collections.abc import Sequence

SCRUBBED = ("COMPOSE_REMOVE_ORPHANS", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "COMPOSE_PATH_SEPARATOR", "COMPOSE_ENV_FILES")
OWNER_LABEL = "dev.switchyard.managed-by"
OWNER = "switchyard"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"


def _env() -> list[str]:
    argv = ["env"]
    for name in SCRUBBED:
        argv += ["-u", name]
    return argv


def compose(project: str, compose_file: str, *args: str) -> list[str]:
    """`docker compose -p <project> -f <file> ...`, with the dangerous variables unset."""
    return [*_env(), "docker", "compose", "-p", project, "-f", compose_file, *args]


def compose_config_check(project: str, compose_file: str) -> list[str]:
    return compose(project, compose_file, "config", "--quiet")


def compose_up(project: str, compose_file: str, services: Sequence[str], *, build: bool) -> list[str]:
    """Create or recreate exactly `services`; never their dependencies, never orphans."""
    return compose(project, compose_file, "up", "--detach", "--no-deps", *(["--build"] if build else []), *services)


def project_containers(project: str) -> list[str]:
    """Ids of every container (running or not) in the compose project, whoever made it."""
    return ["docker", "ps", "--all", "--quiet", "--no-trunc", "--filter", f"label={PROJECT_LABEL}={project}"]


def published_containers() -> list[str]:
    """Every running container with the ports it publishes, for the host-wide port check."""
    return ["docker", "ps", "--format", "{{.ID}}\t{{.Label \"" + PROJECT_LABEL + "\"}}\t{{.Ports}}"]


def inspect(ids: Sequence[str]) -> list[str]:
    return ["docker", "inspect", "--type", "container", *ids]


def image_ids(refs: Sequence[str]) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *refs]


def remove_image(ref: str) -> list[str]:
    """Untag one image of ours by its exact name (no --force: an image in use stays)."""
    return ["docker", "image", "rm", ref]


def stop_and_remove(ids: Sequence[str]) -> list[str]:
    """Remove exactly these containers (ours: checked by the caller against the labels)."""
    return ["docker", "rm", "--force", "--volumes=false", *ids]


def logs(container: str, tail: int = 20) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), container]


def make_env_dir(env_dir: str, then: Sequence[str] = ()) -> list[str]:
    """The environment's directory (0700: it holds the secrets file) and its releases/;
    then, if given, exec `then` (so the lock can make the directory in the same round trip)."""
    script = 'mkdir -p -- "$1/releases" && chmod 700 -- "$1" || exit 1; shift; [ "$#" -eq 0 ] || exec "$@"'
    return ["sh", "-c", script, "sh", env_dir, *then]

def unpack_release(tarball: str, final_dir: str) -> list[str]:
    """Unpack into a hidden directory, then rename: a release appears whole or not at all."""
    script = 'set -e; tmp="$2.tmp"; rm -rf -- "$tmp"; mkdir -p -- "$tmp"; tar -xzf "$1" -C "$tmp"; rm -f -- "$1"; rm -rf -- "$2"; mv -- "$tmp" "$2"'
    return ["sh", "-c", script, "sh", tarball, final_dir]


def point_current(env_dir: str, release_id: str) -> list[str]:
    """Atomically point `current` at a release (ln -s to a temporary name, then mv -T)."""
    script = 'set -e; cd -- "$1"; ln -sfn -- "releases/$2" .current.tmp; mv -T -- .current.tmp current'
    return ["sh", "-c", script, "sh", env_dir, release_id]


_PROBE = r"""
d="$1"; p="$2"; img="$3"; compare="$4"; claims="$5"
echo "@@sy current"; readlink -- "$d/current" 2>/dev/null || true
echo "@@sy releases"
(cd -- "$d/releases" 2>/dev/null || exit 0
 for r in *; do [ -d "$r" ] || continue; if [ -e "$r/FAILED" ]; then echo "$r failed"; else echo "$r ok"; fi; done)
echo "@@sy image"
if [ -n "$img" ]; then docker image inspect --format '{{.Id}}' "$img" >/dev/null 2>&1 && echo present || echo absent; fi
echo "@@sy secrets"
if [ "$compare" = 1 ]; then if cmp -s - "$d/secrets.env" 2>/dev/null; then echo same; else echo changed; fi; fi
echo "@@sy claims"
if [ -n "$claims" ]; then cat -- "$claims" 2>/dev/null || true; fi
echo "@@sy published"
docker ps --format "$6" || exit 1
echo "@@sy containers"
ids=$(docker ps --all --quiet --no-trunc --filter "label=com.docker.compose.project=$p") || exit 1
if [ -n "$ids" ]; then docker inspect --type container $ids || true; else echo "[]"; fi
"""


def probe(env_dir: str, project: str, image: str = "", compare_secrets: bool = False, claims: str = "") -> list[str]:
    """Everything a plan reads, in one round trip: `current`, the releases (and which failed),
    whether `image` exists, whether stdin equals the secrets file (`cmp`: the content never
    leaves stdin), the host's claims file, the ports running containers publish, and
    `docker inspect` of every container of the compose project.
    Output: sections headed `@@sy <name>`."""
    fmt = published_containers()[-1]
    return ["sh", "-c", _PROBE, "sh", env_dir, project, image, "1" if compare_secrets else "0", claims, fmt]


def cat_files(paths: Sequence[str]) -> list[str]:
    """Several files in one round trip: `\n@@sy-file <path>\n<content>` each (`@@sy-absent` if missing)."""
    script = 'for f in "$@"; do printf \'\n@@sy-file %s\n\' "$f"; if [ -f "$f" ]; then cat -- "$f"; else echo @@sy-absent; fi; done'
    return ["sh", "-c", script, "sh", *paths]


def mark_failed(release_dir: str) -> list[str]:
    return ["sh", "-c", 'echo "$2" > "$1/FAILED"', "sh", release_dir, "health check failed; see history"]


def remove_release(env_dir: str, release_id: str) -> list[str]:
    return ["sh", "-c", 'rm -rf -- "$1/releases/$2"', "sh", env_dir, release_id]


def replace_if_changed(new: str, target: str) -> list[str]:
    """mv new over target unless equal; prints `changed` or `same` (never the content)."""
    script = 'if cmp -s -- "$1" "$2"; then rm -f -- "$1"; echo same; else mv -f -- "$1" "$2"; echo changed; fi'
    return ["sh", "-c", script, "sh", new, target]


def append_line(path: str) -> list[str]:
    """Append stdin to `path` (one history line)."""
    return ["sh", "-c", 'cat >> "$1"', "sh", path]


def resolve_root(root: str, create: bool) -> list[str]:
    """The absolute deploy directory; `~/x` is under the (SSH) user's $HOME on the host."""
    home = 'case "$1" in "~/"*) set -- "$HOME/${1#"~/"}";; esac; '
    make = 'mkdir -p -- "$1" && ' if create else '[ -d "$1" ] || { echo absent; exit 0; }; '
    return ["sh", "-c", home + make + 'cd -- "$1" && pwd -P', "sh", root]


def lock(lock_file: str, wait_s: float | None) -> list[str]:
    """Hold `flock` on `lock_file` while our stdin stays open.

    The kernel drops the lock when the holder is gone (deploy finished, Ctrl-C, SSH
    connection dropped), so a lock never outlives its deploy. Exit 75 means "held by another".
    """
    wait = ["--nonblock"] if not wait_s else ["--timeout", str(max(1, int(wait_s)))]
    return ["flock", *wait, "--conflict-exit-code", "75", lock_file, "sh", "-c", "echo locked; exec cat >/dev/null"]


def deploy_lock(env_dir: str, lock_file: str, wait_s: float | None, holder_file: str, holder: str) -> list[str]:
    """`lock` on the environment's deploy lock, in one round trip: make the environment's
    directory (0700) first, and once the lock is ours write who holds it to `holder_file`."""
    flock = lock(lock_file, wait_s)
    inner = 'printf "%s\\n" "$2" > "$1"; echo locked; exec cat >/dev/null'
    return make_env_dir(env_dir, [*flock[:flock.index("sh")], "sh", "-c", inner, "sh", holder_file, holder])


def serialised(lock_file: str, argv: Sequence[str]) -> list[str]:
    """Run `argv` under the environment's operation lock.

    A compose command left running by a deploy whose SSH connection dropped still holds it,
    so the next deploy's compose commands wait for it instead of racing it.
    """
    return ["flock", "--timeout", "900", lock_file, *argv]
