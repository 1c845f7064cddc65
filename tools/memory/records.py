"""What the vector memory stores and returns: frozen, typed records.

Each record knows its collection (:attr:`MemoryRecord.collection`), its stable id
(:attr:`MemoryRecord.memory_id`: the same facts give the same id, so a resumed run upserts
instead of duplicating), the human sentence that is embedded (:attr:`MemoryRecord.document`)
and its Chroma metadata (:meth:`MemoryRecord.metadata`: the fields as ``str``/``int``/``float``
/``bool``, plus ``at`` as ISO 8601 and ``at_ts`` as a POSIX timestamp for range filters).

Example:
    >>> OutcomeMemory(
    ...     run_id="r1", host="canary-1", host_profile="web, staging, canary; criticality 2",
    ...     package="acme-web", from_version="1.1.0", to_version="1.2.0", status="rollback",
    ...     error="health check failed: HTTP 503",
    ... ).document
    'acme-web 1.1.0 -> 1.2.0 on canary-1 (web, staging, canary; criticality 2): rollback — health check failed: HTTP 503'
"""  # noqa: E501

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from patchpilot.core.models import Record, utcnow

__all__ = [
    "KINDS",
    "DecisionMemory",
    "IncidentMemory",
    "MemoryKind",
    "MemoryRecord",
    "MetadataValue",
    "OutcomeMemory",
    "OutcomeStatus",
    "Recalled",
]

MemoryKind: TypeAlias = Literal["decisions", "outcomes", "incidents"]
"""A collection of the memory."""

KINDS: tuple[MemoryKind, ...] = ("decisions", "outcomes", "incidents")
"""All collections, in the order :meth:`VectorMemory.recall` searches them by default."""

OutcomeStatus: TypeAlias = Literal["success", "failure", "rollback"]
MetadataValue: TypeAlias = str | int | float | bool
"""The value types Chroma accepts in metadata (``None`` is not one of them)."""

_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8_000)]
_OptText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=8_000)] | None
_DecisionKind = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z][a-z0-9_-]{0,63}$")
]


class MemoryRecord(Record):
    """Common fields and behaviour of everything the memory stores."""

    collection: ClassVar[MemoryKind]

    run_id: _Name = Field(description="the patch run that produced the record")
    at: AwareDatetime = Field(default_factory=utcnow, description="when it happened")

    @property
    @abstractmethod
    def memory_id(self) -> str:
        """The stable id: the same facts give the same id."""

    @property
    @abstractmethod
    def document(self) -> str:
        """The sentence that is embedded and returned as :attr:`Recalled.text`."""

    def metadata(self) -> dict[str, MetadataValue]:
        """The record's fields as Chroma metadata; unset (``None``) fields are left out."""
        meta: dict[str, MetadataValue] = self.model_dump(exclude={"at"}, exclude_none=True)
        meta["at"] = self.at.isoformat()
        meta["at_ts"] = self.at.timestamp()
        return meta

    @classmethod
    def metadata_keys(cls) -> frozenset[str]:
        """Every metadata key a record of this class may carry."""
        return frozenset(cls.model_fields) | {"at_ts"}


class DecisionMemory(MemoryRecord):
    """A decision an agent or an operator made, with its reason.

    One decision per ``(run_id, kind, subject)``: remembering it again replaces it.
    """

    collection: ClassVar[MemoryKind] = "decisions"

    kind: _DecisionKind = Field(description="plan, approval, prioritization, deferral…")
    subject: _Name = Field(description="the package or host decided about")
    text: _Text = Field(description="the decision, in one sentence")
    rationale: _OptText = Field(default=None, description="why")

    @property
    def memory_id(self) -> str:
        """``decision:<run>:<kind>:<subject>``."""
        return f"decision:{self.run_id}:{self.kind}:{self.subject}"

    @property
    def document(self) -> str:
        """E.g. ``approval for openssl: defer to Sunday — because canary failed``."""
        because = f" — because {self.rationale}" if self.rationale else ""
        return f"{self.kind} for {self.subject}: {self.text}{because}"


class OutcomeMemory(MemoryRecord):
    """What happened when a package was upgraded on a host.

    One outcome per ``(run_id, host, package, to_version)``: remembering it again replaces it.
    """

    collection: ClassVar[MemoryKind] = "outcomes"

    host: _Name
    host_profile: _OptText = Field(
        default=None, description="tags, criticality, exposure, e.g. 'web, dmz; criticality 3'"
    )
    package: _Name
    from_version: _Name | None = Field(default=None, description="installed before, if known")
    to_version: _Name
    status: OutcomeStatus
    error: _OptText = Field(default=None, description="why it failed or was rolled back")

    @property
    def memory_id(self) -> str:
        """``outcome:<run>:<host>:<package>:<to_version>``."""
        return f"outcome:{self.run_id}:{self.host}:{self.package}:{self.to_version}"

    @property
    def document(self) -> str:
        """E.g. ``acme-web 1.1.0 -> 1.2.0 on canary-1 (web; criticality 2): rollback — 503``."""
        versions = (
            f"{self.from_version} -> {self.to_version}"
            if self.from_version
            else (f"-> {self.to_version}")
        )
        profile = f" ({self.host_profile})" if self.host_profile else ""
        error = f" — {self.error}" if self.error else ""
        return f"{self.package} {versions} on {self.host}{profile}: {self.status}{error}"


class IncidentMemory(MemoryRecord):
    """Something that went wrong on a host and is worth recalling before the next upgrade.

    One incident per ``(run_id, host, package, version)``: remembering it again replaces it.
    """

    collection: ClassVar[MemoryKind] = "incidents"

    host: _Name
    package: _Name
    version: _Name | None = Field(default=None, description="the version involved, if any")
    summary: _Text

    @property
    def memory_id(self) -> str:
        """``incident:<run>:<host>:<package>:<version or *>``."""
        return f"incident:{self.run_id}:{self.host}:{self.package}:{self.version or '*'}"

    @property
    def document(self) -> str:
        """E.g. ``incident on canary-1 with acme-web 1.2.0: health check failed: HTTP 503``."""
        version = f" {self.version}" if self.version else ""
        return f"incident on {self.host} with {self.package}{version}: {self.summary}"


class Recalled(BaseModel):
    """One item the memory returned.

    Attributes:
        id: The record's :attr:`~MemoryRecord.memory_id`.
        kind: The collection it came from.
        text: The record's :attr:`~MemoryRecord.document`.
        metadata: Its metadata (fields, ``at``, ``at_ts``).
        distance: Cosine distance to the query (0 = identical, 2 = opposite); 0 for items
            found by a metadata filter alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: MemoryKind
    text: str
    metadata: dict[str, MetadataValue]
    distance: float
