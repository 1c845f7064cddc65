"""patchpilot.core.versions: the shared vector files (read in place), API contract, PEP 440 edge
cases, and the malformed versions compare() orders (and the unparseable ones it refuses).

Every vector line is its own test id (``<file>:<line>``) and is checked in both directions; none
is skipped. The same vectors are checked against the real ``dpkg`` in
``tests/integration/test_versions_native.py``.
The vector files live in ``../shared/vectors`` (see the ``shared_dir`` fixture); the cases are
read at collection time to parametrize, and every case also requests ``shared_dir`` so that a
missing ``../shared`` fails with the fixture's message instead of silently collecting nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.errors import InvalidVersionError, UnparseableVersionError
from patchpilot.core.models import Ecosystem
from patchpilot.core.versions import (
    MAX_LENGTH,
    UnknownEcosystemError,
    VersionKey,
    apk,
    check,
    compare,
    debian,
    ecosystem_of,
    is_comparable,
    is_valid,
    pypi,
    rpm,
    sort_key,
    validate,
)
from tests.conftest import SHARED

VECTORS_SUBDIR = "vectors"
DPKG_FILE = "dpkg-compare-versions.txt"
OSV_DEBIAN_FILE = "osv-scalibr-debian-versions.txt"
RPM_FILE = "rpmvercmp.txt"
APK_FILE = "apk-version.data"
ODDITY = "#oddity "
OPS = {"<": -1, "=": 0, ">": 1}


@dataclass(frozen=True)
class Case:
    """One comparison line of a vector file."""

    file: str
    line: int
    a: str
    op: str
    b: str

    @property
    def expected(self) -> int:
        return OPS[self.op]


@dataclass(frozen=True)
class ValidityCase:
    """One bare (valid) or ``!``-prefixed (invalid) version line of apk-version.data."""

    line: int
    version: str
    valid: bool


def _lines(name: str) -> list[tuple[int, str]]:
    path = SHARED / VECTORS_SUBDIR / name
    if not path.is_file():
        return []
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))


def _comparisons(name: str, *, oddities: bool = False) -> list[Case]:
    """``A OP B`` lines; with ``oddities=True`` only the ``#oddity`` ones (rpmvercmp.txt)."""
    cases = []
    for number, raw in _lines(name):
        is_oddity = raw.startswith(ODDITY)
        if is_oddity != oddities:
            continue
        text = raw.removeprefix(ODDITY).split("#", 1)[0].strip()
        parts = text.split()
        if len(parts) == 3:
            cases.append(Case(name, number, *parts))
    return cases


def _params(cases: list[Any], name: str) -> list[Any]:
    if not cases:
        # Collected anyway: the test then fails through shared_dir or the file check.
        return [pytest.param(None, id=f"{name}:missing")]
    return [pytest.param(c, id=f"{Path(getattr(c, 'file', name)).stem}:{c.line}") for c in cases]


def _need(case: Any, shared_dir: Path, name: str) -> Any:
    path = shared_dir / VECTORS_SUBDIR / name
    if case is None:
        pytest.fail(f"vector file {path} is missing or has no cases")
    return case


def _content_lines(name: str) -> int:
    return sum(1 for _, raw in _lines(name) if raw.removeprefix(ODDITY).split("#", 1)[0].strip())


def _apk_validity() -> list[ValidityCase]:
    cases = []
    for number, raw in _lines(APK_FILE):
        text = raw.split("#", 1)[0].strip()
        if text and len(text.split()) == 1:
            valid = not text.startswith("!")
            cases.append(ValidityCase(number, text if valid else text[1:], valid))
    return cases


DEBIAN_CASES = _comparisons(DPKG_FILE) + _comparisons(OSV_DEBIAN_FILE)
RPM_CASES = _comparisons(RPM_FILE)
RPM_ODDITIES = _comparisons(RPM_FILE, oddities=True)
APK_ALL = _comparisons(APK_FILE)
APK_ORDER_CASES = [c for c in APK_ALL if c.op in OPS]
APK_FUZZY_CASES = [c for c in APK_ALL if c.op not in OPS]
APK_VALIDITY = _apk_validity()


def _key_cmp(eco: str, a: str, b: str) -> int:
    ka, kb = sort_key(eco, a), sort_key(eco, b)
    return (ka > kb) - (ka < kb)


# --------------------------------------------------------------------------- vector files


def test_vector_files_have_the_documented_number_of_cases(shared_dir: Path) -> None:
    for name in (DPKG_FILE, OSV_DEBIAN_FILE, RPM_FILE, APK_FILE):
        assert (shared_dir / VECTORS_SUBDIR / name).is_file(), name
    assert len(_comparisons(DPKG_FILE)) == 64
    assert len(_comparisons(OSV_DEBIAN_FILE)) == 30
    assert len(RPM_CASES) == 91
    assert len(RPM_ODDITIES) == 12
    assert len(APK_ORDER_CASES) == 738
    assert len(APK_FUZZY_CASES) == 16
    assert len(APK_VALIDITY) == 31
    # No content line is silently dropped by the parser.
    assert _content_lines(DPKG_FILE) == 64
    assert _content_lines(OSV_DEBIAN_FILE) == 30
    assert _content_lines(RPM_FILE) == 91 + 12
    assert _content_lines(APK_FILE) == 738 + 16 + 31


@pytest.mark.parametrize("case", _params(DEBIAN_CASES, DPKG_FILE))
def test_debian_vector(case: Case | None, shared_dir: Path) -> None:
    c: Case = _need(case, shared_dir, DPKG_FILE)
    assert compare("debian", c.a, c.b) == c.expected
    assert compare(Ecosystem.DEBIAN, c.b, c.a) == -c.expected
    assert _key_cmp("debian", c.a, c.b) == c.expected


@pytest.mark.parametrize("case", _params(RPM_CASES, RPM_FILE))
def test_rpm_vector(case: Case | None, shared_dir: Path) -> None:
    c: Case = _need(case, shared_dir, RPM_FILE)
    assert rpm.rpmvercmp(c.a, c.b) == c.expected
    assert rpm.rpmvercmp(c.b, c.a) == -c.expected
    # No vector contains "-" or ":", so as an EVR each is a bare version field.
    assert compare("rpm", c.a, c.b) == c.expected
    assert compare("rpm", c.b, c.a) == -c.expected
    assert _key_cmp("rpm", c.a, c.b) == c.expected


@pytest.mark.parametrize("case", _params(RPM_ODDITIES, RPM_FILE))
def test_rpm_oddity_documents_real_rpm_behaviour(case: Case | None, shared_dir: Path) -> None:
    """rpm disabled these (``dnl``) as surprising, but they are what rpmvercmp really returns.

    ``1b.fc17 < 1.fc17`` because after ``1`` the segments ``b`` and ``fc`` are compared as
    strings; non-ASCII letters are separators, so alpha and beta (Greek) compare equal. The
    port reproduces both, and compare() orders them as rpm does although rpmbuild (and so
    validate()) refuses non-ASCII in Version/Release.
    """
    c: Case = _need(case, shared_dir, RPM_FILE)
    assert rpm.rpmvercmp(c.a, c.b) == c.expected
    assert rpm.rpmvercmp(c.b, c.a) == -c.expected
    assert compare("rpm", c.a, c.b) == c.expected
    assert compare("rpm", c.b, c.a) == -c.expected
    assert _key_cmp("rpm", c.a, c.b) == c.expected
    assert is_valid("rpm", c.a) is c.a.isascii()


@pytest.mark.parametrize("case", _params(APK_ORDER_CASES, APK_FILE))
def test_apk_vector(case: Case | None, shared_dir: Path) -> None:
    c: Case = _need(case, shared_dir, APK_FILE)
    assert apk.compare_unchecked(c.a, c.b) == c.expected
    assert apk.compare_unchecked(c.b, c.a) == -c.expected
    # apk orders even invalid strings (line 6 says "invalid. do string sort"), and so does
    # compare(); only validate() refuses them.
    assert compare("alpine", c.a, c.b) == c.expected
    assert compare("alpine", c.b, c.a) == -c.expected
    assert _key_cmp("alpine", c.a, c.b) == c.expected


@pytest.mark.parametrize("case", _params(APK_FUZZY_CASES, APK_FILE))
def test_apk_fuzzy_vector(case: Case | None, shared_dir: Path) -> None:
    c: Case = _need(case, shared_dir, APK_FILE)
    assert apk.match(c.a, c.op, c.b)
    negated = c.op[1:] if c.op.startswith("!") else "!" + c.op
    assert not apk.match(c.a, negated, c.b)


@pytest.mark.parametrize("case", _params(APK_VALIDITY, APK_FILE))
def test_apk_validity_vector(case: ValidityCase | None, shared_dir: Path) -> None:
    c: ValidityCase = _need(case, shared_dir, APK_FILE)
    assert is_valid("alpine", c.version) is c.valid
    assert apk._is_valid_by_tokens(c.version) is c.valid
    if c.valid:
        assert validate("alpine", c.version) == c.version
    else:
        with pytest.raises(InvalidVersionError) as info:
            validate("alpine", c.version)
        assert info.value.ecosystem == "alpine"
        assert info.value.version == c.version


def test_apk_vectors_with_invalid_operands_are_the_known_four() -> None:
    invalid = [(c.line, c.a, c.b) for c in APK_ALL if not (apk.is_valid(c.a) and apk.is_valid(c.b))]
    assert [(a, b) for _, a, b in invalid] == [
        ("23_foo", "4_beta"),
        ("1.0", "1.0bc"),
        ("3.6.9_post1", "3.6"),
        ("3.6.9_post1", "3.8"),
    ]


# --------------------------------------------------------------------------- PyPI (PEP 440)

PYPI_CASES = [
    # normalisation and zero padding
    ("1.0", "=", "1.0.0"),
    ("1", "=", "1.0.0.0"),
    ("1.01", "=", "1.1"),
    ("v1.0", "=", "1.0"),
    ("1.0-rc1", "=", "1.0rc1"),
    ("1.0c1", "=", "1.0rc1"),
    ("1.0a", "=", "1.0a0"),
    ("1.0.POST2", "=", "1.0.post2"),
    ("1.0-1", "=", "1.0.post1"),
    ("1.0_post1", "=", "1.0.post1"),
    # epochs
    ("1!0.1", ">", "2.0"),
    ("0!9", "=", "9"),
    ("2!1.0", ">", "1!99.0"),
    # pre < final < post, dev before everything of its release
    ("1.0.dev0", "<", "1.0a0"),
    ("1.0a1", "<", "1.0b1"),
    ("1.0b1", "<", "1.0rc1"),
    ("1.0rc1", "<", "1.0"),
    ("1.0a1.dev1", "<", "1.0a1"),
    ("1.0a1", "<", "1.0a1.post1"),
    ("1.0", "<", "1.0.post1"),
    ("1.0.post1.dev1", "<", "1.0.post1"),
    ("1.0.post1", "<", "1.0.1"),
    ("1.0.dev1", ">", "0.9.post9"),
    ("1.0a1", ">", "1.0.dev1"),
    # local versions
    ("1.0+local", ">", "1.0"),
    ("1.0+local", "<", "1.0.post1"),
    ("1.0a1+local", "<", "1.0"),
    ("1.0+abc.1", "<", "1.0+abc.2"),
    ("1.0+abc.5", "<", "1.0+abc.10"),
    ("1.0+abc", "<", "1.0+1"),
    ("1.0+ABC", "=", "1.0+abc"),
    ("1.0+abc-1", "=", "1.0+abc.1"),
    ("1.0+abc", "<", "1.0+abc.0"),
    # numeric, not lexicographic
    ("1.9", "<", "1.10"),
    ("1.0.0.0.1", ">", "1.0"),
]


@pytest.mark.parametrize(("a", "op", "b"), PYPI_CASES, ids=[f"{a}{o}{b}" for a, o, b in PYPI_CASES])
def test_pypi_pep440_cases(a: str, op: str, b: str) -> None:
    assert compare("pypi", a, b) == OPS[op]
    assert compare("pypi", b, a) == -OPS[op]
    assert _key_cmp("pypi", a, b) == OPS[op]


@pytest.mark.parametrize("version", ["foo", "1.0-foo", "1.0.", "1..0", "1.0+", "1_0", "1.0+a b"])
def test_pypi_legacy_versions_are_invalid_but_ordered_below_pep440(version: str) -> None:
    assert not is_valid("pypi", version)
    with pytest.raises(InvalidVersionError, match="not a valid PEP 440 version") as info:
        validate("pypi", version)
    assert not isinstance(info.value, UnparseableVersionError)
    assert is_comparable("pypi", version)
    # packaging < 22 (LegacyVersion): every legacy version sorts below every PEP 440 one.
    assert compare("pypi", version, "0.0.0.dev0") == -1
    assert compare("pypi", "0!0.dev0", version) == 1
    assert compare("pypi", version, version) == 0


# setuptools' pre-PEP 440 scheme (packaging 21.3 LegacyVersion), on versions PEP 440 refuses.
PYPI_LEGACY_CASES = [
    ("1.0-foo", "<", "1.0-zzz"),
    ("1.1-foo", ">", "1.0-foo"),
    ("1.0.0-foo", "=", "1.0-foo"),  # zeros ending a numeric series are dropped
    ("1.0-FOO", "=", "1.0-foo"),  # case-insensitive
    ("2.4-openbsd", ">", "2.3-openbsd"),
    ("1.0.x", ">", "1.0-x"),  # "-" becomes "*final-", sorting before "*x"
    ("1.0-pre-x", "=", "1.0-c-x"),  # pre/preview/rc read as c
    ("1.0-dev-x", "<", "1.0-a-x"),  # dev read as @, below every letter
    ("1.10-x", ">", "1.9-x"),  # numbers padded to 8 digits
    ("foo", ">", "bar"),
]


@pytest.mark.parametrize(
    ("a", "op", "b"), PYPI_LEGACY_CASES, ids=[f"{a}{o}{b}" for a, o, b in PYPI_LEGACY_CASES]
)
def test_pypi_legacy_order(a: str, op: str, b: str) -> None:
    assert not is_valid("pypi", a)
    assert not is_valid("pypi", b)
    assert compare("pypi", a, b) == OPS[op]
    assert compare("pypi", b, a) == -OPS[op]
    assert _key_cmp("pypi", a, b) == OPS[op]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (" 1.0", "whitespace"),
        ("a1.0", "does not start with digit"),
        ("+1:1.0", "epoch in version is not a number"),
        ("1.0_1", "invalid character '_' in version number"),
        ("1:1.0-a:b", "invalid character ':' in revision number"),
        ("1.0-a_b", "invalid character '_' in revision number"),
        ("1.0é", "invalid character"),
    ],
)
def test_debian_malformed_is_invalid_but_ordered(version: str, reason: str) -> None:
    """What dpkg accepts with a *warning* (or silently trims): invalid, yet ordered."""
    assert not is_valid("debian", version)
    with pytest.raises(InvalidVersionError, match=reason) as info:
        validate(Ecosystem.DEBIAN, version)
    assert not isinstance(info.value, UnparseableVersionError)
    assert info.value.ecosystem == "debian"
    assert check("debian", version) == version
    assert compare("debian", version, version) == 0
    sort_key("debian", version)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        # dpkg's parseversion() errors, with dpkg's own messages
        ("", "version string is empty"),
        ("   ", "version string is empty"),
        ("1.0 1", "version string has embedded spaces"),
        (":1.0", "epoch in version is empty"),
        ("a:1.0", "epoch in version is empty"),
        ("+:1.0", "epoch in version is empty"),
        ("1a:1.0", "epoch in version is not number"),
        ("-1:1.0", "epoch in version is negative"),
        ("-99999999999999999999:1.0", "epoch in version is negative"),
        ("2147483648:1.0", "epoch in version is too big"),
        ("1:", "nothing after colon in version number"),
        ("1.0-", "revision number is empty"),
        ("-1", "version number is empty"),
        ("1:-1", "version number is empty"),
        # the class no ecosystem orders
        ("1.0\n", r"control character \(U\+000A\)"),
        ("1.0\t", r"control character \(U\+0009\)"),
        ("1.0\x7f", r"control character \(U\+007F\)"),
        ("1.0\x85", r"control character \(U\+0085\)"),
        ("1.0\ud800", r"unpaired surrogate \(U\+D800\)"),
        ("1" * (MAX_LENGTH + 1), "longer than 512 characters"),
    ],
)
def test_debian_unparseable(version: str, reason: str) -> None:
    with pytest.raises(UnparseableVersionError, match=reason) as info:
        compare("debian", version, "1.0")
    assert info.value.ecosystem == "debian"
    assert re.search(reason, info.value.reason)
    with pytest.raises(UnparseableVersionError):
        compare("debian", "1.0", version)
    with pytest.raises(UnparseableVersionError):
        sort_key("debian", version)
    with pytest.raises(UnparseableVersionError):
        validate("debian", version)
    assert not is_comparable("debian", version)
    assert not is_valid("debian", version)


@pytest.mark.parametrize(
    ("a", "op", "b"),
    [
        # dpkg orders what it only warns about; checked against the real dpkg in
        # tests/integration/test_versions_native.py.
        ("abc", ">", "1.0"),  # letters sort after digits ("1" vs "abc": 0 < 'a')
        ("1.0_1", ">", "1.0+1"),  # '_' (95+256) > '+' (43+256)
        ("1.0é", ">", "1.0a"),  # non-ASCII bytes weigh 128-255: above the letters...
        ("1.0é", "<", "1.0+"),  # ...and below the other ASCII characters
        ("+1:1.0", "=", "1:1.0"),  # strtol() takes a sign
        ("-0:1.0", "=", "1.0"),
        (" 1.0 ", "=", "1.0"),  # dpkg trims blanks
        ("1.0~", "<", "1.0"),
    ],
)
def test_debian_orders_malformed_versions_as_dpkg(a: str, op: str, b: str) -> None:
    assert compare("debian", a, b) == OPS[op]
    assert compare("debian", b, a) == -OPS[op]
    assert _key_cmp("debian", a, b) == OPS[op]


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("1.0", (0, "1.0", "")),
        ("0:0-0-0", (0, "0-0", "0")),
        ("9:1.18.36:5.4-20", (9, "1.18.36:5.4", "20")),
        ("1:2ab:5", (1, "2ab:5", "")),
        ("57:1.2.3abYZ+~-4-5", (57, "1.2.3abYZ+~-4", "5")),
        ("2147483647:1", (2147483647, "1", "")),
        ("007:1", (7, "1", "")),
    ],
)
def test_debian_split(version: str, parts: tuple[int, str, str]) -> None:
    assert validate("debian", version) == version
    assert debian.split(version) == parts
    assert debian.check(version) == version


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("1.0 ", "whitespace"),
        ("1..0", 'illegal sequence ".."'),
        ("1.0-", "release is empty"),
        ("-1", "version is empty"),
        ("1:", "version is empty"),
        (":1.0", "epoch is empty"),
        ("1.0-1-2", "illegal character '-' in version"),
        ("a:1.0", "illegal character ':' in version"),
        ("1.0/2", "illegal character '/'"),
        ("1.0-1.α", "illegal character 'α' in release"),
    ],
)
def test_rpm_malformed_is_invalid_but_ordered(version: str, reason: str) -> None:
    assert not is_valid("rpm", version)
    with pytest.raises(InvalidVersionError, match=reason) as info:
        validate("rpm", version)
    assert not isinstance(info.value, UnparseableVersionError)
    assert check("rpm", version) == version
    assert compare("rpm", version, version) == 0


@pytest.mark.parametrize(
    ("a", "op", "b"),
    [
        # parseEVR(): the epoch is the leading digits when a colon follows them. Otherwise
        # there is no epoch (0) and the colon stays in the version, where rpmvercmp() treats
        # it as a separator: a non-numeric epoch is part of the version.
        ("a:1.0", "<", "1.0"),  # alpha segment "a" < numeric segment "1"
        ("a:1.0", "<", "0:0"),
        ("a:1.0", ">", "a:0.9"),
        ("a:1.0", "=", "a.1.0"),
        ("1:1.0", ">", "a:1.0"),
        ("1a:2", "<", "1a:3"),  # "1a:2" is version "1a:2", like "1.a.2"
        ("1a:2", "=", "1.a.2"),
        (":1.0", "=", "0:1.0"),  # an empty epoch is 0
        ("1:", "<", "1:0"),  # empty version
        ("1:", ">", "0:9"),  # epoch 1, empty version
        ("1.0-", ">", "1.0"),  # an empty release is a release: above a missing one
        ("1.0-", "<", "1.0-0"),
        ("-1", "<", "0-1"),  # empty version
        ("1.0-1-2", "=", "1.0.1-2"),  # the release follows the last hyphen
        ("1.0 -1", "=", "1.0-1"),  # spaces are separators
        ("1.0/2", "=", "1.0.2"),
        ("1.0-1.α", "=", "1.0-1"),  # non-ASCII characters are separators
    ],
)
def test_rpm_orders_malformed_evrs_as_rpm(a: str, op: str, b: str) -> None:
    assert compare("rpm", a, b) == OPS[op]
    assert compare("rpm", b, a) == -OPS[op]
    assert _key_cmp("rpm", a, b) == OPS[op]


@pytest.mark.parametrize(
    ("evr", "parts"),
    [
        ("1.0", ("0", "1.0", None)),
        ("1:3.0.7-27.el9", ("1", "3.0.7", "27.el9")),
        ("0:1.0~rc1^git2-1%{dist}", ("0", "1.0~rc1^git2", "1%{dist}")),
    ],
)
def test_rpm_split(evr: str, parts: tuple[str, str, str | None]) -> None:
    assert rpm.split(evr) == parts


@pytest.mark.parametrize(
    ("a", "op", "b"),
    [
        ("1:1.0-1", ">", "2.0-1"),
        ("0:1.0-1", "=", "1.0-1"),
        ("00:1.0-1", "=", "1.0-1"),
        ("1.0", "<", "1.0-1"),  # a missing release sorts first (python rpm.labelCompare)
        ("1.0", "<", "1.0-~1"),
        ("1.0-1", "<", "1.0-1.el9"),
        ("1.0-1.el9", "<", "1.0-1.el9_1"),
        ("3.0.7-24.el9", "<", "3.0.7-27.el9"),
        ("1.0~rc1-1", "<", "1.0-1"),
        ("1.0-1~rc", "<", "1.0-1"),
        ("2.0-0.1.rc1.fc40", "<", "2.0-1.fc40"),
    ],
)
def test_rpm_evr(a: str, op: str, b: str) -> None:
    assert compare("rpm", a, b) == OPS[op]
    assert compare("rpm", b, a) == -OPS[op]
    assert _key_cmp("rpm", a, b) == OPS[op]


def test_apk_invalid_reason_points_at_the_offending_text() -> None:
    with pytest.raises(InvalidVersionError, match=r"unexpected '_foobar' at offset 3"):
        validate("alpine", "0.1_foobar")
    with pytest.raises(UnparseableVersionError, match="empty"):
        validate("alpine", "")


@pytest.mark.parametrize(
    ("a", "op", "b"),
    [
        # apk_version_compare() stops at the first invalid token, which sorts below the end of
        # the string (and above a pre-release suffix).
        ("1.0a1", "<", "1.0a"),  # a letter followed by digits: invalid after "a"
        ("1.0a1", "=", "1.0a2"),  # ...so what follows is never compared
        ("1.0a1", ">", "1.0"),  # "a" (a letter) > end
        ("1.0a1", ">", "1.0_rc1"),
        ("1.0_foo", "<", "1.0"),  # unknown suffix: invalid token
        ("1.0_foo", ">", "1.0_rc1"),
        ("1.0-1", "<", "1.0"),  # "-" not followed by "r"
        ("1.0-r", "<", "1.0"),  # "-r" without a number
        ("1.0.", "<", "1.0"),
        ("v1.0", "=", "x2.0"),  # invalid from the first token: all such versions are equal
        ("v1.0", "<", "0"),
        ("1.0 ", "<", "1.0"),
        ("1.0é", "=", "1.0 "),
    ],
)
def test_apk_orders_invalid_versions_as_apk(a: str, op: str, b: str) -> None:
    assert not (apk.is_valid(a) and apk.is_valid(b))
    assert compare("alpine", a, b) == OPS[op]
    assert compare("alpine", b, a) == -OPS[op]
    assert apk.compare_unchecked(a, b) == OPS[op]
    assert _key_cmp("alpine", a, b) == OPS[op]


def test_apk_numbers_wrap_like_apk_uint64() -> None:
    # apk parses digit runs into a uint64_t that silently wraps; the port does the same.
    assert compare("alpine", str(2**64 + 1), "1") == 0
    assert compare("alpine", "1." + str(2**64 + 2), "1.2") == 0


@pytest.mark.parametrize("eco", list(Ecosystem))
def test_long_digit_runs_compare_up_to_the_length_limit(eco: Ecosystem) -> None:
    big = "1" + "0" * (MAX_LENGTH - 3)
    # apk wraps at 2**64 (see above), the others compare the full number.
    assert compare(eco, big, "1") == (-1 if eco is Ecosystem.ALPINE else 1)
    assert compare(eco, "2." + big, "2." + big) == 0
    sort_key(eco, "2." + big)
    with pytest.raises(UnparseableVersionError, match=f"longer than {MAX_LENGTH} characters"):
        compare(eco, "1" + "0" * 5000, "1")


UNPARSEABLE_ANYWHERE = [
    ("", "version string is empty"),
    (" ", "version string is empty"),
    ("\u3000", "version string is empty"),  # only (Unicode) whitespace
    ("1.0\x00", "control character"),
    ("1.0\r", "control character"),
    ("\x1b[31m1.0", "control character"),
    ("1.0\x9b", "control character"),
    ("1.0\udfff", "unpaired surrogate"),
    ("9" * (MAX_LENGTH + 1), "longer than"),
]


@pytest.mark.parametrize("eco", list(Ecosystem))
@pytest.mark.parametrize(("version", "reason"), UNPARSEABLE_ANYWHERE)
def test_unparseable_in_every_ecosystem(eco: Ecosystem, version: str, reason: str) -> None:
    with pytest.raises(UnparseableVersionError, match=reason) as info:
        compare(eco, version, "1.0")
    error = info.value
    assert isinstance(error, InvalidVersionError)
    assert error.ecosystem == eco.value
    assert reason in error.reason
    assert len(error.version) <= MAX_LENGTH  # an over-long version is shortened in the error
    with pytest.raises(UnparseableVersionError, match=reason):
        compare(eco, "1.0", version)
    with pytest.raises(UnparseableVersionError, match=reason):
        check(eco, version)
    with pytest.raises(UnparseableVersionError, match=reason):
        sort_key(eco, version)
    with pytest.raises(UnparseableVersionError, match=reason):
        validate(eco, version)
    assert not is_comparable(eco, version)
    assert not is_valid(eco, version)


@pytest.mark.parametrize("eco", list(Ecosystem))
def test_comparable_is_wider_than_valid(eco: Ecosystem) -> None:
    assert check(eco, "1.0") == "1.0"
    assert is_comparable(eco, "1.0")
    assert is_comparable(eco, "1.0#not/a|version!")
    assert not is_valid(eco, "1.0#not/a|version!")


@pytest.mark.parametrize(
    ("a", "op", "b", "holds"),
    [
        ("3.6.0", "~", "3.6", True),
        ("3.7.0", "~", "3.6", False),
        ("3.6.0", "<=", "3.6.0", True),
        ("3.6.1", ">=", "3.6.0", True),
        ("3.6.1", "<", "3.6.0", False),
        ("3.6.1", "<>=", "9", True),
        ("3.6.1", "!=", "3.6.1", False),
    ],
)
def test_apk_match_operators(a: str, op: str, b: str, holds: bool) -> None:
    assert apk.match(a, op, b) is holds


def test_apk_match_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="not an apk version operator"):
        apk.match("1", "!", "2")
    with pytest.raises(ValueError, match="not an apk version operator"):
        apk.match("1", "==?", "2")


# --------------------------------------------------------------------------- API contract


@pytest.mark.parametrize("eco", ["npm", "", "deb", "apk"])
def test_unknown_ecosystem(eco: str) -> None:
    with pytest.raises(UnknownEcosystemError, match="expected one of: debian, rpm, alpine, pypi"):
        compare(eco, "1", "2")
    with pytest.raises(ValueError, match="unknown version ecosystem"):
        validate(eco, "1")


def test_unknown_ecosystem_of_wrong_type() -> None:
    with pytest.raises(UnknownEcosystemError):
        ecosystem_of(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("spelling", ["debian", "Debian", " DEBIAN ", Ecosystem.DEBIAN])
def test_ecosystem_spellings(spelling: str) -> None:
    assert ecosystem_of(spelling) is Ecosystem.DEBIAN
    assert compare(spelling, "1:1.0", "2.0") == 1


@pytest.mark.parametrize("eco", list(Ecosystem))
def test_non_string_version_is_unparseable(eco: Ecosystem) -> None:
    with pytest.raises(UnparseableVersionError, match="expected a string, got NoneType"):
        compare(eco, None, "1")  # type: ignore[arg-type]
    with pytest.raises(UnparseableVersionError, match="expected a string, got bytes"):
        compare(eco, "1", b"1")  # type: ignore[arg-type]
    assert not is_valid(eco, 1.0)  # type: ignore[arg-type]
    assert not is_comparable(eco, 1.0)  # type: ignore[arg-type]


def test_submodules_agree_with_dispatcher() -> None:
    assert debian.compare("1.0", "1.1") == compare("debian", "1.0", "1.1") == -1
    assert rpm.compare("1.1", "1.0") == compare("rpm", "1.1", "1.0") == 1
    assert apk.compare("1.0", "1.0") == compare("alpine", "1.0", "1.0") == 0
    assert pypi.compare("1.0", "1.1") == compare("pypi", "1.0", "1.1") == -1


def test_sort_key_sorts_and_hashes() -> None:
    versions = ["1.0-1", "1:0.1", "1.0~rc1-1", "1.0-0", "1.0"]
    ordered = sorted(versions, key=functools.partial(sort_key, "debian"))
    # "1.0-0" and "1.0" are equal (sorted() is stable, so they keep their input order).
    assert ordered == ["1.0~rc1-1", "1.0-0", "1.0", "1.0-1", "1:0.1"]
    assert sort_key("debian", "1.0") == sort_key("debian", "1.0-0")
    assert len({sort_key("debian", "1.0"), sort_key("debian", "0:1.0-0")}) == 1
    assert max(versions, key=functools.partial(sort_key, Ecosystem.DEBIAN)) == "1:0.1"


def test_version_keys_of_different_ecosystems_do_not_order() -> None:
    a, b = sort_key("rpm", "1.0"), sort_key("alpine", "1.0")
    assert isinstance(a, VersionKey)
    assert a != b
    with pytest.raises(TypeError, match="cannot order a rpm version against a alpine version"):
        _ = a < b
    with pytest.raises(TypeError):
        _ = a >= b
    assert a.__lt__(object()) is NotImplemented  # type: ignore[operator]


def test_validate_returns_input_unchanged() -> None:
    assert validate("debian", "1:9.2p1-2+deb12u3") == "1:9.2p1-2+deb12u3"
    assert validate("rpm", "1:3.0.7-27.el9") == "1:3.0.7-27.el9"
    assert validate("alpine", "1.2.3_rc1~abc-r0") == "1.2.3_rc1~abc-r0"
    assert validate("pypi", "V1.0-RC1") == "V1.0-RC1"


def test_invalid_version_error_is_a_value_error_with_context() -> None:
    with pytest.raises(ValueError, match=r"invalid rpm version '1\.\.0'") as info:
        validate("rpm", "1..0")
    assert isinstance(info.value, InvalidVersionError)
    assert info.value.version == "1..0"
    assert info.value.reason == 'illegal sequence ".." in version'
    assert compare("rpm", "1.0", "1..0") == 0  # rpm itself orders it
