"""What each endpoint and model accepts: the token-limit parameter and ``temperature``.

OpenAI's reasoning models (o-series, gpt-5) refuse ``max_tokens`` ("Unsupported parameter:
'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.", code
``unsupported_parameter``) and any ``temperature`` but the default ("Unsupported value:
'temperature' does not support 0 with this model. Only the default (1) value is supported.",
code ``unsupported_value``); some older OpenAI-compatible servers refuse
``max_completion_tokens`` instead. :class:`~patchpilot.tools.llm.client.LLMClient` sends
``max_completion_tokens`` and ``temperature`` first; when a 400 names one of them as
unsupported (:func:`rejected_parameter`) it sends the request once more without it (the other
token parameter, or no temperature) and remembers that here, per (endpoint, model):

* for the process (every client made afterwards starts with the adjusted request), and
* on disk, in ``<cache_dir>/llm/endpoints.json`` (:class:`ParamMemory`), so the next process
  does not pay the 400 again. Writes take an exclusive ``flock`` on ``endpoints.json.lock``,
  re-read the file, change one entry and replace the file atomically, so concurrent processes
  never lose each other's entries; a file that does not validate is ignored (and replaced at
  the next write). A process reads the file once per (endpoint, model), the first time it
  needs it; what another process learns later costs this one at most one 400 of its own.

A 400 that names another parameter, or names the same one a second time, stays an error: at
most one adjustment per parameter per call, so there is no loop. ``llm.token_limit_param``
(other than ``auto``) and ``llm.temperature: null`` fix the request shape and turn the learning
off for that parameter.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchpilot.core.models import utcnow

__all__ = [
    "PARAMS_FILE",
    "ParamMemory",
    "RequestShape",
    "TokenParam",
    "rejected_parameter",
]

_log = structlog.get_logger(__name__)

TokenParam = Literal["max_completion_tokens", "max_tokens"]
Adjustable = Literal["max_completion_tokens", "max_tokens", "temperature"]

PARAMS_FILE: Final = "endpoints.json"
"""Name of the file, under ``<cache_dir>/llm``, that remembers the adjustments."""

_MAX_FILE_BYTES: Final = 1024 * 1024
_MAX_ENTRIES: Final = 1000
_ADJUSTABLE: Final[tuple[Adjustable, ...]] = ("max_completion_tokens", "max_tokens", "temperature")
_REFUSAL_WORDS: Final = (
    "unsupported",
    "not supported",
    "unrecognized",
    "unrecognised",
    "unknown",
    "not permitted",
    "not allowed",
    "extra inputs",
    "extra fields",
    "only the default",
)


@dataclass(frozen=True, slots=True)
class RequestShape:
    """How a chat request carries the token limit and the temperature."""

    limit_param: TokenParam = "max_completion_tokens"
    send_temperature: bool = True

    def sends(self, param: Adjustable) -> bool:
        """Whether a request of this shape carries ``param``."""
        return self.send_temperature if param == "temperature" else param == self.limit_param

    def without(self, param: Adjustable) -> RequestShape:
        """The shape that no longer sends ``param`` (the other token parameter instead)."""
        if param == "temperature":
            return replace(self, send_temperature=False)
        other: TokenParam = (
            "max_tokens" if param == "max_completion_tokens" else "max_completion_tokens"
        )
        return replace(self, limit_param=other)


def rejected_parameter(status: int, body: object, message: str) -> Adjustable | None:
    """The request parameter a 400/422 refuses as unsupported, if it is one we can drop.

    OpenAI names it in ``error.param`` with code ``unsupported_parameter`` or
    ``unsupported_value``; other servers only in the message (``Unsupported parameter:
    'max_tokens' ...``, pydantic's ``Extra inputs are not permitted`` with the field's name).
    A message that names the parameter without saying it is unsupported (e.g. a value out of
    range) is not a rejection of the parameter.

    Args:
        status: The HTTP status.
        body: The parsed error body (``{"error": {...}}`` or the error object itself).
        message: The error message.
    """
    if status not in (400, 422):
        return None
    error: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        inner = body.get("error")
        error = inner if isinstance(inner, Mapping) else body
    param = error.get("param")
    code = str(error.get("code") or "").lower()
    text = " ".join(str(part) for part in (message, error.get("message") or "")).lower()
    if isinstance(param, str) and param in _ADJUSTABLE:
        if code in ("unsupported_parameter", "unsupported_value") or _says_unsupported(text):
            return param
        return None
    if not _says_unsupported(text):
        return None
    named = [p for p in _ADJUSTABLE if _names(text, p)]
    if "max_tokens" in named and "max_completion_tokens" in named:
        # "'max_tokens' is not supported ... use 'max_completion_tokens' instead": the first
        # one named is the refused one
        named.sort(key=lambda p: _first_mention(text, p))
        return named[0]
    return named[0] if len(named) == 1 else None


def _says_unsupported(text: str) -> bool:
    return any(word in text for word in _REFUSAL_WORDS)


def _names(text: str, param: str) -> bool:
    return _first_mention(text, param) >= 0


def _first_mention(text: str, param: str) -> int:
    """Index of ``param`` as a whole word in ``text`` (``max_tokens`` is not inside
    ``max_completion_tokens``, nor in ``max_tokens_per_run``); -1 when absent."""
    start = 0
    while (index := text.find(param, start)) >= 0:
        before = text[index - 1] if index else " "
        end = index + len(param)
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return index
        start = index + 1
    return -1


class _Entry(BaseModel):
    """One remembered (endpoint, model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(max_length=2048)
    model: str = Field(max_length=512)
    limit_param: TokenParam
    send_temperature: bool
    learned_at: datetime


class _File(BaseModel):
    """``endpoints.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    endpoints: list[_Entry] = Field(default_factory=list, max_length=_MAX_ENTRIES)


class ParamMemory:
    """What each (endpoint, model) accepts, for this process and, with ``path``, on disk.

    Args:
        path: The file (``<cache_dir>/llm/endpoints.json``); ``None`` keeps it in the process.
    """

    _process: ClassVar[dict[tuple[str, str], RequestShape | None]] = {}
    """Shared by every client of the process; ``None``: looked up, nothing learned."""
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | None) -> None:
        self._path = path

    @property
    def path(self) -> Path | None:
        """The file, if the adjustments persist."""
        return self._path

    @classmethod
    def forget_process(cls) -> None:
        """Drop what this process learned (tests: a "new process" reading only the file)."""
        with cls._lock:
            cls._process.clear()

    def recall(self, base_url: str, model: str) -> RequestShape | None:
        """The learned shape for (``base_url``, ``model``), or ``None`` (send the defaults)."""
        key = (base_url, model)
        with self._lock:
            if key in self._process:
                return self._process[key]
        shape = None
        for entry in self._read().endpoints:
            if (entry.base_url, entry.model) == key:
                shape = RequestShape(entry.limit_param, entry.send_temperature)
        with self._lock:
            return self._process.setdefault(key, shape)

    def remember(self, base_url: str, model: str, shape: RequestShape) -> None:
        """Learn ``shape`` for (``base_url``, ``model``): now for the process, and on disk."""
        with self._lock:
            self._process[(base_url, model)] = shape
        if self._path is None:
            return
        entry = _Entry(
            base_url=base_url,
            model=model,
            limit_param=shape.limit_param,
            send_temperature=shape.send_temperature,
            learned_at=utcnow(),
        )
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._exclusive():
                current = self._read()
                kept = [e for e in current.endpoints if (e.base_url, e.model) != (base_url, model)]
                updated = _File(endpoints=[*kept[-(_MAX_ENTRIES - 1) :], entry])
                self._write(updated)
        except OSError as exc:  # the next process pays one 400 again: not worth failing for
            _log.warning("llm.params.save_failed", path=str(self._path), reason=str(exc))

    # ------------------------------------------------------------------ file

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        assert self._path is not None
        lock = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> _File:
        if self._path is None:
            return _File()
        try:
            with self._path.open("rb") as handle:
                data = handle.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return _File()
        except OSError as exc:
            _log.warning("llm.params.read_failed", path=str(self._path), reason=str(exc))
            return _File()
        try:
            if len(data) > _MAX_FILE_BYTES:
                raise ValueError(f"larger than {_MAX_FILE_BYTES} bytes")
            return _File.model_validate_json(data)
        except (ValidationError, ValueError) as exc:
            _log.warning(
                "llm.params.file_ignored", path=str(self._path), reason=str(exc).splitlines()[0]
            )
            return _File()

    def _write(self, content: _File) -> None:
        assert self._path is not None
        tmp = self._path.with_name(f"{self._path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_text(content.model_dump_json(indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, self._path)
        finally:
            tmp.unlink(missing_ok=True)
