"""Property test: well-formed DSA/DLA lists, rendered from generated entries, parse back exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.core.models import FixStatus
from patchpilot.core.versions import is_valid
from patchpilot.tools.feeds import FeedKind
from patchpilot.tools.feeds._common import clean_text
from patchpilot.tools.feeds.debian import parse_list

NOW = datetime(2025, 2, 14, tzinfo=UTC)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
RELEASES = ("bookworm", "bullseye", "buster", "trixie", "sid", "stretch-lts")
TAGS = {
    "<not-affected>": FixStatus.NOT_AFFECTED,
    "<unfixed>": FixStatus.NO_FIX_YET,
    "<end-of-life>": FixStatus.END_OF_LIFE,
    "<no-dsa>": FixStatus.DEFERRED,
    "<postponed>": FixStatus.DEFERRED,
    "<ignored>": FixStatus.WILL_NOT_FIX,
}

LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
packages = st.builds(
    str.__add__,
    st.sampled_from(LOWER_DIGITS),
    st.text(alphabet=LOWER_DIGITS + "+.-", min_size=1, max_size=15),
)
cves = st.builds("CVE-{}-{:04d}".format, st.integers(1999, 2029), st.integers(1, 9_999_999))
notes = st.builds(
    "{}{}{}".format,
    st.sampled_from("aZ9#"),
    st.text(alphabet="abcXYZ 019#;.,:'-", max_size=25),
    st.sampled_from("bY8"),
)
# Titles are untrusted text: include shell metacharacters and escape sequences.
titles = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 -_.,;:$`|&<>(){}[]'\"!?*/\\~\x1b")),
    min_size=1,
    max_size=60,
)
VERSION_CHARS = "0123456789abcXYZ.+~"


@st.composite
def debian_versions(draw: st.DrawFn) -> str:
    epoch = draw(st.sampled_from(["", "1:", "2:", "10:"]))
    upstream = draw(st.integers(0, 999).map(str)) + draw(
        st.text(alphabet=VERSION_CHARS, max_size=8)
    )
    revision = draw(st.sampled_from(["", "-"]))
    if revision:
        revision += draw(st.text(alphabet=VERSION_CHARS, min_size=1, max_size=8))
    version = f"{epoch}{upstream}{revision}"
    return version if is_valid("debian", version) else "1.0-1"


@dataclass(frozen=True)
class Line:
    release: str
    package: str
    state: str  # a version or a <tag>
    note: str | None


@dataclass(frozen=True)
class Entry:
    day: int
    month: int
    year: int
    number: int
    revision: int | None
    header_packages: tuple[str, ...]
    title: str | None
    cves: tuple[str, ...]
    lines: tuple[Line, ...]
    notes: tuple[str, ...]


@st.composite
def entries(draw: st.DrawFn, number: int) -> Entry:
    keys = draw(st.lists(st.tuples(st.sampled_from(RELEASES), packages), max_size=5, unique=True))
    lines = tuple(
        Line(
            release,
            package,
            draw(st.one_of(debian_versions(), st.sampled_from(sorted(TAGS)))),
            draw(st.one_of(st.none(), notes)),
        )
        for release, package in keys
    )
    return Entry(
        day=draw(st.integers(1, 28)),
        month=draw(st.integers(1, 12)),
        year=draw(st.integers(1997, 2030)),
        number=number,
        revision=draw(st.one_of(st.none(), st.integers(1, 9))),
        header_packages=tuple(draw(st.lists(packages, min_size=1, max_size=3))),
        title=draw(st.one_of(st.none(), titles)),
        cves=tuple(draw(st.lists(cves, max_size=6, unique=True))),
        lines=lines,
        notes=tuple(draw(st.lists(notes, max_size=2))),
    )


@st.composite
def documents(draw: st.DrawFn) -> list[Entry]:
    numbers = draw(st.lists(st.integers(1, 99999), min_size=1, max_size=5, unique=True))
    return [draw(entries(number)) for number in numbers]


def advisory_id(prefix: str, entry: Entry) -> str:
    return f"{prefix}-{entry.number}" + (f"-{entry.revision}" if entry.revision else "")


def render(prefix: str, entry: Entry) -> str:
    date = f"{entry.day:02d} {MONTHS[entry.month - 1]} {entry.year}"
    rest = " ".join(entry.header_packages) + (
        f" - {entry.title}" if entry.title is not None else ""
    )
    out = [f"[{date}] {advisory_id(prefix, entry)} {rest}"]
    if entry.cves:
        out.append("\t{" + " ".join(entry.cves) + "}")
    for line in entry.lines:
        note = f" ({line.note})" if line.note else ""
        out.append(f"\t[{line.release}] - {line.package} {line.state}{note}")
    out.extend(f"\tNOTE: {note}" for note in entry.notes)
    return "\n".join(out) + "\n"


@settings(max_examples=100, deadline=None)
@given(doc=documents(), prefix=st.sampled_from(["DSA", "DLA"]))
def test_generated_lists_round_trip(doc: list[Entry], prefix: str) -> None:
    kind = FeedKind.DEBIAN_DSA if prefix == "DSA" else FeedKind.DEBIAN_DLA
    text = "".join(render(prefix, entry) for entry in doc)
    batch = parse_list(text.encode(), kind=kind, source="generated", fetched_at=NOW)

    expected = [(entry, line) for entry in doc for line in entry.lines]
    assert len(batch.advisories) == len(expected)
    for advisory, (entry, line) in zip(batch.advisories, expected, strict=True):
        assert advisory.id == advisory_id(prefix, entry)
        assert advisory.aliases == entry.cves
        assert advisory.release == line.release
        assert advisory.source_package == line.package
        assert advisory.published == datetime(entry.year, entry.month, entry.day, tzinfo=UTC)
        header = " ".join(entry.header_packages) + (
            f" - {entry.title}" if entry.title is not None else ""
        )
        assert advisory.summary == clean_text(header)
        assert "\x1b" not in (advisory.summary or "")
        if line.state.startswith("<"):
            assert advisory.fix.status is TAGS[line.state]
            assert advisory.fix.version is None
            assert advisory.fix.vendor_state == (
                f"{line.state} ({line.note})" if line.note else line.state
            )
        else:
            assert advisory.fix.status is FixStatus.FIXED
            assert advisory.fix.version == line.state
            assert advisory.fix.vendor_state == line.note
        assert advisory.provenance.record_id == advisory.id
        assert advisory.feed == kind.value
    dates = [datetime(e.year, e.month, e.day, tzinfo=UTC) for e in doc]
    assert batch.published_at == max(dates)
