"""Health-check specifications: what a policy may ask to check before and after a change.

Three kinds, a pydantic discriminated union on ``kind`` (:data:`HealthCheck`), all from policy or
configuration files, never from LLM output or advisory text: :class:`HttpCheck` (status, body
substring, latency from the controller; ``url`` is a template with only ``{address}`` and
``{name}``), :class:`CommandCheck` (an argv run on the host, never a shell string) and
:class:`ProcessCheck` (a process named exactly ``name`` runs). Running them is
:mod:`patchpilot.tools.health`'s job; :class:`CheckResult` is what a run records.
"""

from __future__ import annotations

import string
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

__all__ = [
    "CHECK_ADAPTER",
    "CheckResult",
    "CommandCheck",
    "HealthCheck",
    "HttpCheck",
    "ProcessCheck",
    "check_url_template",
]

_URL_FIELDS: Final = frozenset({"address", "name"})
_PROCESS_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@._:+-"
)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_url_template(
    template: str,
    fields: frozenset[str] = _URL_FIELDS,
    allowed: str = "{address} and {name}",
) -> str:
    """``template`` if it is an http(s) URL whose only ``{placeholders}`` are ``fields``
    (plain names: no format spec, no conversion); ``allowed`` names them in the error.

    Raises:
        ValueError: malformed, another placeholder, or not http(s).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"malformed URL template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in fields or spec or conversion:
            raise ValueError(f"URL template {template!r}: only {allowed} are allowed")
    if not template.startswith(("http://", "https://")):
        raise ValueError(f"URL template {template!r} must start with http:// or https://")
    return template


class HttpCheck(_Record):
    """An HTTP request from the controller: status, optional body substring and latency."""

    kind: Literal["http"] = "http"
    url: str = Field(description="template: {address} and {name} of the inventory host")
    url_overrides: dict[str, str] = Field(
        default_factory=dict, description="host name -> URL template for that host"
    )
    expect_status: int = Field(default=200, ge=100, le=599)
    body_contains: str | None = None
    max_latency_ms: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=10, ge=0, le=1000)
    interval_s: float = Field(default=0.5, ge=0, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url_template(value)

    @field_validator("url_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            check_url_template(template)
        return value


class CommandCheck(_Record):
    """An argv run on the host; healthy when it exits ``expect_exit``."""

    kind: Literal["command"] = "command"
    argv: tuple[str, ...] = Field(min_length=1)
    expect_exit: int = Field(default=0, ge=0, le=255)
    sudo: bool = False
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    retries: int = Field(default=0, ge=0, le=1000)
    interval_s: float = Field(default=1.0, ge=0, le=300)

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            if "\x00" in arg or "\n" in arg or "\r" in arg:
                raise ValueError(f"argv element {arg!r} contains a NUL byte or a newline")
        if not value[0] or value[0].startswith("-"):
            raise ValueError(f"argv[0] {value[0]!r} must be a command, not empty or an option")
        return value


class ProcessCheck(_Record):
    """A process named exactly ``name`` (``/proc/PID/comm``) runs on the host."""

    kind: Literal["process"] = "process"
    name: str = Field(min_length=1, max_length=15, description="comm name, <= 15 characters")
    timeout_s: float = Field(default=15.0, gt=0, le=300)
    retries: int = Field(default=5, ge=0, le=1000)
    interval_s: float = Field(default=0.5, ge=0, le=300)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not set(value) <= _PROCESS_CHARS or value.startswith("-"):
            raise ValueError(f"process name {value!r}: [A-Za-z0-9@._:+-], not starting with '-'")
        return value


HealthCheck = Annotated[HttpCheck | CommandCheck | ProcessCheck, Field(discriminator="kind")]
"""Any health check; ``kind`` selects the model when loading from YAML/JSON."""

CHECK_ADAPTER: Final[TypeAdapter[HttpCheck | CommandCheck | ProcessCheck]] = TypeAdapter(
    HealthCheck
)
"""Validates a mapping into the right check model (``CHECK_ADAPTER.validate_python(data)``)."""


class CheckResult(_Record):
    """The outcome of one check on one host (after its retries)."""

    kind: Literal["http", "command", "process"]
    host: str
    target: str = Field(description="the URL, the argv or the process name checked")
    ok: bool
    attempts: int = Field(ge=1)
    latency_ms: float | None = Field(default=None, description="of the last attempt")
    status_code: int | None = Field(default=None, description="HTTP status of the last attempt")
    exit_code: int | None = Field(default=None, description="exit status of the last attempt")
    detail: str = ""
