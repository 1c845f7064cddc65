"""The vector memory: past decisions, upgrade outcomes and incidents, recalled by similarity.

A thin, typed layer over Chroma with three collections (``decisions``, ``outcomes``,
``incidents``), all compared by cosine distance. It is a tool: it stores and recalls, and
decides nothing::

    with VectorMemory.open(settings) as memory:
        memory.remember_outcome(OutcomeMemory(run_id="r1", host="canary-1", package="acme-web",
                                              to_version="1.2.0", status="rollback",
                                              error="health check failed: HTTP 503"))
        nearest = memory.recall("acme-web health check failed after upgrade")
        [(item.id, item.distance) for item in nearest]  # nearest first

Embedded (``chromadb.PersistentClient`` under ``HOME/memory``) unless ``memory.url`` names a
Chroma server. Telemetry is off, and our embedding function is always passed, so the default
configuration never touches the network (Chroma's default embedding would download a model).
Importing this module registers our embedding functions, which Chroma needs to reopen a
persisted collection in a new process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

import chromadb
import httpx
import structlog
from chromadb.api.client import Client
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, Embeddable, EmbeddingFunction
from chromadb.config import Settings as ChromaSettings

from patchpilot.core.errors import ConfigError
from patchpilot.core.resources import ClosingContext

# Importing the module registers the embedding functions: keep it next to client creation.
from patchpilot.tools.memory.embeddings import HashingEmbeddingFunction, embedding_function
from patchpilot.tools.memory.errors import (
    EmbeddingMismatchError,
    VectorMemoryError,
    VectorMemoryUnavailable,
)
from patchpilot.tools.memory.records import (
    KINDS,
    DecisionMemory,
    IncidentMemory,
    MemoryKind,
    MemoryRecord,
    MetadataValue,
    OutcomeMemory,
    Recalled,
)

if TYPE_CHECKING:
    from patchpilot.core.settings import Settings

__all__ = ["VectorMemory"]

_log = structlog.get_logger(__name__)

_SPACE: Final = {"hnsw:space": "cosine"}
_ID_PREFIXES: Final[dict[str, MemoryKind]] = {
    "decision:": "decisions",
    "outcome:": "outcomes",
    "incident:": "incidents",
}
# Config keys whose change makes old and new vectors incomparable.
_EMBEDDING_IDENTITY_KEYS: Final = ("dim", "version", "model", "dimensions")
_DEFAULT_PORTS: Final = {"http": 8000, "https": 443}


class VectorMemory(ClosingContext):
    """Chroma-backed memory of decisions, outcomes and incidents.

    Open one with :meth:`open` (from settings) or the constructor; close it with :meth:`close`
    or use it as a context manager. Writes are idempotent upserts keyed by the record's
    :attr:`~patchpilot.tools.memory.records.MemoryRecord.memory_id`.

    Attributes:
        location: The directory or server URL, for messages.
        top_k: Items :meth:`recall` returns when ``k`` is not given.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        url: str | None = None,
        embedding: EmbeddingFunction[Documents] | None = None,
        top_k: int = 5,
    ) -> None:
        """Open (creating if needed) the memory at ``path`` or on the server at ``url``.

        Args:
            path: Directory of an embedded Chroma database.
            url: A Chroma server, e.g. ``http://127.0.0.1:8000``; exclusive with ``path``.
            embedding: The embedding function; :class:`HashingEmbeddingFunction` if omitted.
                It must be the one the memory was built with.
            top_k: Default number of items :meth:`recall` returns.

        Raises:
            ConfigError: Neither or both of ``path`` and ``url``, a malformed ``url``, or
                ``top_k`` < 1.
            VectorMemoryUnavailable: The server could not be reached.
            EmbeddingMismatchError: The memory was built with another embedding function.
            VectorMemoryError: Chroma failed to open the memory.
        """
        if (path is None) == (url is None):
            raise ConfigError("give exactly one of a memory directory or a Chroma server URL")
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}", key="memory.top_k")
        self._path = Path(path).expanduser() if path is not None else None
        self._url = url
        self.location = url if url is not None else str(self._path)
        self.top_k = top_k
        self._ef: EmbeddingFunction[Documents] = embedding or HashingEmbeddingFunction()
        self._max_batch: int | None = None
        started = time.perf_counter()
        self._client = self._connect()
        try:
            self._collections = {kind: self._open_collection(kind) for kind in KINDS}
        except BaseException:
            self._client.close()
            raise
        _log.debug(
            "memory.opened",
            location=self.location,
            embedding=self._ef.name(),
            seconds=round(time.perf_counter() - started, 3),
        )

    @classmethod
    def open(cls, settings: Settings) -> VectorMemory:
        """Open the memory ``settings.memory`` describes.

        ``memory.url`` selects a Chroma server, else the embedded store under
        ``settings.memory_dir``; ``memory.embedding`` selects the embedding function.

        Raises:
            ConfigError: The settings are incomplete (see :func:`embedding_function`).
            VectorMemoryError: See the constructor.
        """
        ef = embedding_function(settings)
        if settings.memory.url:
            return cls(url=settings.memory.url, embedding=ef, top_k=settings.memory.top_k)
        return cls(settings.memory_dir, embedding=ef, top_k=settings.memory.top_k)

    # ----------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release the Chroma client (and its SQLite handles); idempotent."""
        self._client.close()

    def __repr__(self) -> str:
        """E.g. ``VectorMemory('/home/me/.patchpilot/memory', embedding='patchpilot-hashing')``."""
        return f"VectorMemory({self.location!r}, embedding={self._ef.name()!r})"

    # ----------------------------------------------------------------------------- writing

    def remember(self, record: MemoryRecord) -> str:
        """Store ``record`` in its collection, replacing a record with the same id.

        Each call is one Chroma write (tens of milliseconds on disk); store many records at
        once with :meth:`remember_many`.

        Returns:
            The record's stable id.

        Raises:
            VectorMemoryError: Chroma or the embedding function failed.
        """
        return self.remember_many([record])[0]

    def remember_many(self, records: Iterable[MemoryRecord]) -> list[str]:
        """Store several records with one write per collection (and per Chroma batch).

        A record whose id repeats replaces the earlier one, in the batch as in the store.

        Returns:
            The records' ids, in the order given.

        Raises:
            VectorMemoryError: Chroma or the embedding function failed.
        """
        ids: list[str] = []
        batches: dict[MemoryKind, dict[str, MemoryRecord]] = {}
        for record in records:
            ids.append(record.memory_id)
            batch = batches.setdefault(record.collection, {})
            batch.pop(record.memory_id, None)  # the last one wins
            batch[record.memory_id] = record
        for kind, batch in batches.items():
            self._upsert(kind, list(batch.values()))
        return ids

    def _upsert(self, kind: MemoryKind, records: list[MemoryRecord]) -> None:
        collection = self._collections[kind]
        with self._errors(f"storing {len(records)} {kind}"):
            if self._max_batch is None:  # a round trip on a server: ask once
                self._max_batch = max(1, self._client.get_max_batch_size())
            size = self._max_batch
            for start in range(0, len(records), size):
                chunk = records[start : start + size]
                collection.upsert(
                    ids=[record.memory_id for record in chunk],
                    documents=[record.document for record in chunk],
                    metadatas=[_upsert_metadata(record) for record in chunk],
                )
        _log.debug(
            "memory.remembered",
            location=self.location,
            kind=kind,
            ids=[record.memory_id for record in records[:10]],
            count=len(records),
        )

    def remember_decision(self, record: DecisionMemory) -> str:
        """Store a decision; see :meth:`remember`."""
        return self.remember(record)

    def remember_outcome(self, record: OutcomeMemory) -> str:
        """Store an upgrade outcome; see :meth:`remember`."""
        return self.remember(record)

    def remember_incident(self, record: IncidentMemory) -> str:
        """Store an incident; see :meth:`remember`."""
        return self.remember(record)

    # ----------------------------------------------------------------------------- reading

    def recall(
        self,
        query: str,
        *,
        kinds: Iterable[MemoryKind] = KINDS,
        k: int | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Recalled]:
        """Return the items most similar to ``query``, nearest first.

        Args:
            query: Free text, e.g. ``"acme-web health check failed after upgrade"``.
            kinds: The collections to search.
            k: At most this many items overall; :attr:`top_k` if omitted.
            where: A Chroma metadata filter, e.g. ``{"status": "rollback"}``. Several plain
                keys are combined with ``$and``; operators (``$or``, ``$in``, ``$gte``…) pass
                through. A collection without the filtered keys contributes nothing.

        Returns:
            Up to ``k`` items sorted by cosine distance (ties by id); empty for a blank query.

        Raises:
            VectorMemoryError: ``k`` < 1, an unknown kind, a malformed filter, or a Chroma or
                embedding failure.
        """
        limit = self.top_k if k is None else k
        if limit < 1:
            raise VectorMemoryError(self.location, f"recall needs k >= 1, got {k}")
        if not query.strip():
            return []
        collections = [(kind, self._collection(kind)) for kind in dict.fromkeys(kinds)]
        chroma_where = _chroma_where(where)
        with self._errors("embedding the query"):
            query_embeddings = self._ef.embed_query([query])
        found: list[Recalled] = []
        for kind, collection in collections:
            with self._errors(f"recalling from {kind}"):
                result = collection.query(
                    query_embeddings=query_embeddings,
                    n_results=limit,
                    where=chroma_where,
                    include=["documents", "metadatas", "distances"],
                )
            ids = result["ids"][0]
            documents = (result["documents"] or [[]])[0]
            metadatas = (result["metadatas"] or [[]])[0]
            distances = (result["distances"] or [[]])[0]
            found.extend(
                _recalled(kind, ids[i], documents[i], metadatas[i], float(distances[i]))
                for i in range(len(ids))
            )
        found.sort(key=lambda item: (item.distance, item.id))
        return found[:limit]

    def outcomes_for(self, package: str, version: str | None = None) -> list[Recalled]:
        """Return every stored outcome of upgrading ``package`` (to ``version``), newest first.

        A pure metadata lookup (``package``, and ``to_version`` when given): no similarity,
        every ``distance`` is 0.

        Raises:
            VectorMemoryError: Chroma failed.
        """
        where: dict[str, Any] = {"package": package}
        if version is not None:
            where["to_version"] = version
        return self._get("outcomes", where=where)

    def get(self, memory_id: str) -> Recalled | None:
        """Return the item stored under ``memory_id``, or None.

        Raises:
            VectorMemoryError: The id has no known prefix, or Chroma failed.
        """
        kind = next((k for p, k in _ID_PREFIXES.items() if memory_id.startswith(p)), None)
        if kind is None:
            raise VectorMemoryError(
                self.location,
                f"{memory_id!r} is not a memory id (decision:…, outcome:… or incident:…)",
            )
        found = self._get(kind, ids=[memory_id])
        return found[0] if found else None

    def count(self, kind: MemoryKind | None = None) -> int:
        """Return how many items one collection (or all of them) holds.

        Raises:
            VectorMemoryError: An unknown kind, or Chroma failed.
        """
        kinds = KINDS if kind is None else (kind,)
        total = 0
        for name in kinds:
            collection = self._collection(name)
            with self._errors(f"counting {name}"):
                total += collection.count()
        return total

    # ----------------------------------------------------------------------------- internals

    def _get(
        self,
        kind: MemoryKind,
        *,
        ids: list[str] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Recalled]:
        collection = self._collection(kind)
        with self._errors(f"reading {kind}"):
            result = collection.get(
                ids=ids, where=_chroma_where(where), include=["documents", "metadatas"]
            )
        documents = result["documents"] or []
        metadatas = result["metadatas"] or []
        items = [
            _recalled(kind, memory_id, documents[i], metadatas[i], 0.0)
            for i, memory_id in enumerate(result["ids"])
        ]
        items.sort(key=lambda item: (-float(item.metadata.get("at_ts", 0.0)), item.id))
        return items

    def _collection(self, kind: str) -> Collection:
        try:
            return self._collections[cast(MemoryKind, kind)]
        except KeyError:
            raise VectorMemoryError(
                self.location, f"unknown memory kind {kind!r}; use one of {', '.join(KINDS)}"
            ) from None

    def _connect(self) -> Client:
        # Both factories return a ``Client``, typed as ``ClientAPI``, which lacks ``close()``.
        settings = ChromaSettings(anonymized_telemetry=False)
        if self._url is not None:
            host, port, ssl = _parse_url(self._url)
            with self._errors("connecting"):
                return cast(
                    Client, chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=settings)
                )
        assert self._path is not None
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VectorMemoryError(
                self.location,
                f"cannot create the memory directory: {exc.strerror or exc}; choose another "
                "PATCHPILOT_HOME or fix its permissions",
            ) from exc
        with self._errors("opening"):
            return cast(Client, chromadb.PersistentClient(path=str(self._path), settings=settings))

    def _open_collection(self, kind: MemoryKind) -> Collection:
        ours = self._ef.name()
        try:
            collection = self._client.get_or_create_collection(
                kind,
                # Chroma types the parameter for documents or images; ours embeds documents.
                embedding_function=cast("EmbeddingFunction[Embeddable]", self._ef),
                metadata=dict(_SPACE),
            )
        except ValueError as exc:
            if "Embedding function conflict" not in str(exc):
                raise self._translate(f"opening collection {kind!r}", exc) from exc
            raise EmbeddingMismatchError(
                self.location,
                f"collection {kind!r} was built with another embedding function than {ours!r} "
                f"({exc}); set memory.embedding back to the one it was built with, or point "
                "PATCHPILOT_HOME (or memory.url) at a fresh memory",
            ) from exc
        except Exception as exc:
            raise self._translate(f"opening collection {kind!r}", exc) from exc
        # Chroma accepts a same-named function with another config (say another dimension) and
        # only fails at the first query; catch that here, with a message that says what to do.
        persisted = (collection.configuration_json or {}).get("embedding_function") or {}
        stored = persisted.get("config") or {}
        current = self._ef.get_config()
        changed = [
            key
            for key in _EMBEDDING_IDENTITY_KEYS
            if key in stored and key in current and stored[key] != current[key]
        ]
        if persisted.get("name") == ours and changed:
            detail = ", ".join(f"{key} {stored[key]!r} != {current[key]!r}" for key in changed)
            raise EmbeddingMismatchError(
                self.location,
                f"collection {kind!r} was built with {ours} ({detail}); use the original "
                "embedding settings, or point PATCHPILOT_HOME (or memory.url) at a fresh memory",
            )
        return collection

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn whatever Chroma or the embedding function raises into a VectorMemoryError."""
        try:
            yield
        except VectorMemoryError:
            raise
        except Exception as exc:
            raise self._translate(action, exc) from exc

    def _translate(self, action: str, exc: Exception) -> VectorMemoryError:
        if self._url is not None and _unreachable(exc):
            return VectorMemoryUnavailable(
                self.location,
                f"{action} failed: cannot reach the Chroma server ({exc}); start it, or unset "
                "memory.url (PATCHPILOT_MEMORY__URL) to use the embedded memory",
            )
        if self._url is not None:
            hint = "check the server's logs and that its chromadb version matches ours"
        else:
            hint = (
                "check the directory is writable, not in use by another chromadb version, and "
                "not damaged (move it aside to start a fresh memory)"
            )
        return VectorMemoryError(
            self.location, f"{action} failed: {type(exc).__name__}: {exc}; {hint}"
        )


def _upsert_metadata(record: MemoryRecord) -> dict[str, MetadataValue | None]:
    """The metadata to upsert: Chroma *merges* it into a stored record's.

    A key left out keeps its old value, and a key set to None is deleted; so every key this
    record type can carry is sent, None for the unset ones, and a re-upsert replaces the
    metadata exactly. None is never stored.
    """
    metadata: dict[str, MetadataValue | None] = dict.fromkeys(record.metadata_keys())
    metadata.update(record.metadata())
    return metadata


def _chroma_where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chroma wants one key per filter: combine several plain keys with ``$and``."""
    if not where:
        return None
    if len(where) > 1 and not any(key.startswith("$") for key in where):
        return {"$and": [{key: value} for key, value in where.items()]}
    return dict(where)


def _recalled(
    kind: MemoryKind,
    memory_id: str,
    document: str | None,
    metadata: Mapping[str, Any] | None,
    distance: float,
) -> Recalled:
    meta = {
        key: value
        for key, value in (metadata or {}).items()
        if isinstance(value, str | int | float | bool)
    }
    return Recalled(id=memory_id, kind=kind, text=document or "", metadata=meta, distance=distance)


def _parse_url(url: str) -> tuple[str, int, bool]:
    """Split ``http(s)://host[:port]`` for ``chromadb.HttpClient``."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"expected http(s)://host[:port], got {url!r}", key="memory.url")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConfigError(f"bad port in {url!r}: {exc}", key="memory.url") from exc
    return parts.hostname, port, parts.scheme == "https"


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a network failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError | httpx.TransportError):
            return True
        if "could not connect to a chroma server" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False
