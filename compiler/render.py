"""Render one environment's artifacts: `{relative path: text}`. Pure and deterministic.

runtime.json and manifest.json are machine-read, so they are serialised (sorted keys);
compose.yaml and the Dockerfile are read by people, so they come from templates that only
loop and branch over values computed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from compiler import proxy
from compiler.canonical import _with_hash_and_text, canonical_json, sha256
from compiler.manifest import GatewayInputs, ImageDigests, Manifest, ProxyInputs, Services, Source
from compiler.models import GatewayConfig
from compiler.resolve import (
    REFERENCE_INPUT_TOKENS,
    REFERENCE_OUTPUT_TOKENS,
    ResolvedEnvironment,
    base_url,
    required_secrets,
    resolve_environments,
    runtime_price,
    used_providers,
)
from runtime.config import (
    SCHEMA_VERSION,
    Budget,
    CandidateRef,
    CostReference,
    DroppedCandidate,
    FallbackPolicy,
    JsonValue,
    Limits,
    LoggingConfig,
    ModelConfig,
    OrgConfig,
    ProviderConfig,
    RouteConfig,
    RuntimeConfig,
    SecretSpec,
    StateConfig,
)

CONTAINER_PORT = 8000
CONFIG_PATH = "/etc/switchyard/runtime.json"
DATA_DIR = "/var/lib/switchyard"
# Where deploy writes the environment's secrets file, relative to a release directory
# (<root>/<compose project>/releases/<release id>/). It is never part of a release.
SECRETS_FILE = "../../secrets.env"
LABEL_PREFIX = "dev.switchyard"
MANAGED_BY = "switchyard"
CONFIG_HASH_LABEL = f"{LABEL_PREFIX}.config-hash"
IMAGE_INPUTS_LABEL = f"{LABEL_PREFIX}.image-inputs"
SLOT_LABEL = f"{LABEL_PREFIX}.slot"
REPLICA_LABEL = f"{LABEL_PREFIX}.replica"


def gateway_stop_grace_s(config: GatewayConfig) -> int:
    """How long `docker stop` gives a gateway (SIGTERM, then SIGKILL): its longest request
    (runtime.request_timeout_s), then the time to end what still runs and write the last
    records (runtime.config.ShutdownTimeline; docs/runtime.md "Shutdown"). A deploy stops an
    old gateway only after its requests have drained: this bounds the ones that did not."""
    from runtime.config import ShutdownTimeline

    return ShutdownTimeline.of(config.runtime.request_timeout_s).stop_grace_s


TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# yaml.safe_load, with libyaml's parser when PyYAML has it (a tenth of the time).
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class ImageInputs:
    """What goes into the gateway image besides the Dockerfile: the runtime's code and deps.

    The CLI reads them from disk; tests pass fixed values, so goldens do not churn.
    """

    runtime_digest: str
    requirements: str


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


# ---------------------------------------------------------------------------------------
# runtime.json


def runtime_config(config: GatewayConfig, resolved: ResolvedEnvironment) -> RuntimeConfig:
    """The resolved runtime config of one environment, with its content hash unset (`""`).

    `render_environment` writes it (`config_hash` filled in) as runtime.json.
    """
    env = resolved.env
    secrets = required_secrets(config, resolved)
    providers: dict[str, ProviderConfig] = {}
    for pid in used_providers(resolved, config):
        p = config.providers[pid]
        credentials = p.credentials.model_dump(exclude_none=True) if p.credentials else {}
        optional = bool(credentials) and all(
            env.secrets.get(name) is not None and env.secrets[name].optional
            for name in credentials.values()
        )
        providers[pid] = ProviderConfig(
            id=pid,
            adapter=p.adapter,
            base_url=base_url(p.adapter, p.base_url),
            # The mock adapter ignores credentials (W012), so it names none here either.
            credentials=credentials if p.adapter != "mock" else {},
            credentials_optional=optional,
            timeout_s=p.timeout_s,
            connect_timeout_s=p.connect_timeout_s,
            models={
                name: ModelConfig(
                    name=name,
                    upstream=m.upstream or name,
                    context_window=m.context_window,
                    max_output_tokens=m.max_output_tokens,
                    capabilities=frozenset(m.capabilities),
                    price=None if m.price is None else runtime_price(m.price),
                    dimensions=m.dimensions,
                )
                for name, m in sorted(p.models.items())
            },
        )
    routes = {
        name: RouteConfig(
            name=name,
            strategy=rr.route.strategy,
            requires=frozenset(rr.requires),
            min_context_window=rr.route.min_context_window,
            max_cost_per_request_usd=rr.route.max_cost_per_request_usd,
            fallback=FallbackPolicy(
                on=frozenset(rr.route.fallback.on),
                max_attempts=rr.route.fallback.max_attempts,
                first_byte_timeout_s=rr.route.fallback.first_byte_timeout_s,
            ),
            candidates=tuple(CandidateRef(c.provider, c.model, c.weight) for c in rr.candidates),
            dropped=tuple(DroppedCandidate(d.ref, d.kind, d.reason) for d in rr.dropped),
            kind=rr.kind,
        )
        for name, rr in resolved.routes.items()
    }
    orgs = {
        oid: OrgConfig(
            id=oid,
            routes=None if o.routes is None else frozenset(o.routes),
            allow_explicit_models=o.allow_explicit_models,
            byok_providers=frozenset()
            if o.byok is None
            else frozenset(p for p in o.byok.providers if p in resolved.allowed_providers),
            byok_encryption_key=None if o.byok is None else o.byok.encryption_key,
        )
        for oid, o in sorted(config.orgs.items())
    }
    prices: dict[str, JsonValue] = {
        f"{pid}/{name}": None if m.price is None else m.price.to_dict()
        for pid, p in providers.items()
        for name, m in p.models.items()
    }
    limits = resolved.limits
    stores = resolved.state
    return RuntimeConfig(
        schema_version=SCHEMA_VERSION,
        config_hash="",
        project=config.project,
        environment=resolved.name,
        compose_project=resolved.compose_project,
        port=CONTAINER_PORT,
        workers=config.runtime.workers,
        request_timeout_s=config.runtime.request_timeout_s,
        max_upstream_body_bytes=config.runtime.max_upstream_body_mb * 1024 * 1024,
        data_dir=DATA_DIR,
        allow_explicit_models=config.runtime.allow_explicit_models,
        key_prefix=f"sy_{resolved.name}_",
        key_environment=resolved.name,
        providers=providers,
        routes=routes,
        orgs=orgs,
        limits=Limits(
            requests_per_minute=limits.per_key.requests_per_minute,
            tokens_per_minute=limits.per_key.tokens_per_minute,
            key_budget=Budget(limits.per_key.usd_per_day, limits.per_key.usd_per_month),
            org_budget=Budget(limits.per_org.usd_per_day, limits.per_org.usd_per_month),
            org_budgets={
                oid: Budget(b.usd_per_day, b.usd_per_month) for oid, b in limits.orgs.items()
            },
        ),
        logging=LoggingConfig(
            sink=stores.records_sink,
            url_secret=stores.records_secret,
            retention_days=config.logging.retention_days,
            batch_size=config.logging.batch_size,
            flush_interval_ms=config.logging.flush_interval_ms,
        ),
        state=StateConfig(
            limits_store=stores.limits_store,
            redis_url_secret=stores.redis_secret,
            on_redis_unavailable=stores.on_redis_unavailable,
            keys_store=stores.keys_store,
            postgres_url_secret=stores.postgres_secret,
        ),
        cost_reference_request=CostReference(REFERENCE_INPUT_TOKENS, REFERENCE_OUTPUT_TOKENS),
        price_table_hash="sha256:" + sha256(canonical_json(prices)),
        secrets={
            name: SecretSpec(
                name=name,
                needed_by=needed_by,
                optional=bool(env.secrets.get(name) and env.secrets[name].optional),
            )
            for name, needed_by in sorted(secrets.items())
        },
    )


# ---------------------------------------------------------------------------------------
# compose.yaml, Dockerfile, manifest.json


def _labels(
    config: GatewayConfig, resolved: ResolvedEnvironment, service: str, extra: dict[str, str]
) -> list[tuple[str, str]]:
    labels = {
        f"{LABEL_PREFIX}.managed-by": MANAGED_BY,
        f"{LABEL_PREFIX}.project": config.project,
        f"{LABEL_PREFIX}.environment": resolved.name,
        f"{LABEL_PREFIX}.service": service,
        **extra,
    }
    return sorted(labels.items())


# Labels that differ between the gateway services of one release (slot, replica) or that the
# manifest tracks on its own (config, image): left out of the definition hash.
_UNHASHED_LABELS = (CONFIG_HASH_LABEL, IMAGE_INPUTS_LABEL, SLOT_LABEL, REPLICA_LABEL)


def service_definition_hash(block: dict[str, Any]) -> str:
    """Hash of a service's block in compose.yaml, minus what the manifest tracks separately.

    Taken from the rendered (and parsed) file, so a change anywhere in the service's
    definition (the template's healthcheck, restart policy or logging included) changes it.
    The image name, the config-hash / image-inputs labels and a gateway's slot and replica
    are left out: the manifest's `image`, `config` and `replicas` cover them, and every
    gateway of a release has the same definition.
    """
    labels = {k: v for k, v in block.get("labels", {}).items() if k not in _UNHASHED_LABELS}
    rest = {k: v for k, v in block.items() if k not in ("image", "labels")}
    return "sha256:" + sha256(canonical_json({**rest, "labels": labels}))


def _healthcheck(path: str) -> list[str]:
    url = f"http://127.0.0.1:{CONTAINER_PORT}{path}"
    code = f"import urllib.request; urllib.request.urlopen('{url}', timeout=2)"
    return ["CMD", "python", "-c", code]


def _inputs(**inputs: Any) -> dict[str, Any]:
    return {**inputs, "inputs_hash": "sha256:" + sha256(canonical_json(inputs))}


def render_environment(
    config: GatewayConfig,
    env_name: str,
    image_inputs: ImageInputs,
    *,
    source_name: str = "gateway.yaml",
    source_sha256: str = "",
    resolved: ResolvedEnvironment | None = None,
    templates: jinja2.Environment | None = None,
) -> dict[str, str]:
    """All artifacts of one environment, as `{file name: text}`.

    `resolved` (the environment as `compiler.resolve` resolves it) and `templates` are
    computed when not given; `render_all` shares them.
    """
    if resolved is None:
        resolved = resolve_environments(config, [env_name])[env_name]
    if templates is None:
        templates = _env()
    env = resolved.env
    cp = resolved.compose_project
    runtime, runtime_text = _with_hash_and_text(runtime_config(config, resolved).to_dict())
    config_hash = runtime["config_hash"]
    drain_s = proxy.drain_timeout_s(config, env.drain_timeout_s)

    # The image's default command leaves out settings of the environment (workers), so that
    # changing them restarts the gateway without rebuilding its image.
    image_command = [
        "python",
        "-m",
        "runtime",
        "serve",
        "--config",
        CONFIG_PATH,
        "--host",
        "0.0.0.0",
        "--port",
        str(CONTAINER_PORT),
    ]
    dockerfile = templates.get_template("Dockerfile.j2").render(
        base_image=config.runtime.base_image,
        compose_project=cp,
        container_port=CONTAINER_PORT,
        command=image_command,
    )
    image_hash = sha256(
        "\n".join(
            [sha256(dockerfile), image_inputs.runtime_digest, sha256(image_inputs.requirements)]
        )
    )
    image = f"{cp}/gateway:{image_hash[:12]}"
    proxy_dockerfile = proxy.render_dockerfile(templates, config, cp)
    proxy_hash = sha256(proxy_dockerfile)
    proxy_image = f"{cp}/proxy:{proxy_hash[:12]}"

    slots = {slot: proxy.gateway_services(env.replicas, slot) for slot in proxy.SLOTS}
    gateway_labels = {CONFIG_HASH_LABEL: config_hash, IMAGE_INPUTS_LABEL: "sha256:" + image_hash}
    gateways = [
        {
            "name": name,
            "labels": _labels(
                config,
                resolved,
                "gateway",
                {**gateway_labels, SLOT_LABEL: slot, REPLICA_LABEL: str(i)},
            ),
        }
        for slot, names in slots.items()
        for i, name in enumerate(names, 1)
    ]
    compose = templates.get_template("compose.yaml.j2").render(
        source_name=source_name,
        environment=env_name,
        compose_project=cp,
        port=env.port,
        replicas=env.replicas,
        image=image,
        secrets_file=SECRETS_FILE,
        gateway_port=CONTAINER_PORT,
        gateway={
            "command": [*image_command, "--workers", str(config.runtime.workers)],
            "environment": sorted(
                {
                    "SWITCHYARD_ENVIRONMENT": env_name,
                    "SWITCHYARD_DATA_DIR": DATA_DIR,
                    # `docker exec ... python -m runtime keys|byok|requests` then uses the
                    # stores this config names (PostgreSQL too) without --config.
                    "SWITCHYARD_CONFIG": CONFIG_PATH,
                }.items()
            ),
            "volumes": [f"./runtime.json:{CONFIG_PATH}:ro", f"data:{DATA_DIR}"],
            "healthcheck": _healthcheck("/readyz"),
            "stop_grace_s": gateway_stop_grace_s(config),
        },
        proxy={
            "image": proxy_image,
            "config_mount": f"{proxy.HOST_CONFIG_DIR}:{proxy.CONFIG_DIR}:ro",
            "published": f"127.0.0.1:{env.port}:{proxy.LISTEN_PORT}",
            "stop_grace_s": proxy.STOP_GRACE_S,
            "labels": _labels(
                config, resolved, "proxy", {IMAGE_INPUTS_LABEL: "sha256:" + proxy_hash}
            ),
        },
        gateways=gateways,
        volume_labels=_labels(config, resolved, "data", {}),
    )
    compose_services = yaml.load(compose, Loader=_YAML_LOADER)["services"]
    proxy_configs = {
        f"proxy/haproxy-{slot}.cfg": proxy.render_config(
            templates,
            config,
            environment=env_name,
            compose_project=cp,
            source_name=source_name,
            slot=slot,
            servers=names,
            gateway_port=CONTAINER_PORT,
            drain_s=drain_s,
        )
        for slot, names in slots.items()
    }
    gateway_inputs = _inputs(
        image="sha256:" + image_hash,
        config=config_hash,
        replicas=env.replicas,
        definition=service_definition_hash(compose_services[slots["a"][0]]),
    )
    proxy_inputs = _inputs(
        image="sha256:" + proxy_hash,
        config={
            slot: "sha256:" + sha256(proxy_configs[f"proxy/haproxy-{slot}.cfg"])
            for slot in proxy.SLOTS
        },
        definition=service_definition_hash(compose_services["proxy"]),
    )
    services = Services(
        GatewayInputs(**gateway_inputs, slots={s: tuple(n) for s, n in slots.items()}),
        ProxyInputs(**proxy_inputs),
    )
    files = {
        "compose.yaml": compose,
        "Dockerfile": dockerfile,
        "runtime.json": runtime_text,
        "proxy/Dockerfile": proxy_dockerfile,
        **proxy_configs,
    }
    manifest = Manifest(
        project=config.project,
        environment=env_name,
        compose_project=cp,
        target=env.target,
        host=env.host,
        ssh_user=env.ssh_user,
        ssh_port=env.ssh_port,
        port=env.port,
        replicas=env.replicas,
        health_timeout_s=env.health_timeout_s,
        drain_timeout_s=drain_s,
        keep_releases=env.keep_releases,
        deploy_dir=env.deploy_dir,
        image=image,
        proxy_image=proxy_image,
        image_inputs=ImageDigests(
            dockerfile="sha256:" + sha256(dockerfile),
            runtime="sha256:" + image_inputs.runtime_digest,
            requirements="sha256:" + sha256(image_inputs.requirements),
        ),
        config_hash=config_hash,
        source=Source(source_name, source_sha256),
        secrets=tuple(sorted(runtime["secrets"])),
        files={name: "sha256:" + sha256(text) for name, text in sorted(files.items())},
        services=services,
    )
    files["manifest.json"] = manifest.text()
    return files


def render_all(
    config: GatewayConfig,
    envs: list[str],
    image_inputs: ImageInputs,
    *,
    resolved: Mapping[str, ResolvedEnvironment] | None = None,
    source_name: str = "gateway.yaml",
    source_sha256: str = "",
) -> dict[str, dict[str, str]]:
    """`render_environment` for each of `envs`: `{env: {file name: text}}`.

    Pass `resolved` (e.g. `CheckResult.resolved`) to reuse environments already resolved.
    """
    if resolved is None:
        resolved = resolve_environments(config, envs)
    templates = _env()
    return {
        env: render_environment(
            config,
            env,
            image_inputs,
            source_name=source_name,
            source_sha256=source_sha256,
            resolved=resolved[env],
            templates=templates,
        )
        for env in envs
    }
