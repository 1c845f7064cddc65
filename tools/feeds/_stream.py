"""Reading feed documents in bounded memory: files are streamed, never read whole.

* :class:`Document` is something to read (a file, bytes already in memory, a zip member), as
  many times as needed.
* :func:`reading` opens it through a reader that hashes (SHA-256) and counts every byte and
  refuses to go past a size limit, so the digest of the exact bytes parsed comes for free.
* :func:`iter_lines` yields decoded lines (strict UTF-8, one line at a time, each at most
  :data:`MAX_LINE_BYTES`); :func:`gzip_stream` decompresses on the fly with a bound on the
  decompressed size (gzip bombs); :func:`json_items` and :func:`json_scan` stream JSON with
  ``ijson`` (the C ``yajl2`` backend), so a large JSON document is never a Python object whole.
* :func:`gather` runs a parser's pass over a document: small results are kept as a tuple; past
  :data:`KEEP_IN_MEMORY` records the result is a
  :class:`~patchpilot.core.feeds.RecordStream` that parses the document again, record by record,
  when it is imported (and checks that the document did not change in between).

A JSON syntax error found by ``ijson`` is reported precisely (line, column, "truncated?") by
re-parsing the document with :mod:`json` when it is small enough
(:data:`PRECISE_ERROR_MAX_BYTES`); for a larger document the message says what ``ijson`` found.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import ijson  # type: ignore[import-untyped]  # no stubs; used through typed wrappers

from patchpilot.core.errors import FeedError
from patchpilot.core.feeds import RecordStream
from patchpilot.tools.feeds._common import clean_text, load_json

__all__ = [
    "KEEP_IN_MEMORY",
    "MAX_LINE_BYTES",
    "PRECISE_ERROR_MAX_BYTES",
    "Document",
    "PassInfo",
    "Reader",
    "file_sha256",
    "gather",
    "gzip_stream",
    "iter_lines",
    "json_items",
    "json_kvitems",
    "json_scan",
    "reading",
    "wrong_json_start",
]

_T = TypeVar("_T")

KEEP_IN_MEMORY: Final = 20_000
"""Most records a batch holds in memory; past this its records are a ``RecordStream``."""

MAX_LINE_BYTES: Final = 1 << 20
"""Longest line accepted in a line-based feed (DSA/DLA lists, EPSS CSV)."""

PRECISE_ERROR_MAX_BYTES: Final = 16 << 20
"""Largest JSON document re-parsed with :mod:`json` to name the line of a syntax error."""

_CHUNK: Final = 1 << 16
_BOM: Final = b"\xef\xbb\xbf"
_JSON_WHITESPACE: Final = frozenset(b" \t\r\n")


@dataclass(frozen=True, slots=True)
class Document:
    """A document to read, possibly more than once.

    Attributes:
        source: Its name in messages (path, URL, ``archive!member``).
        opener: Opens it for reading from the start (binary).
        size: Its size in bytes, when known.
    """

    source: str
    opener: Callable[[], IO[bytes]]
    size: int | None = None

    @classmethod
    def of(cls, data: bytes | Path | Document, source: str) -> Document:
        """A document from bytes, a file path or another document."""
        if isinstance(data, Document):
            return data
        if isinstance(data, bytes):
            return cls(source, lambda: io.BytesIO(data), len(data))
        path = data
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise FeedError("no such file", source=str(path)) from None
        except OSError as exc:
            raise FeedError(f"cannot read: {exc.strerror}", source=str(path)) from None
        return cls(source, lambda: _open_file(path), size)

    def read_all(self) -> bytes:
        """The whole document (only for small documents: error reporting, archives)."""
        with self.opener() as handle:
            return handle.read()


def _open_file(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise FeedError("no such file", source=str(path)) from None
    except IsADirectoryError:
        raise FeedError("expected a file, got a directory", source=str(path)) from None
    except OSError as exc:
        raise FeedError(f"cannot read: {exc.strerror}", source=str(path)) from None


class _Counted(io.RawIOBase):
    """Passes bytes through, hashing and counting them; refuses to go past ``max_bytes``."""

    def __init__(
        self,
        raw: IO[bytes],
        *,
        source: str,
        max_bytes: int,
        what: str,
        errors: Callable[[Exception], FeedError] | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self._source = source
        self._max = max_bytes
        self._what = what
        self._errors = errors
        self._digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._raw.read(len(view))
        except FeedError:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            if self._errors is None:
                raise FeedError(f"cannot read: {exc}", source=self._source) from None
            raise self._errors(exc) from None
        size = len(data)
        self.count += size
        if self.count > self._max:
            raise FeedError(
                f"{self._what} exceeds the size limit of {self._max} bytes", source=self._source
            )
        self._digest.update(data)
        view[:size] = data
        return size

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class Reader:
    """A buffered, hashing, size-limited binary stream over a document (see :func:`reading`).

    Attributes:
        stream: The buffered stream to read from (``read``, ``readline``, ``peek``).
        source: The document's name.
    """

    def __init__(self, stream: io.BufferedReader, counted: _Counted, source: str) -> None:
        self.stream = stream
        self._counted = counted
        self.source = source

    def peek(self, size: int) -> bytes:
        """Up to ``size`` next bytes, without consuming them (fewer only at the end)."""
        return self.stream.peek(size)[:size]

    def skip_bom(self) -> None:
        """Consume a leading UTF-8 byte order mark."""
        if self.peek(3) == _BOM:
            self.stream.read(3)

    def first_json_byte(self) -> bytes:
        """Skip a BOM and whitespace; the first byte of the JSON text (empty at the end)."""
        self.skip_bom()
        while True:
            head = self.stream.peek(1)[:1]
            if not head or head[0] not in _JSON_WHITESPACE:
                return head
            self.stream.read(1)

    def sha256(self) -> str:
        """SHA-256 of the whole document: reads whatever is left first."""
        while self.stream.read(_CHUNK):
            pass
        return self._counted.hexdigest()

    @property
    def bytes_read(self) -> int:
        """Bytes read from the document so far."""
        return self._counted.count


@contextmanager
def reading(document: Document, *, max_bytes: int) -> Iterator[Reader]:
    """Open ``document`` for one streaming pass (see :class:`Reader`).

    Raises:
        FeedError: If it cannot be read or is larger than ``max_bytes``.
    """
    raw = document.opener()
    try:
        counted = _Counted(raw, source=document.source, max_bytes=max_bytes, what="document")
        yield Reader(io.BufferedReader(counted, _CHUNK), counted, document.source)
    finally:
        raw.close()


def file_sha256(document: Document, *, max_bytes: int) -> str:
    """SHA-256 of a document, read in chunks."""
    with reading(document, max_bytes=max_bytes) as reader:
        return reader.sha256()


def gzip_stream(reader: Reader, *, max_bytes: int) -> io.BufferedReader:
    """The decompressed stream of a gzip document, refused past ``max_bytes`` (bombs).

    Errors (not gzip, corrupt, truncated, too large) surface as :class:`FeedError` when read.
    """
    source = reader.source

    def error(exc: Exception) -> FeedError:
        if isinstance(exc, EOFError):
            return FeedError("gzip data is truncated", source=source)
        return FeedError(f"not valid gzip data: {exc}", source=source)

    inflated = gzip.GzipFile(fileobj=reader.stream, mode="rb")
    counted = _Counted(
        inflated,  # type: ignore[arg-type]  # GzipFile is a binary stream
        source=source,
        max_bytes=max_bytes,
        what="decompressed document",
        errors=error,
    )
    return io.BufferedReader(counted, _CHUNK)


def iter_lines(
    stream: IO[bytes], *, source: str, max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str]]:
    """Decoded lines of a stream, numbered as :meth:`str.splitlines` numbers them.

    Each line is decoded as strict UTF-8 (a BOM at the very start is dropped); line endings
    are removed.

    Raises:
        FeedError: Invalid UTF-8 (line and byte offset named) or a line over ``max_line``.
    """
    number = 0
    offset = 0
    while True:
        raw = stream.readline(max_line + 1)
        if not raw:
            return
        if len(raw) > max_line and not raw.endswith(b"\n"):
            raise FeedError(
                f"line longer than {max_line} bytes (not a feed of lines?)",
                source=source,
                line=number + 1,
            )
        try:
            text = raw.decode("utf-8-sig" if offset == 0 else "utf-8")
        except UnicodeDecodeError as exc:
            raise FeedError(
                f"not valid UTF-8 (byte offset {offset + exc.start}: {exc.reason})",
                source=source,
                line=number + 1,
            ) from None
        offset += len(raw)
        for line in text.splitlines():
            number += 1
            yield number, line


def _json_error(document: Document, exc: Exception) -> FeedError:
    """A clear error for a JSON syntax error ``ijson`` found in ``document``."""
    if document.size is not None and document.size <= PRECISE_ERROR_MAX_BYTES:
        try:
            load_json(document.read_all(), source=document.source)
        except FeedError as precise:
            return precise
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    first = clean_text(str(message).splitlines()[0] if str(message) else "", limit=120) or ""
    if "UTF8" in first:
        return FeedError(f"not valid UTF-8 ({first})", source=document.source)
    hint = " (document is truncated?)" if "premature EOF" in first else ""
    return FeedError(f"not valid JSON: {first}{hint}", source=document.source)


def wrong_json_start(document: Document, first: bytes, reason: str) -> FeedError:
    """The error for a JSON document that does not start as expected (``reason``).

    A document that is not JSON at all (or not UTF-8) is reported as such, precisely when it is
    small; valid JSON of the wrong shape gets ``reason``.
    """
    if document.size is not None and document.size <= PRECISE_ERROR_MAX_BYTES:
        try:
            load_json(document.read_all(), source=document.source)
        except FeedError as precise:
            return precise
    elif first and first[0] >= 0x80:
        return FeedError(
            f"not valid UTF-8 (byte 0x{first[0]:02x} at the start)", source=document.source
        )
    return FeedError(reason, source=document.source)


def json_items(document: Document, reader: Reader, prefix: str) -> Iterator[Any]:
    """Stream the JSON values at ``prefix`` (``ijson`` syntax: ``""``, ``"item"``, ``"a.item"``).

    Floats are ``float`` (as with :mod:`json`). The whole document is checked: a syntax error
    anywhere, or trailing data, raises :class:`FeedError`.
    """
    reader.skip_bom()
    try:
        yield from ijson.items(reader.stream, prefix, use_float=True)
    except FeedError:
        raise
    except (ijson.JSONError, ValueError) as exc:
        raise _json_error(document, exc) from None


def json_kvitems(document: Document, reader: Reader) -> Iterator[tuple[str, Any]]:
    """Stream the members of a top-level JSON object, one ``(key, value)`` at a time."""
    reader.skip_bom()
    try:
        yield from ijson.kvitems(reader.stream, "", use_float=True)
    except FeedError:
        raise
    except (ijson.JSONError, ValueError) as exc:
        raise _json_error(document, exc) from None


def json_scan(
    document: Document, reader: Reader, *, keys: frozenset[str], array: str
) -> tuple[dict[str, Any], str | None]:
    """One pass over a top-level JSON object for its small members, skipping a large array.

    Args:
        document: The document (for error messages).
        reader: A fresh reader on it.
        keys: Top-level members whose (scalar) values are wanted.
        array: The member holding the records: only its type is noted, nothing is built.

    Returns:
        The wanted members found (present keys only) and the JSON type of ``array``
        (``"array"``, ``"map"``, ``"string"``…) or ``None`` when absent. A document that is
        not an object gives ``({}, None)`` with ``"__root__"`` mapped to its type.

    Raises:
        FeedError: On a syntax error anywhere in the document.
    """
    found: dict[str, Any] = {}
    kind: str | None = None
    reader.skip_bom()
    try:
        events = ijson.parse(reader.stream, use_float=True)
        for prefix, event, value in events:
            if prefix == "" and event not in ("start_map", "end_map", "map_key"):
                found["__root__"] = event
            elif prefix == array and kind is None:
                kind = {"start_array": "array", "start_map": "map"}.get(event, event)
            elif prefix in keys and event not in ("start_map", "start_array", "map_key"):
                if event not in ("end_map", "end_array"):
                    found[prefix] = value
            elif prefix in keys and event in ("start_map", "start_array"):
                found[prefix] = {"start_map": {}, "start_array": []}[event]
    except FeedError:
        raise
    except (ijson.JSONError, ValueError) as exc:
        raise _json_error(document, exc) from None
    return found, kind


@dataclass(slots=True)
class PassInfo:
    """What one pass over a document learnt besides its records.

    Attributes:
        sha256: Digest of the document (or of a set of documents).
        newest: The document's own date (newest advisory, catalog release…), if any.
        counts: Per-parser counters, for logs.
        extra: Per-parser values (score date, computed percentiles…).
    """

    sha256: str = ""
    newest: datetime | None = None
    counts: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def saw(self, moment: datetime) -> None:
        """Note a date of the document (the newest one wins)."""
        if self.newest is None or moment > self.newest:
            self.newest = moment


def gather(
    one_pass: Callable[[PassInfo], Iterator[_T]],
    *,
    source: str,
    keep: int | None = None,
) -> tuple[tuple[_T, ...] | RecordStream[_T], PassInfo]:
    """Run one validating pass; keep its records, or stream them again at import time.

    Args:
        one_pass: Parses the whole document once, yielding its records and filling the
            ``PassInfo`` (``sha256`` at least) by the time it ends.
        source: The document, for messages.
        keep: Most records kept in memory (default :data:`KEEP_IN_MEMORY`).

    Returns:
        The records (a tuple, or a :class:`RecordStream` that re-runs ``one_pass`` and
        checks the digest) and what the pass learnt.

    Raises:
        FeedError: Whatever the pass raises (the first invalid record, named).
    """
    limit = KEEP_IN_MEMORY if keep is None else keep
    info = PassInfo()
    kept: list[_T] | None = []
    count = 0
    for record in one_pass(info):
        count += 1
        if kept is not None:
            kept.append(record)
            if len(kept) > limit:
                kept = None  # too many: drop them, they are parsed again when imported
    if kept is not None:
        return tuple(kept), info
    digest = info.sha256

    def again() -> Iterator[_T]:
        check = PassInfo()
        yield from one_pass(check)
        if check.sha256 != digest:
            raise FeedError(
                "the document changed between its validation and its import; import it again",
                source=source,
            )

    return RecordStream(again, count, source=source), info
