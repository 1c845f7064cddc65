"""Settings: one YAML file plus ``PATCHPILOT_*`` environment overrides.

Precedence, highest first: explicit arguments, environment (``PATCHPILOT_SSH__CONNECT_TIMEOUT=5``
sets ``ssh.connect_timeout``), the YAML file, defaults. The YAML file is ``--config FILE``, else
``$PATCHPILOT_CONFIG``, else ``$PATCHPILOT_HOME/config.yaml`` when it exists.

All state (stores, caches, checkpoints, memory, recorded host keys) lives under one data
directory, ``home`` (``$PATCHPILOT_HOME``, default ``$XDG_DATA_HOME/patchpilot`` or
``~/.local/share/patchpilot``), so two runs with different homes never share state.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from patchpilot.configfile import read_yaml_mapping
from patchpilot.errors import ConfigError

__all__ = [
    "DiscoverySettings",
    "SSHSettings",
    "Settings",
    "config_file_path",
    "format_validation_error",
    "load_settings",
]

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("patchpilot_config_file", default=None)


def default_home() -> Path:
    """The default data directory (XDG data home)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "patchpilot"


class SSHSettings(BaseModel):
    """How patchpilot talks SSH. There is deliberately no password setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(default=10.0, gt=0, description="TCP + handshake, seconds")
    command_timeout: float = Field(default=600.0, gt=0, description="default per command")
    connect_retries: int = Field(default=3, ge=1, le=10, description="attempts for set-up only")
    known_hosts: Path | None = Field(
        default=None,
        description="extra known_hosts file; ~/.ssh/known_hosts and HOME/known_hosts always load",
    )
    trust_on_first_use: bool = Field(
        default=False, description="accept and record unknown host keys (never changed ones)"
    )
    use_agent: bool = True
    look_for_keys: bool = Field(default=True, description="try ~/.ssh/id_* when no key_file")
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    default_user: str | None = None
    default_key_file: Path | None = None


class FeedSettings(BaseModel):
    """How advisory feeds are fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_update: bool = Field(
        default=True, description="a scan fetches feeds itself when the store has none"
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds per HTTP request")
    retries: int = Field(default=4, ge=1, le=10, description="attempts on 429/5xx/connection")
    max_download_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)


class DiscoverySettings(BaseModel):
    """What discovery collects beyond OS, kernel, packages and reboot state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    changelogs: Literal["all", "security", "none"] = Field(
        default="all",
        description="read the CVEs each pending update fixes from its Debian changelog "
        "(downloaded by the host from its own repositories, cached per source version): "
        "for every pending update, only security-suite ones, or none",
    )
    services: bool = Field(default=True, description="collect listening sockets (needs sudo)")
    restarts: bool = Field(
        default=True,
        description="collect processes using deleted libraries (needrestart -b, else "
        "/proc/*/maps; needs sudo)",
    )
    apt_sources: bool = Field(
        default=True, description="collect apt's sources and classify update origins"
    )


class LLMSettings(BaseModel):
    """An OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp server).

    Unset ``base_url`` (the default) means no LLM: every agent runs its deterministic core.
    The API key is read from the environment variable named by ``api_key_env``, never from a
    file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(
        default=None, description="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1"
    )
    model: str = Field(default="gpt-4o-mini", min_length=1)
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the key",
    )
    timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per request")
    max_retries: int = Field(
        default=3, ge=0, le=10, description="retries on 429/5xx/timeouts/invalid JSON"
    )
    max_tokens: int = Field(default=1024, ge=16, le=32768, description="per answer")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_calls_per_run: int = Field(default=50, ge=1, le=10_000)
    max_tokens_per_run: int = Field(default=200_000, ge=1_000, le=100_000_000)
    structured_output: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="json_schema: strict structured outputs; json_object: servers without it",
    )
    cache: bool = Field(default=True, description="cache answers by prompt hash under HOME")
    embeddings_model: str | None = Field(
        default=None, description="use the endpoint's /embeddings for the vector memory"
    )

    @property
    def configured(self) -> bool:
        """Whether an endpoint is configured."""
        return self.base_url is not None


class MemorySettings(BaseModel):
    """The vector memory (Chroma): embedded under HOME/memory, or a server by URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, description="Chroma server, e.g. http://127.0.0.1:8000")
    embedding: Literal["hashing", "openai"] = Field(
        default="hashing",
        description="hashing: offline, no download; openai: llm.base_url + llm.embeddings_model",
    )
    top_k: int = Field(default=5, ge=1, le=100, description="items recalled per query")


class Settings(BaseSettings):
    """patchpilot's settings; see the module docstring for where they come from."""

    model_config = SettingsConfigDict(
        env_prefix="PATCHPILOT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: Path = Field(default_factory=default_home, description="data directory for all state")
    inventory: Path | None = Field(default=None, description="default inventory file")
    policy: Path | None = Field(default=None, description="policy.yaml; bundled default if unset")
    concurrency: int = Field(default=10, ge=1, le=512, description="hosts worked on at once")
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_format: Literal["console", "json"] = "console"
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    feeds: FeedSettings = Field(default_factory=FeedSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)

    @field_validator("home", "inventory", "policy", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments > environment > YAML file > defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    # -- derived locations: everything stateful lives under home ----------------------
    @property
    def store_path(self) -> Path:
        """SQLite store of inventories, advisories, findings and runs."""
        return self.home / "patchpilot.db"

    @property
    def cache_dir(self) -> Path:
        """Feed download cache."""
        return self.home / "cache"

    @property
    def checkpoint_path(self) -> Path:
        """LangGraph SQLite checkpoints."""
        return self.home / "checkpoints.db"

    @property
    def memory_dir(self) -> Path:
        """Chroma vector memory."""
        return self.home / "memory"

    @property
    def known_hosts_path(self) -> Path:
        """patchpilot's own known_hosts (keys recorded by trust-on-first-use land here)."""
        return self.home / "known_hosts"

    @property
    def policy_path(self) -> Path:
        """The policy file in force (the bundled ``configs/policy.yaml`` when unset)."""
        if self.policy is not None:
            return self.policy
        return Path(__file__).resolve().parent.parent / "configs" / "policy.yaml"


def config_file_path(explicit: Path | None = None) -> Path | None:
    """Which YAML settings file applies, or None (see the module docstring)."""
    if explicit is not None:
        return explicit.expanduser()
    env = os.environ.get("PATCHPILOT_CONFIG")
    if env:
        return Path(env).expanduser()
    home = (
        Path(os.environ["PATCHPILOT_HOME"]).expanduser()
        if os.environ.get("PATCHPILOT_HOME")
        else default_home()
    )
    candidate = home / "config.yaml"
    return candidate if candidate.is_file() else None


def format_validation_error(exc: ValidationError) -> tuple[str, str]:
    """Return (dotted key, reason) of the first error of a pydantic ValidationError."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        reason = "unknown key (check the spelling; see configs/settings.yaml)"
    if len(exc.errors()) > 1:
        reason += f" (and {len(exc.errors()) - 1} more problem(s))"
    return key, reason


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings, failing fast with the file, key and reason on any problem.

    Args:
        config_file: explicit YAML file (``--config``); must exist when given.
        **overrides: values that beat every other source (e.g. from CLI flags).

    Raises:
        ConfigError: the file is missing, not YAML, or a value is invalid.
    """
    path = config_file_path(config_file)
    if path is not None:
        read_yaml_mapping(path)  # fail early, naming the file, on a missing or non-YAML file
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        key, reason = format_validation_error(exc)
        env_name = "PATCHPILOT_" + key.upper().replace(".", "__")
        where = str(path) if path else "(no settings file)"
        raise ConfigError(f"{reason} (or environment {env_name})", file=where, key=key) from exc
    finally:
        _CONFIG_FILE.reset(token)
