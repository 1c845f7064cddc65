"""Settings: one YAML file plus ``PATCHPILOT_*`` environment overrides.

Precedence, highest first: explicit arguments, environment (``PATCHPILOT_SSH__CONNECT_TIMEOUT=5``
sets ``ssh.connect_timeout``), the YAML file, defaults. The YAML file is ``--config FILE``, else
``$PATCHPILOT_CONFIG``, else ``$PATCHPILOT_HOME/config.yaml`` when it exists.

All state (stores, caches, checkpoints, memory, recorded host keys) lives under one data
directory, ``home`` (``$PATCHPILOT_HOME``, default ``$XDG_DATA_HOME/patchpilot`` or
``~/.local/share/patchpilot``), so two runs with different homes never share state.

Hostile or mistyped values fail fast with a :class:`~patchpilot.core.errors.ConfigError` (exit 2)
that names where the value came from (the command-line option, the environment variable or the
settings file) and the key:

- **Environment.** Every ``PATCHPILOT_*`` variable must name a setting
  (``PATCHPILOT_<KEY>``, ``PATCHPILOT_<SECTION>__<KEY>``) or be one of
  :data:`OTHER_ENV_VARS`; anything else (``PATCHPILOT_CONCURENCY``,
  ``PATCHPILOT_SSH_CONNECT_TIMEOUT`` with one ``_``) is a usage error naming the variable and
  the closest valid name, never silently ignored. A section given as JSON
  (``PATCHPILOT_SSH='{"connect_timeout": 5}'``) must be valid JSON.
- **Home.** An empty ``home`` (``PATCHPILOT_HOME=``, ``--home ''``) is refused rather than
  meaning the current directory; unset it for the default.
- **Numbers.** Timeouts are finite and bounded (``ssh.connect_timeout`` <= 300 s,
  ``ssh.command_timeout`` <= 86,400 s, ``feeds.timeout`` <= 3,600 s); sizes and counts have
  upper bounds too.
- **Files.** A key written twice in the YAML file is refused (:mod:`patchpilot.core.configfile`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from patchpilot.core.configfile import read_yaml_mapping
from patchpilot.core.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "OTHER_ENV_VARS",
    "AcceptanceSettings",
    "DiscoverySettings",
    "NotificationSettings",
    "SSHSettings",
    "ServiceSettings",
    "Settings",
    "check_environment",
    "config_file_path",
    "format_validation_error",
    "load_settings",
    "settings_env_names",
]

ENV_PREFIX: Final = "PATCHPILOT_"
"""Prefix of every patchpilot environment variable."""

OTHER_ENV_VARS: Final[Mapping[str, str]] = {
    "PATCHPILOT_CONFIG": "the settings file",
    "PATCHPILOT_LAB_CACHE": "the lab's base-image cache directory",
    "PATCHPILOT_FAILPOINTS": "fault injection for the crash-recovery tests",
    "PATCHPILOT_TOKEN": "an API token: the CLI acts as its user (patchpilot users add)",
}
"""``PATCHPILOT_*`` variables that are not settings but are read by patchpilot."""

_CONFIG_DATA: ContextVar[dict[str, Any] | None] = ContextVar("patchpilot_config_data", default=None)


def default_home() -> Path:
    """The default data directory (XDG data home; a relative ``XDG_DATA_HOME`` is ignored)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "patchpilot"


class SSHSettings(BaseModel):
    """How patchpilot talks SSH. There is deliberately no password setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: float = Field(
        default=10.0, gt=0, le=300, allow_inf_nan=False, description="TCP + handshake, seconds"
    )
    command_timeout: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="default seconds per command (at most a day)",
    )
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
    max_output_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    default_user: str | None = None
    default_key_file: Path | None = None
    use_ssh_config: bool = Field(
        default=True,
        description="read HostName, Port, User, IdentityFile and ProxyJump of inventory hosts "
        "from ssh.config_file (default ~/.ssh/config); the inventory's own values win",
    )
    config_file: Path | None = Field(
        default=None,
        description="the OpenSSH client config to read (default ~/.ssh/config, when it exists); "
        "a configured file must exist",
    )


class FeedSettings(BaseModel):
    """How advisory feeds are fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_update: bool = Field(
        default=True, description="a scan fetches feeds itself when the store has none"
    )
    timeout: float = Field(
        default=30.0, gt=0, le=3600, allow_inf_nan=False, description="seconds per HTTP request"
    )
    retries: int = Field(default=4, ge=1, le=10, description="attempts on 429/5xx/connection")
    max_download_bytes: int = Field(default=512 * 1024 * 1024, ge=1024, le=16 * 1024**3)


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
    loaded_packages: bool = Field(
        default=True,
        description="collect which installed packages listening and running processes have "
        "loaded (/proc/PID/maps joined with dpkg's file lists; Debian family; needs sudo): "
        "the 'reachable' and 'restart' signals of prioritization",
    )


def _check_http_url(value: str, example: str) -> str:
    """``value`` if it is an http(s) URL with a host: never a file, an ftp server or a word."""
    from urllib.parse import urlsplit

    if len(value) > 2048 or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(
            "must be an http:// or https:// URL of at most 2048 characters, without "
            f"spaces or control characters, {example}"
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"must be an http:// or https:// URL, {example}") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ValueError(f"must be an http:// or https:// URL ({scheme}), {example}")
    if not parts.hostname:
        raise ValueError(f"must name a host, {example}")
    return value


_ENV_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_HEADER_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")  # an RFC 9110 token
_HEADER_ENV_REF: Final = re.compile(r"\$\{ENV:(" + _ENV_NAME + r")\}")
_MANAGED_HEADERS: Final = frozenset(
    {
        "accept-encoding",  # the response size cap decodes only what it asks for
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "host",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers the HTTP layer sets itself: ``llm.headers`` may not replace them."""


def _header_env_names(headers: Mapping[str, str]) -> list[str]:
    """The environment variables ``headers`` refer to (``${ENV:NAME}``), in order, once each."""
    names: list[str] = []
    for raw in headers.values():
        names.extend(n for n in _HEADER_ENV_REF.findall(raw) if n not in names)
    return names


def _resolve_headers(
    headers: Mapping[str, str], environ: Mapping[str, str], *, label: str, key: str
) -> dict[str, str]:
    """``headers`` with every ``${ENV:NAME}`` replaced from ``environ`` (LLM and webhook
    headers alike); an unset variable or a value that cannot be a header value is a
    :class:`ConfigError` naming the header and the variable, never the value."""
    resolved: dict[str, str] = {}
    for name, raw in headers.items():
        missing = [v for v in _HEADER_ENV_REF.findall(raw) if v not in environ]
        if missing:
            raise ConfigError(
                f"{label} {name!r} refers to environment variable {missing[0]}, which is "
                "unset: export it or remove the header",
                key=f"{key}.{name}",
            )
        value = _HEADER_ENV_REF.sub(lambda m: environ[m.group(1)], raw)
        problem = _header_value_problem(value)
        if problem is not None:
            names = ", ".join(_HEADER_ENV_REF.findall(raw))
            raise ConfigError(
                f"{label} {name!r}, once {names} is replaced, {problem}", key=f"{key}.{name}"
            )
        resolved[name] = value
    return resolved


def _header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as a header value (``None``: it can)."""
    if len(value) > 8192:
        return "is longer than 8192 characters"
    if any(ch in "\r\n\0" for ch in value):
        return "contains CR, LF or NUL (header injection)"
    if any(not (ch == "\t" or " " <= ch <= "~") for ch in value):
        return "must be printable ASCII"
    return None


class LLMSettings(BaseModel):
    """An OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, llama.cpp server).

    Unset ``base_url`` (the default) means no LLM: every agent runs its deterministic core.
    The API key is read from the environment variable named by ``api_key_env``, never from a
    file. ``headers`` (for LLM gateways) are sent on chat and embedding requests; a value may
    name environment variables as ``${ENV:NAME}`` so secrets stay out of the settings file.
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
    timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="seconds per network operation (connect, each read or write)",
    )
    deadline: float = Field(
        default=30.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="total seconds per LLM call: connection, every read, every retry and "
        "Retry-After wait; past it the call falls back to the deterministic core",
    )
    max_response_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest response accepted (decompressed), enforced while reading",
    )
    max_retries: int = Field(
        default=3, ge=0, le=10, description="retries on 429/5xx/timeouts/invalid JSON"
    )
    max_tokens: int = Field(
        default=1024,
        ge=16,
        le=131_072,
        description="per answer (reasoning models count their reasoning in it too)",
    )
    token_limit_param: Literal["auto", "max_completion_tokens", "max_tokens"] = Field(
        default="auto",
        description="how max_tokens is sent: auto sends max_completion_tokens and switches to "
        "max_tokens when the server rejects it (remembered per endpoint and model); servers "
        "that silently ignore max_completion_tokens need max_tokens here",
    )
    temperature: float | None = Field(
        default=0.0,
        ge=0,
        le=2,
        description="null: never sent (the model's default); a model that rejects it gets "
        "none, learned from its error and remembered",
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        default=None, description="sent only when set: reasoning models (o-series, gpt-5)"
    )
    max_calls_per_run: int = Field(default=50, ge=1, le=10_000)
    max_tokens_per_run: int = Field(default=200_000, ge=1_000, le=100_000_000)
    agent_max_steps: int = Field(
        default=6,
        ge=1,
        le=50,
        description="chat agent: most model turns per question (the final answer included)",
    )
    agent_max_tool_calls: int = Field(
        default=12,
        ge=0,
        le=200,
        description="chat agent: most read-only tool calls per question (refused ones count)",
    )
    structured_output: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="json_schema: strict structured outputs; json_object: servers without it",
    )
    cache: bool = Field(default=True, description="cache answers by prompt hash under HOME")
    embeddings_model: str | None = Field(
        default=None, description="use the endpoint's /embeddings for the vector memory"
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="extra HTTP headers for an LLM gateway, on chat and embedding requests; "
        "a value may hold ${ENV:NAME} (replaced by that environment variable when the client "
        "is made) so secrets stay out of this file",
    )
    allow_authorization_header: bool = Field(
        default=False,
        description="let llm.headers replace Authorization (else the key of api_key_env is "
        "sent as Authorization: Bearer)",
    )

    @field_validator("base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """Only an http(s) URL with a host: never a file, an ftp server or a bare word."""
        if value is None:
            return None
        return _check_http_url(value, "e.g. http://127.0.0.1:11434/v1 or https://api.openai.com/v1")

    @field_validator("headers", mode="after")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        """Header names are tokens, values cannot break the request, ``${...}`` is ENV only."""
        seen: set[str] = set()
        for name, raw in value.items():
            lower = name.lower()
            if not _HEADER_NAME.match(name):
                raise ValueError(
                    f"header name {name[:40]!r} is not an HTTP token (letters, digits and "
                    "!#$%&'*+.^_`|~- only)"
                )
            if lower in seen:
                raise ValueError(f"header {name!r} is given twice (names ignore case)")
            seen.add(lower)
            if lower in _MANAGED_HEADERS or lower.startswith("x-stainless-"):
                raise ValueError(f"header {name!r} is set by patchpilot's HTTP client itself")
            problem = _header_value_problem(raw)
            if problem is not None:
                raise ValueError(f"the value of header {name!r} {problem}")
            if "${" in _HEADER_ENV_REF.sub("", raw):
                raise ValueError(
                    f"the value of header {name!r} has a '${{' that is not ${{ENV:NAME}}; "
                    "only environment references are replaced"
                )
        return value

    @model_validator(mode="after")
    def _authorization_allowed(self) -> LLMSettings:
        if not self.allow_authorization_header and any(
            name.lower() == "authorization" for name in self.headers
        ):
            raise ValueError(
                "llm.headers may not replace Authorization (the key of llm.api_key_env is "
                "sent there); set llm.allow_authorization_header: true if the gateway needs "
                "its own Authorization"
            )
        return self

    @property
    def configured(self) -> bool:
        """Whether an endpoint is configured."""
        return self.base_url is not None

    def header_env_names(self) -> list[str]:
        """The environment variables ``headers`` refer to (``${ENV:NAME}``), in order."""
        return _header_env_names(self.headers)

    def resolved_headers(self, environ: Mapping[str, str]) -> dict[str, str]:
        """``headers`` with every ``${ENV:NAME}`` replaced from ``environ``.

        Raises:
            ConfigError: a referenced variable is unset, or its value cannot be sent in a
                header (CR/LF, not printable ASCII); the error names the header and the
                variable, never the value.
        """
        return _resolve_headers(self.headers, environ, label="header", key="llm.headers")


class TracingSettings(BaseModel):
    """Whether LangSmith/LangChain tracing may send graph traces off this machine.

    Traces hold what the graphs see: host names, package lists, findings, prompts. Off (the
    default) means off even when ``LANGSMITH_TRACING=true`` is in the environment: every
    entry point neutralises those variables at start (:mod:`patchpilot.core.tracing`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="send graph traces to endpoint")
    endpoint: str | None = Field(
        default=None,
        description="where traces go, e.g. a self-hosted LangSmith; null: LangSmith's own "
        "(https://api.smith.langchain.com) or LANGSMITH_ENDPOINT from the environment",
    )
    project: str | None = Field(
        default=None, min_length=1, max_length=128, description="the LangSmith project name"
    )
    api_key_env: str = Field(
        default="LANGSMITH_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the environment variable holding the tracing API key",
    )

    @field_validator("endpoint", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_http_url(value, "e.g. https://api.smith.langchain.com")


class MemorySettings(BaseModel):
    """The vector memory (Chroma): embedded under HOME/memory, or a server by URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, description="Chroma server, e.g. http://127.0.0.1:8000")
    embedding: Literal["hashing", "openai"] = Field(
        default="hashing",
        description="hashing: offline, no download; openai: llm.base_url + llm.embeddings_model",
    )
    top_k: int = Field(default=5, ge=1, le=100, description="items recalled per query")


class ServiceSettings(BaseModel):
    """The service (``patchpilot serve``): its run executor (:mod:`patchpilot.app.executor`)
    and its REST API (:mod:`patchpilot.api`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default=2, ge=1, le=64, description="runs and scans executed at once")
    tick: float = Field(
        default=5.0,
        ge=0.05,
        le=3600,
        description="seconds between scheduler ticks (due schedules, expired approvals, "
        "windows that opened)",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=255,
        description="address the API listens on (loopback; put TLS in a reverse proxy)",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port of the API")
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="largest request body accepted (larger: 413)",
    )
    max_wait: float = Field(
        default=60.0,
        gt=0,
        le=600,
        allow_inf_nan=False,
        description="longest GET /api/v1/runs/{id}/wait, in seconds",
    )
    metrics_public: bool = Field(
        default=False, description="serve /metrics without a token (default: a viewer token)"
    )
    session_ttl: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="seconds a web dashboard login lasts (the session cookie and its server-side "
        "record expire together)",
    )


_ADDRESS: Final = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")
"""A plain e-mail address (``ops@example.org``): no display name, no spaces or controls."""


def _check_header_env_values(value: dict[str, str]) -> dict[str, str]:
    """Header names are tokens, values cannot break a request, ``${...}`` is ENV only."""
    seen: set[str] = set()
    for name, raw in value.items():
        lower = name.lower()
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name[:40]!r} is not an HTTP token")
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (names ignore case)")
        seen.add(lower)
        if lower in _MANAGED_HEADERS:
            raise ValueError(f"header {name!r} is set by patchpilot's HTTP client itself")
        problem = _header_value_problem(raw)
        if problem is not None:
            raise ValueError(f"the value of header {name!r} {problem}")
        if "${" in _HEADER_ENV_REF.sub("", raw):
            raise ValueError(
                f"the value of header {name!r} has a '${{' that is not ${{ENV:NAME}}; "
                "only environment references are replaced"
            )
    return value


class WebhookSettings(BaseModel):
    """One webhook: patchpilot POSTs each event as JSON (``{event, run_id, title, detail,
    link, at}``) to ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="http(s) URL the events are POSTed to")
    headers: dict[str, str] = Field(
        default_factory=dict,
        max_length=32,
        description="extra headers (e.g. Authorization: Bearer ${ENV:HOOK_TOKEN}); ${ENV:NAME} "
        "is replaced from the environment when the service starts",
    )
    events: list[str] | None = Field(
        default=None, description="the event kinds sent here; null: every kind"
    )

    @field_validator("url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value, "e.g. https://hooks.example.org/patchpilot")

    @field_validator("headers", mode="after")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_header_env_values(value)

    @field_validator("events", mode="after")
    @classmethod
    def _known_events(cls, value: list[str] | None) -> list[str] | None:
        return _check_event_kinds(value)

    def env_names(self) -> list[str]:
        """The environment variables ``headers`` refer to (``${ENV:NAME}``), in order."""
        return _header_env_names(self.headers)

    def resolved_headers(self, environ: Mapping[str, str]) -> dict[str, str]:
        """``headers`` with every ``${ENV:NAME}`` replaced from ``environ``.

        Raises:
            ConfigError: a referenced variable is unset or its value cannot be a header
                value; the error names the header and the variable, never the value.
        """
        return _resolve_headers(
            self.headers, environ, label="webhook header", key="notifications.webhooks.headers"
        )


class SMTPSettings(BaseModel):
    """E-mail through an SMTP server; the password only ever comes from the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._:-]+$")
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = Field(default=False, description="upgrade the connection with STARTTLS")
    sender: str = Field(description="the From address, e.g. patchpilot@example.org")
    to: list[str] = Field(min_length=1, max_length=100, description="recipient addresses")
    username: str | None = Field(
        default=None, min_length=1, max_length=256, description="log in as (needs password_env)"
    )
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the SMTP password",
    )
    events: list[str] | None = Field(
        default=None, description="the event kinds mailed; null: every kind"
    )

    @field_validator("sender", mode="after")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError("must be a plain e-mail address, e.g. patchpilot@example.org")
        return value

    @field_validator("to", mode="after")
    @classmethod
    def _to_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _ADDRESS.match(address):
                raise ValueError(
                    f"{address[:80]!r} is not a plain e-mail address (e.g. ops@example.org)"
                )
        return value

    @field_validator("username", mode="after")
    @classmethod
    def _username_printable(cls, value: str | None) -> str | None:
        if value is not None and any(not (" " < ch <= "~") for ch in value):
            raise ValueError("must be printable ASCII without spaces")
        return value

    @field_validator("events", mode="after")
    @classmethod
    def _known_events(cls, value: list[str] | None) -> list[str] | None:
        return _check_event_kinds(value)

    @model_validator(mode="after")
    def _login_needs_password(self) -> SMTPSettings:
        if (self.username is None) != (self.password_env is None):
            raise ValueError(
                "username and password_env go together: set both to log in, or neither"
            )
        return self


def _check_event_kinds(value: list[str] | None) -> list[str] | None:
    from patchpilot.core.events import EVENT_KINDS

    if value is None:
        return None
    for kind in value:
        if kind not in EVENT_KINDS:
            close = difflib.get_close_matches(kind, EVENT_KINDS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"unknown event {kind[:60]!r}{hint}; events are {', '.join(EVENT_KINDS)}"
            )
    return value


class NotificationSettings(BaseModel):
    """Where events (a run awaiting approval, a rollback...) are sent:
    :mod:`patchpilot.app.notify`. Delivery never blocks a run (a bounded queue and a
    background thread, retried)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: list[WebhookSettings] = Field(default_factory=list, max_length=32)
    smtp: SMTPSettings | None = None
    base_url: str = Field(
        default="http://127.0.0.1:8080",
        description="the service as people reach it: links in events start with it",
    )
    queue_size: int = Field(
        default=1000, ge=1, le=100_000, description="events waiting; past it new ones drop"
    )
    attempts: int = Field(default=3, ge=1, le=10, description="delivery attempts per channel")
    timeout: float = Field(
        default=10.0, gt=0, le=120, allow_inf_nan=False, description="seconds per attempt"
    )
    backoff: float = Field(
        default=1.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="seconds before the 2nd attempt, doubled for each next one",
    )

    @field_validator("base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_http_url(value, "e.g. https://patchpilot.example.org").rstrip("/")

    def env_names(self) -> list[str]:
        """Every environment variable the channels read (header values, SMTP password)."""
        names = [n for hook in self.webhooks for n in hook.env_names()]
        if self.smtp is not None and self.smtp.password_env is not None:
            names.append(self.smtp.password_env)
        return names


class AcceptanceSettings(BaseModel):
    """Risk acceptances (``patchpilot accept``; :mod:`patchpilot.core.acceptance`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = Field(
        default=None, description="the accept file; default HOME/acceptances.yaml"
    )
    max_days: int = Field(
        default=365, ge=1, le=3650, description="longest acceptance, in days after its creation"
    )

    @field_validator("file", mode="before")
    @classmethod
    def _file_not_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: give a file, or unset it for HOME/acceptances.yaml")
        return value


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
    acceptances: AcceptanceSettings = Field(default_factory=AcceptanceSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)

    @field_validator("home", "inventory", "policy", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # Path("") is ".": an empty value would silently mean the current directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "is empty (it would mean the current directory): give a directory or file, "
                "or unset it for the default"
            )
        return value

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
        data = _CONFIG_DATA.get()
        if data is not None:  # read (strictly: no duplicate keys) by load_settings
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
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
    def acceptances_path(self) -> Path:
        """The accept file (``acceptances.file``, else HOME/acceptances.yaml)."""
        if self.acceptances.file is not None:
            return self.acceptances.file.expanduser()
        return self.home / "acceptances.yaml"

    @property
    def known_hosts_path(self) -> Path:
        """patchpilot's own known_hosts (keys recorded by trust-on-first-use land here)."""
        return self.home / "known_hosts"

    @property
    def policy_path(self) -> Path:
        """The policy file in force (the bundled ``configs/policy.yaml`` when unset)."""
        if self.policy is not None:
            return self.policy
        return Path(str(resources.files("patchpilot.configs").joinpath("policy.yaml"))).resolve()


def config_file_path(explicit: Path | None = None) -> Path | None:
    """Which YAML settings file applies, or None (see the module docstring).

    Raises:
        ConfigError: ``PATCHPILOT_CONFIG`` is set but empty.
    """
    if explicit is not None:
        return explicit.expanduser()
    env = os.environ.get("PATCHPILOT_CONFIG")
    if env is not None and not env.strip():
        raise ConfigError(
            "environment variable PATCHPILOT_CONFIG is set but empty: name a settings file "
            "or unset it"
        )
    if env:
        return Path(env).expanduser()
    home = (
        Path(os.environ["PATCHPILOT_HOME"]).expanduser()
        if os.environ.get("PATCHPILOT_HOME", "").strip()
        else default_home()
    )
    candidate = home / "config.yaml"
    return candidate if candidate.is_file() else None


def format_validation_error(exc: ValidationError) -> tuple[str, str]:
    """Return (dotted key, reason) of the first error of a pydantic ValidationError."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    reason = err["msg"]
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        reason = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
    if err["type"] == "extra_forbidden":
        reason = "unknown key (check the spelling; see configs/settings.yaml)"
    if len(exc.errors()) > 1:
        reason += f" (and {len(exc.errors()) - 1} more problem(s))"
    return key, reason


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model a field holds (``SSHSettings``, also inside ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, tuple, dict):  # items have no variables of their own
        return None
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def settings_env_names() -> dict[str, str]:
    """Every environment variable that sets a setting, with its dotted key.

    ``PATCHPILOT_CONCURRENCY`` -> ``concurrency``, ``PATCHPILOT_SSH`` -> ``ssh`` (a JSON
    object), ``PATCHPILOT_SSH__CONNECT_TIMEOUT`` -> ``ssh.connect_timeout``, and so on for
    every section and key.
    """
    names: dict[str, str] = {}

    def walk(model: type[BaseModel], prefix: str, dotted: str) -> None:
        for name, field in model.model_fields.items():
            var, key = f"{prefix}{name.upper()}", f"{dotted}{name}"
            names[var] = key
            sub = _model_of(field.annotation)
            if sub is not None:
                walk(sub, f"{var}__", f"{key}.")

    walk(Settings, ENV_PREFIX, "")
    return names


def check_environment(environ: Mapping[str, str], *, allowed: Iterable[str] = ()) -> None:
    """Refuse a ``PATCHPILOT_*`` variable that names no setting (a typo would be ignored).

    Args:
        environ: the environment (``os.environ``).
        allowed: more accepted names (e.g. ``llm.api_key_env`` when it starts with the prefix).

    Raises:
        ConfigError: the first unknown variable, named, with the closest valid name.
    """
    valid = {*settings_env_names(), *OTHER_ENV_VARS, *(a.upper() for a in allowed)}
    for var in sorted(environ):
        upper = var.upper()  # pydantic-settings reads the environment case-insensitively
        if not upper.startswith(ENV_PREFIX) or upper in valid:
            continue
        close = difflib.get_close_matches(upper, sorted(valid), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"unknown environment variable {var}: it names no setting{hint} "
            f"({ENV_PREFIX}<KEY> or {ENV_PREFIX}<SECTION>__<KEY>, e.g. "
            f"{ENV_PREFIX}SSH__CONNECT_TIMEOUT; see configs/settings.yaml). "
            "Fix the spelling or unset it"
        )


def _env_var_for(key: str, environ: Mapping[str, str]) -> str | None:
    """The environment variable that set dotted ``key`` (or the section holding it), if any."""
    by_upper = {name.upper(): name for name in environ}
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        var = ENV_PREFIX + "__".join(p.upper() for p in parts[:end])
        if var in by_upper:
            return by_upper[var]
    return None


_FIELD_IN_SETTINGS_ERROR: Final = re.compile(r'field "(?P<field>[^"]+)"')


def _settings_error(exc: SettingsError, environ: Mapping[str, str]) -> ConfigError:
    """A pydantic-settings source error (malformed JSON in a variable) as a ConfigError."""
    found = _FIELD_IN_SETTINGS_ERROR.search(str(exc))
    field = found["field"] if found else "(unknown)"
    prefix = f"{ENV_PREFIX}{field.upper()}"
    variables = sorted(
        name for name in environ if name.upper() == prefix or name.upper().startswith(prefix + "__")
    )
    cause = exc.__cause__
    detail = f": {cause}" if isinstance(cause, json.JSONDecodeError | ValueError) else ""
    names = ", ".join(variables) or prefix
    return ConfigError(
        f"environment variable {names} is not valid JSON{detail}. A section is given as a "
        f"JSON object (e.g. {ENV_PREFIX}SSH='{{\"connect_timeout\": 5}}') or one key at a "
        f"time (e.g. {ENV_PREFIX}SSH__CONNECT_TIMEOUT=5)",
        key=field,
    )


def load_settings(
    config_file: Path | None = None,
    *,
    option_names: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Load settings, failing fast with the source, key and reason on any problem.

    Args:
        config_file: explicit YAML file (``--config``); must exist when given.
        option_names: the command-line option of each override (``{"home": "--home"}``), so
            an error names the option the value came from.
        **overrides: values that beat every other source (e.g. from CLI flags).

    Raises:
        ConfigError: the file is missing, not YAML or has a duplicate key; a value is invalid
            (naming the option, environment variable or file it came from); a ``PATCHPILOT_*``
            variable names no setting or holds malformed JSON.
    """
    environ = dict(os.environ)
    path = config_file_path(config_file)
    data = read_yaml_mapping(path) if path is not None else None
    token = _CONFIG_DATA.set(data)
    try:
        settings = Settings(**overrides)
    except SettingsError as exc:
        raise _settings_error(exc, environ) from exc
    except ValidationError as exc:
        key, reason = format_validation_error(exc)
        top = key.split(".", 1)[0]
        var = _env_var_for(key, environ)
        if top in overrides:
            option = (option_names or {}).get(top, top)
            raise ConfigError(f"{reason} (from {option})", key=key) from exc
        if var is not None:
            raise ConfigError(f"{reason} (from environment variable {var})", key=key) from exc
        where = str(path) if path else "(no settings file)"
        raise ConfigError(reason, file=where, key=key) from exc
    finally:
        _CONFIG_DATA.reset(token)
    named = [settings.llm.api_key_env, *settings.llm.header_env_names()]
    named += settings.notifications.env_names()
    check_environment(environ, allowed=[*named, settings.tracing.api_key_env])
    return settings
