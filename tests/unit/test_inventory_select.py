"""Selecting hosts: targets, Ansible --limit patterns, errors and order."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import ConfigError, UnknownTargetError
from patchpilot.core.inventory import (
    LOCAL_HOST,
    Inventory,
    load_inventory,
    parse_inventory,
    select_hosts,
    split_patterns,
)
from patchpilot.core.models import Host

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

INVENTORY = """
hosts:
  web-1: {address: 10.0.0.1, tags: [nginx]}
  web-2: {address: 10.0.0.2, tags: [nginx, canary]}
  web-3: {address: 10.0.0.3}
  db-1: {address: 10.0.1.1}
  db-2: {address: 10.0.1.2, tags: [canary]}
  cache.example.com: {}
  lone: {address: 10.0.2.1}
groups:
  web: {hosts: [web-1, web-2, web-3]}
  db: {hosts: [db-1, db-2]}
  prod: {children: [web, db], hosts: [cache.example.com]}
  eu: {hosts: [web-1, db-1]}
  empty: {}
"""


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return parse_inventory(INVENTORY, file="inv.yaml")


def names(hosts: list[Host]) -> list[str]:
    return [h.name for h in hosts]


# --------------------------------------------------------------------------- targets


def test_no_target_means_all(inv: Inventory) -> None:
    assert names(select_hosts(inv)) == list(inv.hosts)
    assert names(select_hosts(inv, "all")) == list(inv.hosts)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("web-2", ["web-2"]),
        ("web", ["web-1", "web-2", "web-3"]),
        ("prod", ["web-1", "web-2", "web-3", "db-1", "db-2", "cache.example.com"]),
        ("canary", ["web-2", "db-2"]),  # a tag
        ("nginx", ["web-1", "web-2"]),
    ],
)
def test_target_host_group_or_tag(inv: Inventory, target: str, expected: list[str]) -> None:
    assert names(select_hosts(inv, target)) == expected


def test_local_target_is_builtin_unless_defined(inv: Inventory) -> None:
    (local,) = select_hosts(inv, "local")
    assert local is LOCAL_HOST
    assert (local.transport, local.address) == ("local", "127.0.0.1")

    own = parse_inventory("hosts: {local: {transport: local, criticality: 1}}", file="x.yaml")
    (defined,) = select_hosts(own, "local")
    assert defined.criticality == 1
    assert defined is own.hosts["local"]


def test_local_target_with_limit(inv: Inventory) -> None:
    assert select_hosts(inv, "local", "local") == [LOCAL_HOST]
    with pytest.raises(UnknownTargetError, match="leaves no host of target 'local'"):
        select_hosts(inv, "local", "web")


def test_unknown_target_lists_what_exists(inv: Inventory) -> None:
    with pytest.raises(UnknownTargetError) as info:
        select_hosts(inv, "nope")
    err = info.value
    assert err.key == "target"
    assert err.file == "inv.yaml"
    assert "target 'nope' is not a host, group or tag" in err.reason
    assert "hosts: web-1, web-2" in err.reason
    assert "groups: web, db, prod, eu, empty" in err.reason
    assert "tags: nginx, canary" in err.reason


def test_unknown_target_list_is_truncated() -> None:
    hosts = [Host(name=f"h{i:02d}", address=f"10.0.0.{i}") for i in range(1, 40)]
    with pytest.raises(UnknownTargetError, match=r"h10, … \(29 more\)"):
        select_hosts(Inventory(hosts), "nope")


def test_pattern_as_target_hints_at_limit(inv: Inventory) -> None:
    with pytest.raises(UnknownTargetError, match="use --limit for patterns"):
        select_hosts(inv, "web*")


def test_empty_group_target(inv: Inventory) -> None:
    with pytest.raises(UnknownTargetError, match="group 'empty' has no hosts"):
        select_hosts(inv, "empty")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("all", ["web-1", "web-2", "web-3", "db-1", "db-2", "cache.example.com", "lone"]),
        ("*", ["web-1", "web-2", "web-3", "db-1", "db-2", "cache.example.com", "lone"]),
        ("web-1", ["web-1"]),
        ("web", ["web-1", "web-2", "web-3"]),
        ("web*", ["web-1", "web-2", "web-3"]),
        ("*-1", ["web-1", "db-1"]),
        ("db-?", ["db-1", "db-2"]),
        ("*.example.com", ["cache.example.com"]),
        ("~web-[12]", ["web-1", "web-2"]),
        ("~.*-2$", ["web-2", "db-2"]),
        ("web:db", ["web-1", "web-2", "web-3", "db-1", "db-2"]),
        ("db,web", ["web-1", "web-2", "web-3", "db-1", "db-2"]),  # inventory order
        (" db , web-3 ", ["web-3", "db-1", "db-2"]),
        ("prod:&eu", ["web-1", "db-1"]),
        ("prod:!eu", ["web-2", "web-3", "db-2", "cache.example.com"]),
        ("!prod", ["lone"]),
        ("&eu", ["web-1", "db-1"]),
        ("web:db:&canary", ["web-2", "db-2"]),
        ("!canary:web", ["web-1", "web-3"]),  # order of terms does not matter
        ("prod,!web,!canary", ["db-1", "cache.example.com"]),
        ("web[0]", ["web-1"]),
        ("web[-1]", ["web-3"]),
        ("web[1:2]", ["web-2", "web-3"]),
        ("prod[4:]", ["db-2", "cache.example.com"]),
        ("web[0]:db[0]", ["web-1", "db-1"]),
        ("nginx", ["web-1", "web-2"]),  # tags are selectable like groups
        ("ungrouped", ["lone"]),
    ],
)
def test_limit_patterns(inv: Inventory, limit: str, expected: list[str]) -> None:
    assert names(select_hosts(inv, None, limit)) == expected


def test_limit_narrows_target(inv: Inventory) -> None:
    assert names(select_hosts(inv, "prod", "canary")) == ["web-2", "db-2"]
    assert names(select_hosts(inv, "web", "!web-2")) == ["web-1", "web-3"]
    assert names(select_hosts(inv, "web", "  ")) == ["web-1", "web-2", "web-3"]


@pytest.mark.parametrize("limit", ["nope", "web:nope", "web:!nope", "web:&nope", "zz*", "~^q"])
def test_limit_term_matching_nothing_is_an_error(inv: Inventory, limit: str) -> None:
    with pytest.raises(UnknownTargetError) as info:
        select_hosts(inv, None, limit)
    assert info.value.key == "limit"
    assert "matches no host, group or tag" in info.value.reason
    assert "available hosts: web-1" in info.value.reason


def test_limit_leaving_nothing(inv: Inventory) -> None:
    with pytest.raises(UnknownTargetError, match="leaves no host of target 'web'"):
        select_hosts(inv, "web", "db")
    with pytest.raises(UnknownTargetError, match="leaves no host"):
        select_hosts(inv, None, "web:&db")


@pytest.mark.parametrize(
    ("limit", "error", "message"),
    [
        ("~web[", ConfigError, "unbalanced"),
        ("~web[,db", ConfigError, "invalid pattern"),
        ("web[0-1]", ConfigError, r"use \[x:y\]"),
        ("web[7]", UnknownTargetError, "out of range"),
        ("web:!", ConfigError, "empty pattern"),
    ],
)
def test_malformed_limits(inv: Inventory, limit: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        select_hosts(inv, None, limit)


@pytest.mark.parametrize(
    ("pattern", "terms"),
    [
        ("a", ["a"]),
        ("a:b", ["a", "b"]),
        ("a:&b:!c", ["a", "&b", "!c"]),
        ("a,b:c", ["a", "b:c"]),
        (" a , b ,", ["a", "b"]),
        ("web[0:2]:db", ["web[0:2]", "db"]),
        ("2001:db8::1", ["2001:db8::1"]),
        ("host.example.com:22", ["host.example.com:22"]),
        ("", []),
    ],
)
def test_split_patterns(pattern: str, terms: list[str]) -> None:
    assert split_patterns(pattern) == terms


def test_ansible_inventory_targets_use_groups() -> None:
    inv = load_inventory(FIXTURES / "ansible" / "ini-basic" / "hosts.ini")
    assert names(select_hosts(inv, "eu")) == ["web01.example.com", "db-a"]
    assert names(select_hosts(inv, "canary")) == ["web-canary.example.com"]  # patchpilot_tags
    # the inventory's own group called "local" wins over the built-in local host
    assert names(select_hosts(inv, "local")) == ["localhost"]
    assert select_hosts(inv, "local")[0].transport == "local"


# --------------------------------------------------------------------------- property


GROUPS = ["g0", "g1", "g2", "g3"]


@st.composite
def inventories(draw: st.DrawFn) -> tuple[Inventory, dict[str, set[str]]]:
    count = draw(st.integers(1, 8))
    hosts = []
    members: dict[str, set[str]] = {g: set() for g in GROUPS}
    for i in range(count):
        groups = draw(st.frozensets(st.sampled_from(GROUPS)))
        hosts.append(Host(name=f"h{i}", address=f"10.0.0.{i + 1}", groups=groups, tags=groups))
        for g in groups:
            members[g].add(f"h{i}")
    return Inventory(hosts), members


_terms = st.lists(
    st.tuples(st.sampled_from(["", "&", "!"]), st.sampled_from(GROUPS)), min_size=1, max_size=5
)


@given(data=inventories(), terms=_terms, sep=st.sampled_from([":", ","]))
def test_limit_set_semantics(
    data: tuple[Inventory, dict[str, set[str]]], terms: list[tuple[str, str]], sep: str
) -> None:
    """Limit = union of plain terms (or all), then &terms intersect, !terms remove."""
    inv, members = data
    everyone = set(inv.hosts)
    plain = [members[g] for op, g in terms if op == ""]
    model = set().union(*plain) if plain else set(everyone)
    for op, g in terms:
        if op == "&":
            model &= members[g]
    for op, g in terms:
        if op == "!":
            model -= members[g]
    limit = sep.join(op + g for op, g in terms)

    if any(not members[g] for _, g in terms) or not model:
        with pytest.raises(UnknownTargetError):
            select_hosts(inv, None, limit)
        return
    selected = names(select_hosts(inv, None, limit))
    assert selected == [name for name in inv.hosts if name in model]
