"""patchpilot.core.versions against this machine's real ``dpkg --compare-versions``.

dpkg is the oracle for Debian ordering, malformed versions included: every Debian vector (both
shared files), our own cases, and hypothesis-generated strings (valid, mutated with junk, and
arbitrary text) are compared by both, and compare() must agree with dpkg on every string dpkg
accepts (with or without a warning) and refuse, as unparseable, every string dpkg refuses with
an error. rpm and apk-tools cannot run here; their ports are checked against the upstream
vectors in tests/unit/test_versions.py.

Needs the ``dpkg`` binary: without it the tests are skipped locally and fail in CI (``CI`` set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings

from patchpilot.core.errors import UnparseableVersionError
from patchpilot.core.versions import compare, is_comparable
from tests.unit.test_versions import DEBIAN_CASES, DPKG_FILE, Case, _need, _params
from tests.unit.test_versions_properties import DPKG_ERRORS, _common_unparseable, messy

pytestmark = pytest.mark.integration

RELATION = {-1: "lt", 0: "eq", 1: "gt"}
# dpkg's command line reads these as the *blank* version, not as a version string: its
# parseversion() is never called on them, so they are no test of the ordering.
DPKG_CLI_BLANKS = frozenset({"", "<unknown>"})
_ENV = {**os.environ, "LC_ALL": "C"}  # dpkg's messages untranslated


@pytest.fixture(scope="module")
def dpkg() -> str:
    path = shutil.which("dpkg")
    if path is None:
        message = "dpkg not found: these tests compare against the real dpkg --compare-versions"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is an error, not a skip)")
        pytest.skip(message)
    return path


def _dpkg(dpkg: str, a: str, relation: str, b: str) -> subprocess.CompletedProcess[bytes]:
    # "--" so that a version starting with "-" is not read as an option.
    return subprocess.run(
        [dpkg, "--compare-versions", "--", a, relation, b],
        capture_output=True,
        check=False,
        env=_ENV,
    )


def _assert_dpkg_agrees(dpkg: str, a: str, b: str) -> None:
    """compare(a, b) and dpkg agree; or both refuse a version dpkg errors on."""
    if _common_unparseable(a) or _common_unparseable(b):
        # Our own class (control characters, over-long, blank): stricter than dpkg on
        # purpose, so there is nothing to compare with.
        with pytest.raises(UnparseableVersionError):
            compare("debian", a, b)
        return
    refused: UnparseableVersionError | None = None
    try:
        ours = compare("debian", a, b)
    except UnparseableVersionError as exc:
        refused = exc
    if refused is not None:
        assert refused.reason in DPKG_ERRORS, refused
        done = _dpkg(dpkg, a, "eq", b)
        assert done.returncode == 2, (a, b, done)
        assert f"has bad syntax: {refused.reason}".encode() in done.stderr, (a, b, done.stderr)
        return
    done = _dpkg(dpkg, a, RELATION[ours], b)
    assert done.returncode == 0, (a, RELATION[ours], b, done.stderr)
    assert b"error" not in done.stderr, done.stderr


@pytest.mark.parametrize("case", _params(DEBIAN_CASES, DPKG_FILE))
def test_debian_vector_agrees_with_dpkg(case: Case | None, shared_dir: Path, dpkg: str) -> None:
    c: Case = _need(case, shared_dir, DPKG_FILE)
    assert compare("debian", c.a, c.b) == c.expected
    done = _dpkg(dpkg, c.a, RELATION[c.expected], c.b)
    assert done.returncode == 0, done.stderr
    assert not done.stderr  # well-formed: not even a warning
    done = _dpkg(dpkg, c.b, RELATION[-c.expected], c.a)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.0~rc1-1", "1.0-1"),
        ("2:1.0", "1:9.9"),
        ("1.2.3-1+deb12u1", "1.2.3-1"),
        ("1.0+dfsg-1", "1.0-1"),
        ("7.6p2-4", "7.6-0"),
        ("1.0-0", "1.0"),
        ("1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u2"),
        # malformed: dpkg warns and orders them
        ("abc", "1.0"),
        ("1.0_1", "1.0+1"),
        ("1.0é", "1.0a"),
        ("1.0é", "1.0+"),
        ("1.0ü~", "1.0ü"),
        ("+1:1.0", "1:1.0"),
        ("-0:1.0", "1.0"),
        (" 1.0 ", "1.0"),
        ("1.0-a_b", "1.0-a+b"),
        ("<unknown>x", "1"),
        # refused by dpkg with an error, and by compare() as unparseable
        ("a:1.0", "1.0"),
        ("1:", "1.0"),
        ("1.0-", "1.0"),
        ("-1", "1.0"),
        ("-1:1.0", "1.0"),
        ("2147483648:1", "1"),
        ("1 0", "1.0"),
    ],
)
def test_own_cases_agree_with_dpkg(a: str, b: str, dpkg: str) -> None:
    _assert_dpkg_agrees(dpkg, a, b)
    _assert_dpkg_agrees(dpkg, b, a)


def test_dpkg_refusals_are_unparseable(dpkg: str) -> None:
    for version in ("a:1.0", "1:", "1.0-", "-1", "-1:1.0", "2147483648:1", "1 0", "   "):
        assert not is_comparable("debian", version), version
        assert _dpkg(dpkg, version, "eq", "1").returncode == 2, version


@settings(max_examples=300, deadline=None)
@given(a=messy("debian"), b=messy("debian"))
def test_compare_agrees_with_dpkg_on_generated_strings(a: str, b: str, dpkg: str) -> None:
    if a in DPKG_CLI_BLANKS or b in DPKG_CLI_BLANKS:
        return  # see DPKG_CLI_BLANKS: dpkg's command line does not parse them
    _assert_dpkg_agrees(dpkg, a, b)
