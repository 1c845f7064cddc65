"""Risk acceptances: a known risk accepted on some hosts, with who, why and until when.

An acceptance names an advisory (``DSA-5678-1``, ``DLA-3456-1``, ``USN-6543-1``,
``GHSA-…``, ``debian-security-update:openssl``) or a CVE (``CVE-2024-6387``), a host pattern,
a reason, the last day it holds (``until``), who accepted it (``by``) and when (``created``).
They live in one YAML file (``acceptances.file``, default ``$PATCHPILOT_HOME/acceptances.yaml``)
that ``patchpilot accept`` writes and that a person may edit by hand::

    acceptances:
      - id: DSA-5678-1
        host: web-*                 # default: all
        reason: compensating WAF rule, upgrade blocked by vendor (TICKET-42)
        until: 2026-12-31           # the last UTC day it holds
        by: alice
        created: '2026-06-01T09:00:00+00:00'

**Matching** (:class:`Acceptances`): a finding is accepted when a *live* acceptance (today, in
UTC, is on or before ``until``) whose host pattern matches the finding's host names the
finding's advisory, or when *every* CVE of the finding is named by such an acceptance (a CVE
accepted alone never hides another CVE fixed by the same advisory). Ids compare
case-insensitively; ``DSA-5678`` does not match ``DSA-5678-1``.

**Host patterns** use the ``--limit`` language of :mod:`patchpilot.core.inventory` evaluated on
host names only (a report has host names, not the inventory's groups): ``all``/``*``, a name, a
glob (``web-*``), a ``~regex`` (RE2), terms separated by ``,`` or ``:``, ``&term`` to intersect,
``!term`` to exclude. Position subscripts (``web[0]``) are refused: they need inventory order.

**Bounds.** ``until`` is a date, not in the past when added, at most ``acceptances.max_days``
(default 365) after the day it was created; ``reason`` is one line of 1 to
:data:`MAX_REASON_LENGTH` characters without control characters; the file holds at most
:data:`MAX_ENTRIES` entries and :data:`MAX_FILE_BYTES` bytes.

**The file** is validated whole when read; a bad entry is a
:class:`~patchpilot.core.errors.ConfigError` naming the file, the entry (its position and id)
and the field. Writes (:func:`append_acceptance`, :func:`remove_acceptances`) take an exclusive
lock on a sibling ``.acceptances.yaml.lock``, write a temporary file in the same directory,
fsync it and rename it over the old one, so a reader sees the old or the new file, never half of
one, and concurrent writers never lose an entry. A write edits the text (an appended entry goes
after the last one, a removed entry's lines are cut), so hand-written comments stay; when the
text cannot be edited safely (the result would not read back as exactly the intended entries)
the file is rewritten in canonical form instead.
"""

from __future__ import annotations

import fcntl
import fnmatch
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import re2
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchpilot.core.configfile import parse_yaml_mapping
from patchpilot.core.errors import ConfigError, InvalidInputError
from patchpilot.core.inventory import split_patterns
from patchpilot.core.inventory._select import MAX_REGEX_LENGTH
from patchpilot.core.models import CVE_RE, Finding
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded, has_control

__all__ = [
    "ACCEPTANCES_FILE",
    "DEFAULT_MAX_DAYS",
    "MAX_ENTRIES",
    "MAX_FILE_BYTES",
    "MAX_REASON_LENGTH",
    "Acceptance",
    "Acceptances",
    "append_acceptance",
    "host_matcher",
    "new_acceptance",
    "normalize_id",
    "parse_until",
    "read_acceptances",
    "remove_acceptances",
]

log = structlog.get_logger(__name__)

ACCEPTANCES_FILE: Final = "acceptances.yaml"
"""File name of the accept file under ``settings.home`` (unless ``acceptances.file`` is set)."""
DEFAULT_MAX_DAYS: Final = 365
"""Default longest acceptance, in days after its creation (``acceptances.max_days``)."""
MAX_REASON_LENGTH: Final = MAX_COMMENT_LENGTH
"""Longest reason accepted, in characters."""
MAX_ID_LENGTH: Final = 100
"""Longest advisory or CVE id accepted."""
MAX_ACTOR_LENGTH: Final = 100
"""Longest ``by`` accepted."""
MAX_PATTERN_LENGTH: Final = 1024
"""Longest host pattern accepted."""
MAX_ENTRIES: Final = 10_000
"""Most entries one accept file may hold."""
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
"""Largest accept file read."""

_DISTRO_ID: Final = re.compile(r"^(?:DSA|DLA|DTSA|USN)-", re.IGNORECASE)
_DISTRO_ID_FORM: Final = re.compile(r"^[A-Z]+-\d+(?:-\d+)?$")
_UPDATE_ID: Final = re.compile(r"^(?P<eco>[a-z]+)-(?:security-)?update:(?P<src>.*)$", re.I)
_SOURCE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_GENERIC_ID: Final = re.compile(r"^[A-Za-z][A-Za-z0-9.]*[-:][A-Za-z0-9._:+~-]+$")
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAYS: Final = re.compile(r"^\+?(\d{1,5})d$")
_SUBSCRIPT: Final = re.compile(r"^(.+)\[(?:-?[0-9]+|[0-9]+[:-][0-9]*)\]$")
_ALL_WORDS: Final = frozenset({"all", "*"})
_RE2_MAX_MEM: Final = 8 << 20
_HEADER: Final = (
    '# patchpilot risk acceptances (README: "Accepting a risk"). Written by `patchpilot\n'
    "# accept`; hand edits are fine and are checked when the file is read.\n"
)


# --------------------------------------------------------------------------- ids and patterns


def normalize_id(value: str) -> str:
    """An advisory or CVE id in its canonical case, or ``ValueError`` saying what is wrong.

    CVE and Debian/Ubuntu advisory ids are upper-cased (``cve-2024-6387`` ->
    ``CVE-2024-6387``), synthetic update ids lower-cased (``debian-security-update:openssl``);
    other advisory ids (``GHSA-…``, ``PYSEC-…``, ``RHSA-2024:1234``) keep their case.
    """
    text = value.strip()
    if not text or len(text) > MAX_ID_LENGTH or has_control(text, newlines=False):
        raise ValueError(
            f"{text[:40]!r} is not an advisory or CVE id (1 to {MAX_ID_LENGTH} printable "
            "characters, e.g. DSA-5678-1 or CVE-2024-6387)"
        )
    if text.upper().startswith("CVE-"):
        if not CVE_RE.match(text.upper()):
            raise ValueError(f"{text!r} is not a CVE id (CVE-YYYY-NNNN, at least 4 digits)")
        return text.upper()
    if _DISTRO_ID.match(text):
        if not _DISTRO_ID_FORM.match(text.upper()):
            raise ValueError(f"{text!r} is not a Debian/Ubuntu advisory id (e.g. DSA-5678-1)")
        return text.upper()
    update = _UPDATE_ID.match(text)
    if update:
        if not _SOURCE_NAME.match(update["src"].lower()):
            raise ValueError(
                f"{text!r}: {update['src']!r} is not a source package name "
                "(e.g. debian-security-update:openssl)"
            )
        return text.lower()
    if not _GENERIC_ID.match(text):
        raise ValueError(
            f"{text!r} is not an advisory or CVE id (e.g. DSA-5678-1, DLA-3456-1, "
            "CVE-2024-6387, GHSA-xxxx-xxxx-xxxx, debian-security-update:openssl)"
        )
    return text


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _RE2_MAX_MEM
    return options


_RE2_OPTIONS: Final = _re2_options()


def _term(term: str) -> Callable[[str], bool]:
    """One pattern term (without ``&``/``!``) as a predicate on host names."""
    if term in _ALL_WORDS:
        return lambda _name: True
    if term.startswith("~"):
        expression = term[1:]
        if not expression or len(expression) > MAX_REGEX_LENGTH:
            raise ValueError(
                f"regular expression {term[:40]!r} must have 1 to {MAX_REGEX_LENGTH} characters"
            )
        try:
            regex = re2.compile(expression, options=_RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise ValueError(
                f"invalid regular expression {term!r}: {reason} (RE2 syntax: no look-around, "
                "no back-references)"
            ) from None
        return lambda name: regex.match(name) is not None
    if _SUBSCRIPT.match(term):
        raise ValueError(
            f"{term!r}: position subscripts need inventory order; name the hosts instead "
            "(e.g. web-1,web-2) or use a glob"
        )
    try:
        glob = re.compile(fnmatch.translate(term))
    except re.error as exc:
        raise ValueError(f"invalid pattern {term!r}: {exc}") from None
    return lambda name: name == term or glob.match(name) is not None


@functools.lru_cache(maxsize=1024)
def host_matcher(pattern: str) -> Callable[[str], bool]:
    """The host pattern ``pattern`` (see the module docstring) as a predicate on host names.

    Raises:
        ValueError: the pattern is empty, too long, holds a control character, a malformed
            term (unbalanced ``[``, a bad regex, a subscript) or an empty ``&``/``!`` term.
    """
    if len(pattern) > MAX_PATTERN_LENGTH or has_control(pattern, newlines=False):
        raise ValueError(
            f"must be at most {MAX_PATTERN_LENGTH} characters without control characters"
        )
    try:
        terms = split_patterns(pattern)
    except ConfigError as exc:
        raise ValueError(exc.reason.replace("limit", "host pattern")) from None
    if not terms:
        raise ValueError("is empty: give a host name, a glob (web-*), ~regex or all")
    regular: list[Callable[[str], bool]] = []
    intersect: list[Callable[[str], bool]] = []
    exclude: list[Callable[[str], bool]] = []
    for term in terms:
        bare = term[1:] if term[0] in "&!" else term
        if not bare:
            raise ValueError(f"empty term after {term!r}")
        {"&": intersect, "!": exclude}.get(term[0], regular).append(_term(bare))

    def matches(name: str) -> bool:
        return (
            (not regular or any(m(name) for m in regular))
            and all(m(name) for m in intersect)
            and not any(m(name) for m in exclude)
        )

    return matches


def plain_terms(pattern: str) -> list[str]:
    """The terms of ``pattern`` that are plain names (no glob, regex or ``all``)."""
    names = []
    for term in split_patterns(pattern):
        bare = term[1:] if term[0] in "&!" else term
        plain = bare and bare not in _ALL_WORDS and not bare.startswith("~")
        if plain and not any(c in bare for c in "*?["):
            names.append(bare)
    return names


# --------------------------------------------------------------------------- the model


class Acceptance(BaseModel):
    """One accepted risk (one entry of the accept file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="advisory or CVE id (canonical case)")
    host: str = Field(default="all", description="host pattern (the --limit language on names)")
    reason: str = Field(description="why the risk is accepted (one line)")
    until: date = Field(description="the last day (UTC) the acceptance holds")
    by: str = Field(description="who accepted it")
    created: datetime | None = Field(default=None, description="when it was accepted (UTC)")

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, value: object) -> object:
        return normalize_id(value) if isinstance(value, str) else value

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            host_matcher(value)
        return value

    @field_validator("reason", mode="before")
    @classmethod
    def _reason(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            raise ValueError("is empty: say why the risk is accepted")
        if len(text) > MAX_REASON_LENGTH:
            raise ValueError(f"{len(text)} characters, at most {MAX_REASON_LENGTH}: shorten it")
        if has_control(text, newlines=False):
            raise ValueError("one line without control characters (terminal escapes) expected")
        return text

    @field_validator("by", mode="before")
    @classmethod
    def _by(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text or len(text) > MAX_ACTOR_LENGTH or has_control(text, newlines=False):
            raise ValueError(
                f"must name who accepted the risk (1 to {MAX_ACTOR_LENGTH} printable characters)"
            )
        return text

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, value: object) -> object:
        if isinstance(value, datetime) or not isinstance(value, date | str):
            raise ValueError("must be a date written YYYY-MM-DD (e.g. 2026-12-31)")
        if isinstance(value, str):
            if not _DATE.match(value.strip()):
                raise ValueError(f"{value[:40]!r} is not a date written YYYY-MM-DD")
            try:
                return date.fromisoformat(value.strip())
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid date: {exc}") from None
        return value

    @field_validator("created", mode="after")
    @classmethod
    def _created(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # a hand-written timestamp without zone: read as UTC
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def is_cve(self) -> bool:
        """Whether the id is a CVE id."""
        return CVE_RE.match(self.id) is not None

    def live(self, today: date) -> bool:
        """Whether the acceptance holds on ``today`` (its ``until`` day included)."""
        return today <= self.until

    def covers(self, host: str) -> bool:
        """Whether the host pattern matches ``host``."""
        return host_matcher(self.host)(host)

    def names(self, ident: str) -> bool:
        """Whether the acceptance is of ``ident`` (case-insensitively)."""
        return self.id.casefold() == ident.casefold()

    def same_target(self, other: Acceptance) -> bool:
        """Same id and same host pattern (a second one renews the first)."""
        return self.names(other.id) and self.host == other.host

    def to_yaml_dict(self) -> dict[str, Any]:
        """The entry as written to the file."""
        data: dict[str, Any] = {
            "id": self.id,
            "host": self.host,
            "reason": self.reason,
            "until": self.until,
            "by": self.by,
        }
        if self.created is not None:
            data["created"] = self.created.isoformat()
        return data

    def summary(self) -> dict[str, Any]:
        """``{id, host, by, reason, until, created}`` as JSON-ready values (reports, audit)."""
        return {
            "id": self.id,
            "host": self.host,
            "by": self.by,
            "reason": self.reason,
            "until": self.until.isoformat(),
            "created": self.created.isoformat() if self.created else None,
        }


def parse_until(text: str, today: date) -> date:
    """``--until``: a date ``YYYY-MM-DD`` or a number of days from ``today`` (``30d``).

    Raises:
        InvalidInputError: neither form.
    """
    value = text.strip()
    days = _DAYS.match(value)
    if days:
        return today + timedelta(days=int(days[1]))
    if _DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInputError("--until", f"{value!r} is not a valid date: {exc}") from None
    raise InvalidInputError(
        "--until", f"{value[:40]!r}: give a date YYYY-MM-DD (e.g. 2026-12-31) or days (30d)"
    )


def new_acceptance(
    ident: str,
    *,
    host: str = "all",
    reason: str,
    until: date,
    by: str,
    now: datetime,
    max_days: int = DEFAULT_MAX_DAYS,
) -> Acceptance:
    """A new acceptance, checked as ``patchpilot accept`` checks it.

    Raises:
        InvalidInputError: a bad id, host pattern, reason or actor; ``until`` in the past
            (before ``now``'s UTC day) or more than ``max_days`` after it.
    """
    today = now.astimezone(UTC).date()
    bounded(reason, what="--reason", max_length=MAX_REASON_LENGTH, newlines=False)
    if until < today:
        raise InvalidInputError(
            "--until", f"{until.isoformat()} is in the past (today is {today.isoformat()})"
        )
    if until > today + timedelta(days=max_days):
        raise InvalidInputError(
            "--until",
            f"{until.isoformat()} is more than {max_days} days away (the acceptances.max_days "
            f"setting); the latest allowed is {(today + timedelta(days=max_days)).isoformat()}",
        )
    try:
        return Acceptance(
            id=ident, host=host, reason=reason, until=until, by=by, created=now.astimezone(UTC)
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "acceptance"
        what = {"id": "ID", "by": "actor"}.get(field, f"--{field}")
        message = str(first.get("ctx", {}).get("error", first["msg"]))
        raise InvalidInputError(what, message) from None


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Acceptances:
    """The acceptances of a file as they stand on one day (``today``, UTC).

    :meth:`for_finding` is what reports and gates ask; expired entries are kept (listings show
    them) but never match.
    """

    entries: tuple[Acceptance, ...] = ()
    today: date = date.min
    source: Path | None = None

    @property
    def live(self) -> tuple[Acceptance, ...]:
        """The entries that hold today."""
        return tuple(a for a in self.entries if a.live(self.today))

    def for_ids(
        self, host: str, advisories: Sequence[str], cves: Sequence[str]
    ) -> Acceptance | None:
        """The live acceptance covering a risk of ``host``, or None.

        The risk is accepted when an acceptance names one of ``advisories`` (the one with the
        latest ``until`` is returned), or when every CVE of ``cves`` (at least one) is named
        by an acceptance (then the one that expires first, since the risk returns with it).
        """
        mine = [a for a in self.live if a.covers(host)]
        if not mine:
            return None
        direct = [a for a in mine if any(a.names(i) for i in advisories)]
        if direct:
            return max(direct, key=lambda a: a.until)
        if not cves:
            return None
        per_cve: list[Acceptance] = []
        for cve in cves:
            named = [a for a in mine if a.names(cve)]
            if not named:
                return None
            per_cve.append(max(named, key=lambda a: a.until))
        return min(per_cve, key=lambda a: a.until)

    def for_finding(self, finding: Finding) -> Acceptance | None:
        """The live acceptance covering ``finding`` (see :meth:`for_ids`), or None."""
        return self.for_ids(finding.host, (finding.advisory_id,), finding.cves)

    def __bool__(self) -> bool:
        return bool(self.entries)


# --------------------------------------------------------------------------- the file


def _entry_label(index: int, raw: object) -> str:
    ident = raw.get("id") if isinstance(raw, dict) else None
    label = f"entry {index + 1}"
    return f"{label} ({ident!r})" if isinstance(ident, str) and ident else label


def _check_horizon(entry: Acceptance, *, today: date, max_days: int) -> str | None:
    start = entry.created.date() if entry.created is not None else today
    if entry.created is not None and entry.created.date() > today + timedelta(days=1):
        return f"created {entry.created.isoformat()} is in the future"
    if (entry.until - start).days > max_days:
        return (
            f"until {entry.until.isoformat()} is {(entry.until - start).days} days after "
            f"{'created' if entry.created else 'today'} ({start.isoformat()}); at most "
            f"{max_days} are allowed (the acceptances.max_days setting): shorten it"
        )
    return None


def parse_acceptances(
    text: str, *, file: str, today: date, max_days: int = DEFAULT_MAX_DAYS
) -> list[Acceptance]:
    """The entries of an accept file's text, each checked (see the module docstring).

    Raises:
        ConfigError: not YAML, an unknown top-level key, a bad entry (named by position and
            id, with the field and the reason), a duplicate entry, or too many entries.
    """
    try:
        data = parse_yaml_mapping(text, file=file)
    except ConfigError:
        raise
    except ValueError as exc:  # PyYAML builds 2026-31-12 as a date and fails outside YAMLError
        raise ConfigError(
            f"a value looks like a date or time but is not a valid one ({exc}); write dates "
            "as YYYY-MM-DD",
            file=file,
        ) from None
    unknown = sorted(str(k) for k in data if k != "acceptances")
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {', '.join(unknown)}; the file has one key, acceptances",
            file=file,
            key=unknown[0],
        )
    raw = data.get("acceptances")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("must be a list of entries", file=file, key="acceptances")
    if len(raw) > MAX_ENTRIES:
        raise ConfigError(
            f"{len(raw)} entries, at most {MAX_ENTRIES}: remove expired ones",
            file=file,
            key="acceptances",
        )
    entries: list[Acceptance] = []
    for index, item in enumerate(raw):
        where = f"acceptances[{index}]"
        label = _entry_label(index, item)
        if not isinstance(item, dict):
            raise ConfigError(
                f"{label}: must be a mapping (id, host, reason, until, by)", file=file, key=where
            )
        try:
            entry = Acceptance.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(entry)"
            reason = str(first.get("ctx", {}).get("error", first["msg"]))
            if first["type"] == "missing":
                reason = "missing (every entry needs id, reason, until and by)"
            elif first["type"] == "extra_forbidden":
                reason = "unknown key (id, host, reason, until, by, created)"
            raise ConfigError(
                f"{label}: {field}: {reason}", file=file, key=f"{where}.{field}"
            ) from None
        problem = _check_horizon(entry, today=today, max_days=max_days)
        if problem is not None:
            raise ConfigError(f"{label}: {problem}", file=file, key=f"{where}.until")
        for other_index, other in enumerate(entries):
            if other.same_target(entry):
                raise ConfigError(
                    f"{label} repeats entry {other_index + 1} (same id and host pattern "
                    f"{entry.host!r}); keep one",
                    file=file,
                    key=where,
                )
        entries.append(entry)
    return entries


def _read_text(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES} bytes", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", file=str(path)) from None


def read_acceptances(
    path: Path, *, today: date, max_days: int = DEFAULT_MAX_DAYS
) -> list[Acceptance]:
    """Every entry of the accept file at ``path`` (an absent file has none).

    Raises:
        ConfigError: see :func:`parse_acceptances`; also unreadable or too large.
    """
    text = _read_text(path)
    if text is None:
        return []
    return parse_acceptances(text, file=str(path), today=today, max_days=max_days)


def _render_items(entries: Sequence[Acceptance], indent: int) -> str:
    if not entries:
        return ""
    text = yaml.safe_dump(
        [e.to_yaml_dict() for e in entries],
        default_flow_style=False,
        sort_keys=False,
        allow_unicode=True,
        width=1_000_000,
    )
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def render_acceptances(entries: Sequence[Acceptance]) -> str:
    """The canonical text of an accept file holding ``entries``."""
    if not entries:
        return _HEADER + "acceptances: []\n"
    return _HEADER + "acceptances:\n" + _render_items(entries, 2)


def _sequence(text: str) -> yaml.SequenceNode | None:
    """The block sequence under the top-level ``acceptances`` key, if the text has one."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "acceptances"
            and isinstance(value, yaml.SequenceNode)
            and not value.flow_style
            and value.value
        ):
            return value
    return None


def _edited_text(
    text: str | None, current: Sequence[Acceptance], drop: set[int], add: Acceptance | None
) -> list[tuple[str, bool]]:
    """Candidate texts for the edit, best first (text edits, then the canonical form)."""
    expected = [e for i, e in enumerate(current) if i not in drop] + ([add] if add else [])
    canonical = render_acceptances(expected)
    if not text or not text.strip():
        return [(canonical, True)]
    node = _sequence(text)
    if node is None:
        return [(canonical, True)]
    lines = text.splitlines(True)
    items = node.value
    indent = max(items[0].start_mark.column - 2, 0)
    cut: set[int] = set()
    for index in drop:  # an entry's lines, from its first key to its last value
        cut.update(range(items[index].start_mark.line, _content_end(items[index])))
    kept = [line for number, line in enumerate(lines) if number not in cut]
    if add is not None:  # right after the last entry's last value, before any comment
        end = _content_end(items[-1])
        at = end - len([n for n in cut if n < end])
        head = kept[:at]
        if head and not head[-1].endswith("\n"):
            head[-1] += "\n"
        kept = [*head, _render_items([add], indent), *kept[at:]]
    return [("".join(kept), False), (canonical, True)]


def _content_end(node: yaml.Node) -> int:
    """The line after the last line holding ``node``'s content (comments after it excluded)."""
    if (
        isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        and node.value
        and not node.flow_style
    ):
        last = node.value[-1]
        return _content_end(last[1] if isinstance(last, tuple) else last)
    mark = node.end_mark
    return mark.line if mark.column == 0 else mark.line + 1


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot lock {lock}: {exc.strerror}", file=str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename, fsync the directory)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write(
    path: Path,
    text: str | None,
    current: list[Acceptance],
    *,
    drop: set[int],
    add: Acceptance | None,
    today: date,
    max_days: int,
    then: Callable[[], None] | None,
) -> None:
    expected = [e for i, e in enumerate(current) if i not in drop] + ([add] if add else [])
    for candidate, canonical in _edited_text(text, current, drop, add):
        try:
            check = parse_acceptances(candidate, file=str(path), today=today, max_days=max_days)
        except ConfigError:
            check = None
        if check == expected:
            if canonical and text and text.strip():
                log.info("acceptances.rewritten", path=str(path))
            break
    else:  # pragma: no cover - the canonical form always reads back
        raise ConfigError("cannot write the accept file consistently", file=str(path))
    try:
        _replace(path, candidate)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", file=str(path)) from None
    if then is None:
        return
    try:
        then()
    except BaseException:
        if text is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, text)
        raise


def append_acceptance(
    path: Path,
    entry: Acceptance,
    *,
    today: date,
    max_days: int = DEFAULT_MAX_DAYS,
    then: Callable[[Acceptance | None], None] | None = None,
) -> Acceptance | None:
    """Add ``entry`` to the accept file; an entry of the same id and host pattern is replaced.

    Under the file's lock: read and check the file, write the new one atomically, then call
    ``then`` with the entry replaced, if any (the audit record); if ``then`` raises, the old
    file is put back and the error propagates, so no acceptance exists that the audit log
    does not show.

    Returns:
        The entry replaced (a renewal), or None.

    Raises:
        ConfigError: the file is invalid (fix it first: the error names the entry), full, or
            cannot be written.
    """
    with _locked(path):
        text = _read_text(path)
        current = (
            []
            if text is None
            else parse_acceptances(text, file=str(path), today=today, max_days=max_days)
        )
        drop = {i for i, e in enumerate(current) if e.same_target(entry)}
        if len(current) - len(drop) >= MAX_ENTRIES:
            raise ConfigError(
                f"already {MAX_ENTRIES} entries: remove expired ones (`patchpilot unaccept`)",
                file=str(path),
            )
        replaced = current[min(drop)] if drop else None
        _write(
            path,
            text,
            current,
            drop=drop,
            add=entry,
            today=today,
            max_days=max_days,
            then=None if then is None else (lambda: then(replaced)),
        )
    return replaced


def remove_acceptances(
    path: Path,
    ident: str,
    *,
    host: str | None = None,
    today: date,
    max_days: int = DEFAULT_MAX_DAYS,
    then: Callable[[list[Acceptance]], None] | None = None,
) -> list[Acceptance]:
    """Remove the entries of ``ident`` (only the one with host pattern ``host`` when given).

    Same locking and ``then`` contract as :func:`append_acceptance`.

    Returns:
        The entries removed (possibly none: then the file is left as it is).

    Raises:
        ConfigError: the file is invalid or cannot be written.
    """
    with _locked(path):
        text = _read_text(path)
        if text is None:
            return []
        current = parse_acceptances(text, file=str(path), today=today, max_days=max_days)
        drop = {
            i
            for i, e in enumerate(current)
            if e.names(ident) and (host is None or e.host == host.strip())
        }
        if not drop:
            return []
        removed = [current[i] for i in sorted(drop)]
        _write(
            path,
            text,
            current,
            drop=drop,
            add=None,
            today=today,
            max_days=max_days,
            then=None if then is None else (lambda: then(removed)),
        )
    return removed
