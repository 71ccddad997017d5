"""memoryd's one configuration object.

Sources, strongest first: environment (``MEMORYD_SECTION__KEY``), the YAML file
(``--config`` or ``MEMORYD_CONFIG``), then the defaults below. Unknown keys are
errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "MEMORYD_"
CONFIG_ENV = "MEMORYD_CONFIG"
DEFAULT_TENANT = "default"  # server.api_keys' tenant, and every request's without keys
TENANT_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
USER_SCOPE = "."  # acme.<hash>: an end user's memory within tenant acme (never in a tenant name)


def tenant_of(name: str) -> str:
    """The configured tenant of a scope: ``acme`` for ``acme`` and for its users' ``acme.<hash>``."""
    return name.partition(USER_SCOPE)[0]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_keys: list[str] = Field(
        default_factory=list, description="Bearer keys for /v1; empty = open"
    )
    admin_token: str = Field("", description="Bearer token for /admin; empty = open on loopback")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_concurrent_requests: int = Field(
        512, gt=0, description="chat requests in flight; more are refused with 429"
    )
    upstream_timeout_s: float = Field(
        300.0, gt=0, description="longest wait for the engine's next bytes; then 504"
    )


class RedisConfig(Section):
    url: str = Field(
        "",
        description="redis://, rediss:// (TLS) or unix:// URL; empty = private redis-server child",
    )
    username: str = Field("", description="ACL user; empty = the URL's, or default")
    password: str = Field(
        "", description="kept out of the URL so it never reaches a command line; empty = the URL's"
    )
    tls_ca_file: str = Field("", description="CA bundle for rediss://; empty = the system's")
    tls_cert_file: str = Field("", description="client certificate for rediss:// (mutual TLS)")
    tls_key_file: str = Field("", description="the client certificate's key")
    key_prefix: str = "memoryd"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class EngineConfig(Section):
    model: str = Field("", description="model directory; empty = bundled SmolLM2-135M-Instruct")
    upstreams: list[str] = Field(
        default_factory=list, description="external vLLM base URLs; empty = managed child"
    )
    port: int = Field(8100, ge=1, le=65535, description="loopback port of the managed vLLM child")
    replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="managed vLLM children, on port, port+1, ...; each request goes to the "
        "least loaded, and one that dies takes no requests until it is back with the served adapters",
    )
    health_interval_s: float = Field(
        5.0,
        gt=0,
        description="external upstreams are probed this often: a failing one takes no "
        "requests, one that passes again gets the served adapters back",
    )
    max_lora_rank: int = 16
    max_loras: int = 3
    max_model_len: int = 2048
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1)
    cpu_kvcache_gib: int = 1
    tool_call_parser: str = Field(
        "pythonic",
        description="vLLM --tool-call-parser for the managed child (tool calls need one); "
        "empty = no tool calls",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="more vLLM arguments, checked by vLLM's parser at start"
    )
    startup_timeout_s: float = 600.0
    log_max_mib: float = Field(
        64.0, gt=0, description="vllm.log is rotated (copied, then truncated) beyond this size"
    )
    log_keep: int = Field(3, ge=1, description="rotated vllm.log files kept")
    liveness_interval_s: float = Field(
        10.0,
        gt=0,
        description="between /health probes of the managed vLLM (each waits 5 s at most)",
    )
    hung_after: int = Field(
        3, ge=1, description="/health probes unanswered in a row before the vLLM child is killed"
    )


class ObserverConfig(Section):
    queue_size: int = Field(1000, gt=0)
    min_chars: int = Field(20, ge=1)
    max_chars: int = Field(400, ge=1)
    questions_kept: int = Field(20, ge=0)
    retry_s: float = Field(
        120.0, ge=0, description="how long an observation is retried while Redis is unreachable"
    )


class TrainingConfig(Section):
    recipe: Literal["distill", "plain"] = Field(
        "distill", description="plain = LoRA on the raw fact text only (a baseline for benchmarks)"
    )
    rank: int = 16
    alpha: int = 32
    target_modules: list[str] = Field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    learning_rate: float = 1e-3
    epochs: int = 3
    min_steps: int = Field(
        60, ge=0, description="with little to learn, more epochs until this many optimizer steps"
    )
    batch_size: int = 8
    max_seq_len: int = 160
    replay_examples: int = 100
    passage_text_copies: int = Field(
        1,
        ge=0,
        description="the passage itself, in pieces, as plain text to learn this many times "
        "(its statements once); 0 = questions and answers only",
    )
    rendering_orderings: int = Field(
        3,
        ge=1,
        description="the statements rendered under the passage's title in this many orders "
        "(the passage's own, then shuffled)",
    )
    phrasings_per_question: int = Field(
        3, ge=1, le=4, description="ways each written question is put, each answered by the teacher"
    )
    model_written_questions: bool = Field(
        False,
        description="the served model also writes held-out questions (worth it from ~1B "
        "parameters; the bundled 135M model writes almost none that pass the teacher check)",
    )
    kl_weight: float = Field(
        3.0, ge=0, description="weight of the KL-to-base loss on replay answers"
    )
    self_distill_every: int = Field(
        0,
        ge=0,
        description="every N optimizer steps, also train on the student's own answers to "
        "passage questions, scored token by token by the teacher with the passage; 0 = off",
    )
    self_distill_weight: float = Field(1.0, ge=0)
    self_distill_tokens: int = Field(32, gt=0, description="length of the student's samples")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of steps warming up")
    weight_decay: float = Field(0.0, ge=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="autocast dtype; auto = bfloat16 on GPUs that have it and on CPUs with AMX, "
        "float16 on older GPUs, float32 on other CPUs",
    )
    memory_budget_gib: float = Field(
        0.0,
        ge=0,
        description="memory a run may use; a run estimated above it is refused before it "
        "starts; 0 = what is free on the GPU (or host) when it starts",
    )
    seed: int = 0


class GatesConfig(Section):
    efficacy_min: float = Field(
        0.7, ge=0, le=1, description="trained questions answered with what they expect, as served"
    )
    generalization_min: float = Field(
        0.3,
        ge=0,
        le=1,
        description="mean recall of the statements on held-out questions, as served",
    )
    passages_below_base_max: int = Field(
        0, ge=0, description="passages whose held-out score may fall below the base model's"
    )
    retention_min: float = Field(0.9, ge=0, le=1, description="general answers kept, as served")
    general_kl_max: float = Field(
        1.0, ge=0, description="mean KL(base || adapter) per token on general prompts"
    )
    adapter_retention_min: float = Field(
        0.7, ge=0, le=1, description="general answers kept by the adapter itself, unrouted"
    )


class FactsConfig(Section):
    ttl_days: float = Field(
        30.0, ge=0, description="a fact not seen for this long is forgotten; 0 = never"
    )


class ConsolidationConfig(Section):
    idle_after_s: float = Field(60.0, ge=0)
    min_conversations: int = Field(3, ge=1)
    check_interval_s: float = Field(2.0, gt=0)
    max_tries: int = Field(
        3,
        ge=1,
        description="runs of one fact set that may end without a verdict (killed, interrupted) "
        "before it is no longer retried on its own",
    )
    runner: Literal["child", "workers"] = Field(
        "child",
        description="child: the daemon runs each consolidation as its own child process in idle "
        "time; workers: the daemon only queues runs and promotes passed ones, and "
        "`python -m consolidator.service` processes (a training GPU, another host) take them",
    )
    training: TrainingConfig = TrainingConfig()
    gates: GatesConfig = GatesConfig()


class TenantConfig(Section):
    """One tenant: the keys that are it, its own admin token, whether it is learned from."""

    api_keys: list[str] = Field(default_factory=list, description="Bearer keys for /v1")
    admin_token: str = Field("", description="Bearer token for /admin, this tenant only")
    learn: bool = Field(True, description="false = nothing of this tenant is observed")
    per_user: bool = Field(
        False,
        description="each end user (a request's `user` field) has memory and adapters of its "
        "own within this tenant, named <tenant>.<hash of the user>; requests without `user` "
        "use the tenant's own",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    state_dir: Path = Path("./var")
    served_model_name: str = "memoryd"
    routing: Literal["relevant", "always"] = Field(
        "relevant",
        description="relevant = the memory adapter serves requests whose question is close in "
        "meaning to what it learned, the base model the rest; always = the adapter serves everything",
    )
    routing_threshold: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="cosine similarity between a question and the closest learned statement "
        "from which the adapter serves it (routing: relevant)",
    )
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="json = one object per line (journald, log pipelines)"
    )
    server: ServerConfig = ServerConfig()
    redis: RedisConfig = RedisConfig()
    engine: EngineConfig = EngineConfig()
    observer: ObserverConfig = ObserverConfig()
    facts: FactsConfig = FactsConfig()
    consolidation: ConsolidationConfig = ConsolidationConfig()
    tenants: dict[str, TenantConfig] = Field(
        default_factory=dict,
        description="named tenants, each with its own memory and adapters; `default` "
        "configures the default tenant (server.api_keys are its keys too)",
    )

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        bad = [name for name in tenants if not TENANT_NAME.match(name)]
        if bad:
            raise ValueError(f"tenant names must match [a-z0-9-]{{1,32}}: {', '.join(bad)}")
        return tenants

    @model_validator(mode="after")
    def _tokens_name_one_tenant(self) -> Settings:
        """A key or token names one tenant: the same one given twice would leak memory."""
        keys = [k for name in self.tenant_names() for k in self.tenant(name).api_keys]
        tokens = [self.server.admin_token] + [t.admin_token for t in self.tenants.values()]
        tokens = [t for t in tokens if t]
        if len(set(keys)) != len(keys):
            raise ValueError("an API key is given to more than one tenant")
        if len(set(tokens)) != len(tokens):
            raise ValueError("an admin token is given twice (operator or tenants)")
        if set(keys) & set(tokens):
            raise ValueError("an admin token is also an API key")
        return self

    def tenant_names(self) -> list[str]:
        """The default tenant first, then the named ones in order."""
        return [DEFAULT_TENANT, *sorted(n for n in self.tenants if n != DEFAULT_TENANT)]

    def tenant(self, name: str) -> TenantConfig:
        """A tenant's config (an end user's scope has its tenant's); the default tenant's keys
        include server.api_keys."""
        name = tenant_of(name)
        own = self.tenants.get(name, TenantConfig())
        if name != DEFAULT_TENANT:
            return own
        return own.model_copy(update={"api_keys": [*self.server.api_keys, *own.api_keys]})

    def api_key_tenants(self) -> dict[str, str]:
        """API key -> its tenant; empty: /v1 is open and everything is the default tenant's.

        Read on every chat request (SIGHUP may change the keys): no model copies.
        """
        found = dict.fromkeys(self.server.api_keys, DEFAULT_TENANT)
        found.update({k: name for name, t in self.tenants.items() for k in t.api_keys})
        return found

    def per_user(self, name: str) -> bool:
        """Whether tenant ``name`` gives each end user a scope of its own (its ``per_user``)."""
        own = self.tenants.get(tenant_of(name))
        return own.per_user if own else False

    def learns(self, name: str) -> bool:
        """Whether what tenant ``name`` sends is observed (its ``learn``)."""
        own = self.tenants.get(tenant_of(name))
        return own.learn if own else True

    def admin_tokens(self) -> dict[str, str | None]:
        """Admin token -> its tenant, or None for the operator's (every tenant)."""
        found: dict[str, str | None] = {
            t.admin_token: name for name, t in self.tenants.items() if t.admin_token
        }
        if self.server.admin_token:
            found[self.server.admin_token] = None
        return found

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries the YAML file's content (see load_settings).
        return (env_settings, init_settings)

    @property
    def adapters_dir(self) -> Path:
        return self.state_dir / "adapters"

    @property
    def checkpoints_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    def write_for_child(self, path: Path) -> None:
        """These settings as a consolidator child reads them (``--settings``).

        They hold the API keys, the admin token and the Redis password: owner only.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.model_dump_json())


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the offending key."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML: {' '.join(str(exc).split())}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: the key, what is wrong, and the variable that overrides it."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"invalid configuration: {key}: {err['msg']}{shown} (env {env})")
    return "\n".join(lines)


def config_path(explicit: str | Path | None = None) -> Path | None:
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the YAML file (if any) under the environment's overrides, and validate."""
    file = config_path(path)
    data = _read_yaml(file) if file else {}
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
