"""Property tests for patchpilot.core.versions: each ordering is a total preorder, sort_key
matches it, and compare() never raises outside the defined unparseable class.

Valid versions are generated from each ecosystem's grammar, out of a small alphabet of segments
so that equal prefixes, ``~``/``^`` markers, leading zeros and equal-but-differently-spelled
versions are frequent; malformed ones by mutating those (inserting junk: other ASCII
characters, non-ASCII letters, spaces, control characters) and as arbitrary text. Debian is also
checked against python-debian (an independent implementation); the real
``dpkg --compare-versions`` is the oracle of tests/integration/test_versions_native.py.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable

import pytest
from debian.debian_support import NativeVersion
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.core.errors import InvalidVersionError, UnparseableVersionError
from patchpilot.core.versions import (
    MAX_LENGTH,
    apk,
    check,
    compare,
    is_comparable,
    is_valid,
    rpm,
    sort_key,
    validate,
)

FAST = settings(max_examples=200, deadline=None)


def _join(parts: list[str]) -> str:
    return "".join(parts)


# --------------------------------------------------------------------------- strategies


@st.composite
def debian_versions(draw: st.DrawFn) -> str:
    """``[epoch:]upstream[-revision]`` per dpkg: upstream starts with a digit; ``:`` only
    with an epoch and ``-`` only with a revision."""
    epoch = draw(st.sampled_from(["", "", "0:", "1:", "2:", "01:", "10:"]))
    has_revision = draw(st.booleans())
    segments = ["0", "1", "2", "9", "10", "01", "00", ".", ".1", "a", "b", "Z", "~", "~rc", "+"]
    if epoch:
        segments.append(":")
    if has_revision:
        segments.append("-")
    upstream = draw(st.sampled_from(["0", "1", "2", "9", "10", "01", "00"])) + _join(
        draw(st.lists(st.sampled_from(segments), max_size=5))
    )
    revision = ""
    if has_revision:
        revision_segments = ["0", "1", "2", "10", "01", ".", "a", "b", "~", "+", "deb12u1", "~bpo"]
        revision_parts = st.lists(st.sampled_from(revision_segments), min_size=1, max_size=4)
        revision = "-" + _join(draw(revision_parts))
    return epoch + upstream + revision


_RPM_SEGMENTS = ["0", "1", "2", "10", "01", "a", "b", "rc", "git", "~", "^", ".", "_", "+"]
_rpm_field = st.lists(st.sampled_from(_RPM_SEGMENTS), min_size=1, max_size=6).map(_join)


@st.composite
def rpm_versions(draw: st.DrawFn) -> str:
    """``[epoch:]version[-release]`` with rpmbuild's characters and no ``..``."""
    epoch = draw(st.sampled_from(["", "", "0:", "1:", "2:", "00:"]))
    version = draw(_rpm_field.filter(lambda v: ".." not in v))
    release = draw(st.none() | _rpm_field.filter(lambda v: ".." not in v))
    return epoch + version + ("" if release is None else "-" + release)


@st.composite
def alpine_versions(draw: st.DrawFn) -> str:
    """``digit{.digit}...{letter}{_suf{#}}...{~hash}{-r#}``."""
    numbers = ["0", "1", "2", "10", "01", "001", "00"]
    out = draw(st.sampled_from(["0", "1", "2", "9", "10", "01", "001"]))
    out += _join(["." + n for n in draw(st.lists(st.sampled_from(numbers), max_size=3))])
    out += draw(st.sampled_from(["", "", "a", "b", "z"]))
    names = ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
    for _ in range(draw(st.integers(0, 2))):
        out += "_" + draw(st.sampled_from(names)) + draw(st.sampled_from(["", "0", "1", "2", "10"]))
    out += draw(st.sampled_from(["", "", "~0", "~1234", "~abcd", "~ff", "~0a"]))
    out += draw(st.sampled_from(["", "", "-r0", "-r1", "-r2", "-r10", "-r01"]))
    return out


@st.composite
def pypi_versions(draw: st.DrawFn) -> str:
    """PEP 440 ``[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]``, with some alternative spellings."""
    small = st.integers(0, 3).map(str)
    out = draw(st.sampled_from(["", "", "0!", "1!"]))
    out += ".".join(draw(st.lists(small, min_size=1, max_size=3)))
    if draw(st.booleans()):
        out += draw(st.sampled_from(["a", "b", "rc", "c", "-alpha", ".beta"])) + draw(small)
    if draw(st.booleans()):
        out += draw(st.sampled_from([".post", "-post", "_post", ".post"])) + draw(small)
    if draw(st.booleans()):
        out += draw(st.sampled_from([".dev", "-dev", ".dev"])) + draw(small)
    if draw(st.booleans()):
        local = draw(st.lists(st.sampled_from(["abc", "0", "1", "2", "10", "ubuntu"]), min_size=1))
        out += "+" + ".".join(local)
    return out


STRATEGIES: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "debian": debian_versions,
    "rpm": rpm_versions,
    "alpine": alpine_versions,
    "pypi": pypi_versions,
}
ECOSYSTEMS = list(STRATEGIES)

# Junk that real feeds and hosts carry, and the characters every grammar gives meaning to.
_JUNK = [*"0123456789.:-~^+_!/#@abrpzAZ é", "α", "ß", "\u00a0", "\t", "\x7f", "-r", "_p", "a1"]


@st.composite
def _mutated(draw: st.DrawFn, eco: str) -> str:
    """A valid version of ``eco`` with one to three pieces of junk inserted."""
    version: str = draw(STRATEGIES[eco]())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(version)))
        version = version[:at] + draw(st.sampled_from(_JUNK)) + version[at:]
    return version


def messy(eco: str) -> st.SearchStrategy[str]:
    """Valid, malformed and arbitrary strings for ``eco``, mostly of the comparable kind."""
    return st.one_of(
        STRATEGIES[eco](),
        _mutated(eco),
        _mutated(eco),
        st.lists(st.sampled_from(_JUNK), max_size=8).map(_join),
        st.text(max_size=10),
    )


def _common_unparseable(text: str) -> bool:
    """The class no ecosystem orders, written independently of the implementation."""
    return (
        text.strip() == ""
        or len(text) > MAX_LENGTH
        or any(unicodedata.category(c) in ("Cc", "Cs") for c in text)
    )


# What dpkg's parseversion() refuses with an error (the others are warnings at most).
DPKG_ERRORS = {
    "version string is empty",
    "version string has embedded spaces",
    "epoch in version is empty",
    "epoch in version is not number",
    "epoch in version is negative",
    "epoch in version is too big",
    "nothing after colon in version number",
    "revision number is empty",
    "version number is empty",
}


def _key_cmp(eco: str, a: str, b: str) -> int:
    ka, kb = sort_key(eco, a), sort_key(eco, b)
    return (ka > kb) - (ka < kb)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("eco", ECOSYSTEMS)
@FAST
@given(data=st.data())
def test_total_preorder_and_sort_key(eco: str, data: st.DataObject) -> None:
    """On three generated versions: valid, reflexive, antisymmetric, transitive, and
    sort_key orders (and hashes) exactly as compare."""
    triple = [data.draw(STRATEGIES[eco](), label=name) for name in "abc"]
    for v in triple:
        assert validate(eco, v) == v
        assert compare(eco, v, v) == 0
    for x, y in itertools.permutations(triple, 2):
        result = compare(eco, x, y)
        assert result in (-1, 0, 1)
        assert compare(eco, y, x) == -result, (x, y)
        assert _key_cmp(eco, x, y) == result, (x, y)
        if result == 0:
            assert hash(sort_key(eco, x)) == hash(sort_key(eco, y))
    for x, y, z in itertools.permutations(triple):
        if compare(eco, x, y) <= 0 and compare(eco, y, z) <= 0:
            assert compare(eco, x, z) <= 0, (x, y, z)


@pytest.mark.parametrize("eco", ECOSYSTEMS)
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=12) | st.text(alphabet="0123456789.:-~^+_abrpz!A ", max_size=12))
def test_arbitrary_text_is_accepted_or_refused_cleanly(eco: str, text: str) -> None:
    if is_valid(eco, text):
        assert is_comparable(eco, text)
        assert compare(eco, text, text) == 0
        sort_key(eco, text)
    else:
        with pytest.raises(InvalidVersionError):
            validate(eco, text)


@pytest.mark.parametrize("eco", ECOSYSTEMS)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_compare_never_raises_outside_the_unparseable_class(eco: str, data: st.DataObject) -> None:
    """compare() orders every string but the defined unparseable class, which it refuses with
    UnparseableVersionError (and nothing else): the shared class in every ecosystem, plus
    dpkg's syntax errors for Debian."""
    text = data.draw(messy(eco), label="text")
    refused: UnparseableVersionError | None = None
    try:
        result = compare(eco, text, "1.0")
    except UnparseableVersionError as exc:
        refused = exc
    if refused is not None:
        assert refused.ecosystem == eco
        assert not is_comparable(eco, text)
        if not _common_unparseable(text):
            assert eco == "debian", (text, refused.reason)
            assert refused.reason in DPKG_ERRORS, (text, refused.reason)
        return
    assert result in (-1, 0, 1)
    assert not _common_unparseable(text), text
    assert is_comparable(eco, text)
    assert check(eco, text) == text
    assert compare(eco, text, text) == 0


@pytest.mark.parametrize("eco", ECOSYSTEMS)
@FAST
@given(data=st.data())
def test_malformed_versions_are_totally_preordered(eco: str, data: st.DataObject) -> None:
    """On three comparable strings, valid or not: reflexive, antisymmetric, transitive, and
    sort_key orders (and hashes) exactly as compare."""
    triple = [
        data.draw(messy(eco).filter(lambda t: is_comparable(eco, t)), label=name) for name in "abc"
    ]
    for x, y in itertools.product(triple, repeat=2):
        result = compare(eco, x, y)
        assert compare(eco, y, x) == -result, (x, y)
        assert _key_cmp(eco, x, y) == result, (x, y)
        if result == 0:
            assert hash(sort_key(eco, x)) == hash(sort_key(eco, y))
    for x, y, z in itertools.permutations(triple):
        if compare(eco, x, y) <= 0 and compare(eco, y, z) <= 0:
            assert compare(eco, x, z) <= 0, (x, y, z)


@settings(max_examples=300, deadline=None)
@given(a=messy("rpm"), b=messy("rpm"))
def test_rpm_field_key_is_rpmvercmp(a: str, b: str) -> None:
    """The sort key of one field orders exactly as the rpmvercmp() port, on any text."""
    ka, kb = rpm._field_key(a), rpm._field_key(b)
    assert rpm.rpmvercmp(a, b) == (ka > kb) - (ka < kb), (a, b)


@settings(max_examples=300, deadline=None)
@given(a=messy("alpine"), b=messy("alpine"))
def test_alpine_compare_is_apk_compare_on_any_text(a: str, b: str) -> None:
    if is_comparable("alpine", a) and is_comparable("alpine", b):
        assert compare("alpine", a, b) == apk.compare_unchecked(a, b)


# --------------------------------------------------------------------------- cross-checks


@FAST
@given(a=debian_versions(), b=debian_versions())
def test_debian_agrees_with_python_debian(a: str, b: str) -> None:
    va, vb = NativeVersion(a), NativeVersion(b)
    assert compare("debian", a, b) == (va > vb) - (va < vb)


@FAST
@given(a=alpine_versions(), b=alpine_versions())
def test_alpine_validating_compare_is_apk_compare(a: str, b: str) -> None:
    assert compare("alpine", a, b) == apk.compare_unchecked(a, b)
    assert apk.match(a, "=", b) is (compare("alpine", a, b) == 0)
    assert apk.match(a, "<=", b) is (compare("alpine", a, b) <= 0)


_INSERTS = [*"0.a_~-rpA!", "_p", "-r", "~a"]


@st.composite
def _mutated_alpine(draw: st.DrawFn) -> str:
    version: str = draw(alpine_versions())
    at = draw(st.integers(0, len(version)))
    insert: str = draw(st.sampled_from(_INSERTS))
    return version[:at] + insert + version[at:]


@settings(max_examples=600, deadline=None)
@given(
    text=_mutated_alpine()
    | st.text(alphabet="0123456789.abcfgprz_~-", max_size=14)
    | st.text(max_size=8)
)
def test_alpine_validity_regex_is_the_tokenizer(text: str) -> None:
    assert apk.is_valid(text) is apk._is_valid_by_tokens(text)


@FAST
@given(a=alpine_versions())
def test_alpine_fuzzy_match_accepts_token_prefixes(a: str) -> None:
    # "a ~ b" holds whenever b is a token prefix of a, e.g. "3.6.9_rc1-r0 ~ 3.6".
    prefix = a.split("_", 1)[0].split("~", 1)[0].split("-", 1)[0]
    assert apk.match(a, "~", prefix)
    assert apk.match(a, "~", a)
