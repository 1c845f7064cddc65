"""``--limit`` ``~regex`` terms: RE2 (linear time), bounded length, clear usage errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError, UnknownTargetError
from patchpilot.core.inventory import Inventory, parse_inventory, select_hosts, split_patterns
from patchpilot.core.inventory._select import MAX_LIMIT_LENGTH, MAX_REGEX_LENGTH
from patchpilot.core.models import Host

# Names that make Python's backtracking engine explode on ``(a+)+$`` (2**38 paths each).
EVIL_NAMES = ["a" * 38 + ".x", "a" * 30 + "-b", "web-1"]


@pytest.fixture(scope="module")
def evil() -> Inventory:
    return Inventory([Host(name=name, address="10.0.0.1") for name in EVIL_NAMES])


@pytest.mark.parametrize(
    "pattern",
    [
        "~(a+)+$",
        "~(a|a)*$",
        "~(a|aa)+$",
        "~(a*)*b$",
        "~^(([a-z])+.)+[A-Z]([a-z])+$",
    ],
)
def test_catastrophic_patterns_return_at_once(evil: Inventory, pattern: str) -> None:
    """Each would take hours in ``re`` on these names; RE2 answers in linear time."""
    with pytest.raises(UnknownTargetError, match="matches no host"):
        select_hosts(evil, None, pattern)


def test_catastrophic_pattern_still_matches_what_it_should(evil: Inventory) -> None:
    inv = Inventory([*evil.hosts.values(), Host(name="a" * 40, address="10.0.0.2")])
    assert [h.name for h in select_hosts(inv, None, "~(a+)+$")] == ["a" * 40]


def test_catastrophic_pattern_in_a_subprocess_finishes(tmp_path: Path) -> None:
    """End to end in a fresh interpreter; a hang would hit the (generous) timeout."""
    script = textwrap.dedent(
        f"""
        from patchpilot.core.errors import UnknownTargetError
        from patchpilot.core.inventory import Inventory, select_hosts
        from patchpilot.core.models import Host
        inv = Inventory([Host(name=n, address="10.0.0.1") for n in {EVIL_NAMES!r}])
        try:
            select_hosts(inv, None, "~(a+)+$")
        except UnknownTargetError as exc:
            print("refused:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "matches no host" in done.stdout
    assert "re2.cc" not in done.stderr  # RE2 does not print its own error log


def test_regex_still_anchored_at_start_like_ansible() -> None:
    inv = parse_inventory(
        "hosts: {web-1: {}, web-2: {}, db-web: {}}\ngroups: {webs: {hosts: [web-1]}}",
        file="i.yaml",
    )
    assert [h.name for h in select_hosts(inv, None, "~web-[12]")] == ["web-1", "web-2"]
    assert [h.name for h in select_hosts(inv, None, "~.*web$")] == ["db-web"]
    # The group "webs" matches too, as in Ansible: its members are selected.
    assert [h.name for h in select_hosts(inv, None, "~webs")] == ["web-1"]


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("~web(?=-1)", "RE2 syntax"),  # look-ahead: RE2 has none
        ("~(web)-\\1", "RE2 syntax"),  # back-reference
        ("~(web", "missing \\)"),
        ("~((a{1000}){1000}){1000}", "invalid repetition size"),  # over RE2's limits
        ("~(\\pL{200}){5}", "pattern too large"),  # over the memory cap
    ],
)
def test_unsupported_or_invalid_regex_is_a_config_error(
    evil: Inventory, pattern: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        select_hosts(evil, None, pattern)
    assert info.value.key == "limit"
    assert not isinstance(info.value, UnknownTargetError) or "matches no host" not in str(
        info.value
    )


def test_overlong_regex_is_refused_before_compiling(evil: Inventory) -> None:
    pattern = "~" + "(a+)+" * (MAX_REGEX_LENGTH // 5 + 1)
    with pytest.raises(ConfigError, match=f"at most {MAX_REGEX_LENGTH} are accepted"):
        select_hosts(evil, None, pattern)


def test_overlong_limit_is_refused_before_splitting(evil: Inventory) -> None:
    limit = ",".join(["web-1"] * (MAX_LIMIT_LENGTH // 5))
    with pytest.raises(ConfigError, match=f"at most {MAX_LIMIT_LENGTH} are accepted") as info:
        select_hosts(evil, None, limit)
    assert info.value.key == "limit"
    with pytest.raises(ConfigError, match="at most"):
        split_patterns("x" * 1_000_000)


def test_a_long_but_acceptable_limit_works(evil: Inventory) -> None:
    limit = ",".join(["web-1"] * (MAX_LIMIT_LENGTH // 6))
    assert [h.name for h in select_hosts(evil, None, limit)] == ["web-1"]


def test_control_characters_in_limit_or_target_are_refused(evil: Inventory) -> None:
    with pytest.raises(ConfigError, match=r"control character \\x1b"):
        select_hosts(evil, None, "web-1\x1b[2J")
    with pytest.raises(ConfigError, match="control character") as info:
        select_hosts(evil, "web\n1")
    assert info.value.key == "target"


def test_overlong_target_is_refused(evil: Inventory) -> None:
    with pytest.raises(ConfigError, match="at most") as info:
        select_hosts(evil, "w" * (MAX_LIMIT_LENGTH + 1))
    assert info.value.key == "target"
    assert len(str(info.value)) < 300  # the message does not echo a megabyte back


def test_pathological_helper_inputs_are_linear() -> None:
    """The splitter/subscript patterns (also RE2) on worst-case shaped input."""
    text = "[" + "]:" * 1500
    with pytest.raises(ConfigError):
        split_patterns(text)
    assert split_patterns("a" * 4000 + "[0]") == ["a" * 4000 + "[0]"]


def test_glob_with_many_stars_stays_cheap() -> None:
    """Globs keep fnmatch's translation, which has no exponential case either."""
    inv = Inventory([Host(name="a" * 250, address="10.0.0.1")])
    with pytest.raises(UnknownTargetError, match="matches no host"):
        select_hosts(inv, None, "*a" * 200 + "b")
    assert [h.name for h in select_hosts(inv, None, "*a" * 200)] == ["a" * 250]
