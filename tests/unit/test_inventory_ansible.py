"""Ansible inventories: compared with what ansible-inventory itself says, plus edge cases.

The oracle is recorded in tests/fixtures/ansible/*.list.json (``ansible-inventory --list``) and
limit-patterns.json (``ansible INVENTORY PATTERN --list-hosts``) by record.sh; those comparisons
always run. When ansible-core is on PATH, the live tests also re-run it.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import random
import shutil
import string
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import ConfigError, UnknownTargetError, UnsafeArgumentError
from patchpilot.core.inventory import (
    Inventory,
    expand_host_range,
    load_inventory,
    parse_inventory,
    select_hosts,
)
from patchpilot.core.models import Exposure

ANSIBLE = Path(__file__).resolve().parents[1] / "fixtures" / "ansible"
SAMPLES = {
    "ini-basic": "hosts.ini",
    "yaml-nested": "inventory.yml",
    "ini-vars-dirs": "hosts",
    "ranges": "hosts",
}


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "user-home"
    monkeypatch.setenv("HOME", str(home))
    return home


# --------------------------------------------------------------------------- the oracle


def _group_hosts(
    listing: dict[str, Any], group: str, seen: frozenset[str] = frozenset()
) -> set[str]:
    entry = listing.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        if child not in seen:
            hosts |= _group_hosts(listing, child, seen | {group})
    return hosts


def _last(hostvars: dict[str, Any], *names: str) -> Any:
    """Ansible's ssh plugin: of several variable names, the last one defined wins."""
    found = None
    for name in names:
        if hostvars.get(name) is not None:
            found = hostvars[name]
    return found


def expected_hosts(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the recorded ansible-inventory output says each Host must be."""
    groups = [name for name in listing if name not in ("_meta", "all", "ungrouped")]
    expected: dict[str, dict[str, Any]] = {}
    for name in _group_hosts(listing, "all"):
        hv = listing["_meta"]["hostvars"].get(name, {})
        transport = "local" if hv.get("ansible_connection") == "local" else "ssh"
        address = _last(hv, "ansible_host", "ansible_ssh_host")
        key_file = _last(hv, "ansible_private_key_file", "ansible_ssh_private_key_file")
        member_of = {g for g in groups if name in _group_hosts(listing, g)}
        extra = hv.get("patchpilot_tags", [])
        extra = [t.strip() for t in extra.split(",")] if isinstance(extra, str) else extra
        expected[name] = {
            "address": address or ("127.0.0.1" if transport == "local" else name),
            "port": int(_last(hv, "ansible_port", "ansible_ssh_port") or 22),
            "user": _last(hv, "ansible_user", "ansible_ssh_user"),
            "key_file": os.path.expanduser(key_file) if key_file else None,
            "transport": transport,
            "groups": member_of,
            "tags": member_of | {t for t in extra if t},
            "criticality": hv.get("patchpilot_criticality", 3),
            "exposure": Exposure(hv.get("patchpilot_exposure", "internal")),
            "owner": hv.get("patchpilot_owner"),
        }
    return expected


def actual_hosts(inv: Inventory) -> dict[str, dict[str, Any]]:
    return {
        h.name: {
            "address": h.address,
            "port": h.port,
            "user": h.user,
            "key_file": h.key_file,
            "transport": h.transport,
            "groups": set(h.groups),
            "tags": set(h.tags),
            "criticality": h.criticality,
            "exposure": h.exposure,
            "owner": h.owner,
        }
        for h in inv
    }


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_matches_recorded_ansible_inventory(sample: str) -> None:
    listing = json.loads((ANSIBLE / f"{sample}.list.json").read_text(encoding="utf-8"))
    inv = load_inventory(ANSIBLE / sample / SAMPLES[sample])
    assert inv.format.startswith("ansible-")
    expected = expected_hosts(listing)
    actual = actual_hosts(inv)
    assert set(actual) == set(expected)
    for name in expected:
        assert actual[name] == expected[name], name
    groups = {g for g in listing if g not in ("_meta", "all", "ungrouped")}
    assert set(inv.groups) == groups


def _limit_cases() -> Iterator[tuple[str, str, list[str]]]:
    recorded = json.loads((ANSIBLE / "limit-patterns.json").read_text(encoding="utf-8"))
    for key, hosts in recorded.items():
        inventory, pattern = key.split("\t")
        yield inventory, pattern, hosts


@pytest.mark.parametrize(("inventory", "pattern", "hosts"), list(_limit_cases()))
def test_limit_matches_recorded_ansible(inventory: str, pattern: str, hosts: list[str]) -> None:
    inv = load_inventory(ANSIBLE / inventory)
    if not hosts:
        # Ansible warns and selects nothing; patchpilot refuses.
        with pytest.raises(UnknownTargetError):
            select_hosts(inv, None, pattern)
        return
    selected = [h.name for h in select_hosts(inv, None, pattern)]
    if "[" in pattern and not pattern.startswith("~") and "*" not in pattern:
        assert selected == hosts  # subscripts pick by position: order matters
    else:
        assert set(selected) == set(hosts)
    # patchpilot always answers in inventory order
    order = list(inv.hosts)
    assert selected == sorted(selected, key=order.index)


def test_recorded_oracle_metadata() -> None:
    version = (ANSIBLE / "ansible-version.txt").read_text(encoding="utf-8")
    assert version.startswith("ansible-inventory [core ")


# --------------------------------------------------------------------------- live ansible


def _find_ansible_inventory() -> str | None:
    """ansible-inventory on PATH, or beside this interpreter when ansible is importable here."""
    found = shutil.which("ansible-inventory")
    if found is None and importlib.util.find_spec("ansible") is not None:
        beside = Path(sys.executable).parent / "ansible-inventory"
        found = str(beside) if beside.exists() else None
    return found


_ANSIBLE_INVENTORY = _find_ansible_inventory()
live = pytest.mark.skipif(_ANSIBLE_INVENTORY is None, reason="ansible-core is not installed")


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "ansible.cfg"
    config.write_text("", encoding="utf-8")
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
    }


@live
@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_live_ansible_inventory(sample: str, tmp_path: Path) -> None:
    assert _ANSIBLE_INVENTORY is not None
    out = subprocess.run(
        [_ANSIBLE_INVENTORY, "-i", str(ANSIBLE / sample / SAMPLES[sample]), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env=_ansible_env(tmp_path),
        timeout=120,
    )
    listing = json.loads(out.stdout)
    recorded = json.loads((ANSIBLE / f"{sample}.list.json").read_text(encoding="utf-8"))
    assert expected_hosts(listing) == expected_hosts(recorded), "re-run record.sh"
    assert actual_hosts(load_inventory(ANSIBLE / sample / SAMPLES[sample])) == expected_hosts(
        listing
    )


def _random_range_patterns(count: int) -> list[str]:
    rng = random.Random(20240601)
    patterns = []
    for _ in range(count):
        parts = [rng.choice(["web", "db-", "n", ""])]
        for _ in range(rng.randint(1, 2)):
            if rng.random() < 0.3:
                first, last = sorted(
                    rng.sample(string.ascii_letters, 2), key=string.ascii_letters.index
                )
                body = f"{first}:{last}"
            else:
                lo = rng.randint(0, 20)
                hi = rng.randint(lo, lo + 15)
                width = rng.choice([0, 0, 2, 3])
                body = f"{str(lo).zfill(width)}:{str(hi).zfill(width)}" if width else f"{lo}:{hi}"
                if not width and rng.random() < 0.1:
                    body = f":{hi}"  # an empty begin means 0
            if rng.random() < 0.3:
                body += f":{rng.randint(1, 4)}"
            parts.append(f"[{body}]")
            parts.append(rng.choice(["", ".lab", "-x", "u"]))
        patterns.append("".join(parts))
    return patterns


@live
@pytest.mark.slow
def test_live_ansible_range_expansion() -> None:
    assert _ANSIBLE_INVENTORY is not None
    shebang = Path(_ANSIBLE_INVENTORY).read_text(encoding="utf-8").splitlines()[0]
    python = shebang.removeprefix("#!").strip().split()[0]
    patterns = _random_range_patterns(300)
    code = (
        "import json, sys\n"
        "from ansible.plugins.inventory import expand_hostname_range\n"
        "print(json.dumps([expand_hostname_range(p) for p in json.load(sys.stdin)]))\n"
    )
    out = subprocess.run(
        [python, "-c", code],
        input=json.dumps(patterns),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    for pattern, theirs in zip(patterns, json.loads(out.stdout), strict=True):
        assert expand_host_range(pattern) == theirs, pattern


# --------------------------------------------------------------------------- host ranges


def test_range_examples() -> None:
    assert expand_host_range("web[01:03].example.com") == [
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
    ]
    assert expand_host_range("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert expand_host_range("n[0:10:5]") == ["n0", "n5", "n10"]
    assert expand_host_range("n[:2]") == ["n0", "n1", "n2"]
    assert expand_host_range("x[y:B]") == ["xy", "xz", "xA", "xB"]
    assert expand_host_range("r[1:2]u[a:b]") == ["r1ua", "r1ub", "r2ua", "r2ub"]
    assert expand_host_range("plain") == ["plain"]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("web[3:1]", "empty"),
        ("web[01:5]", "equal-length"),
        ("web[1:3:0]", "positive step"),
        ("web[1:3:x]", "non-numeric step"),
        ("web[1]", "begin:end"),
        ("web[1:]", "end value"),
        ("web[a:3]", "numeric or single letters"),
        ("web[c:a]", "begin <= end"),
        ("web[1:3", "unclosed"),
        ("web[0:99999]", "more than"),
        ("a[0:99]b[0:99]c[0:99]", "more than"),
    ],
)
def test_range_errors(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        expand_host_range(pattern)


_numeric_range = st.builds(
    lambda lo, span, step, pad: (lo, lo + span, step, pad),
    st.integers(0, 200),
    st.integers(0, 40),
    st.integers(1, 7),
    st.booleans(),
)
_alpha_range = st.tuples(
    st.integers(0, len(string.ascii_letters) - 1),
    st.integers(0, 20),
    st.integers(1, 5),
)
_text = st.text(alphabet=string.ascii_lowercase + string.digits + ".-_", max_size=6)


@given(
    head=_text,
    ranges=st.lists(
        st.tuples(st.one_of(_numeric_range, _alpha_range), _text), min_size=1, max_size=3
    ),
)
def test_range_expansion_is_a_product(head: str, ranges: list[tuple[tuple[int, ...], str]]) -> None:
    """Expanding ranges equals the cartesian product of each range's formatted values."""
    pattern = head
    sequences: list[list[str]] = []
    for spec, tail in ranges:
        if len(spec) == 4:
            lo, hi, step, pad = spec
            width = len(str(hi)) + 1 if pad else 0
            body = f"{str(lo).zfill(width)}:{str(hi).zfill(width)}" if pad else f"{lo}:{hi}"
            values = [str(n).zfill(width) for n in range(lo, hi + 1, step)]
        else:
            first, span, step = spec
            last = min(first + span, len(string.ascii_letters) - 1)
            body = f"{string.ascii_letters[first]}:{string.ascii_letters[last]}"
            values = list(string.ascii_letters[first : last + 1 : step])
        pattern += f"[{body}:{step}]{tail}"
        sequences.append([v + tail for v in values])
    expected = ["".join((head, *combo)) for combo in itertools.product(*sequences)]
    if len(expected) > 10_000:
        with pytest.raises(ValueError, match="more than"):
            expand_host_range(pattern)
        return
    assert expand_host_range(pattern) == expected


# --------------------------------------------------------------------------- INI details


def ini(text: str, *, name: str = "hosts.ini") -> Inventory:
    return parse_inventory(textwrap.dedent(text), file=name)


def ini_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ini(text)
    assert info.value.file == "hosts.ini"
    return info.value


def test_ini_port_applies_when_host_first_seen() -> None:
    inv = ini(
        """
        [a]
        h1:2222
        [b]
        h1:3333
        h2:2200 ansible_port=2300
        """
    )
    assert inv.hosts["h1"].port == 2222
    assert inv.hosts["h2"].port == 2300  # an explicit variable overrides host:port
    assert inv.hosts["h1"].groups == {"a", "b"}


def test_ini_values_are_python_literals() -> None:
    inv = ini(
        """
        h1 ansible_port=2222 patchpilot_owner="ops team" patchpilot_tags="['x', 'y']"
        h2 patchpilot_tags=a,b patchpilot_criticality=5 ansible_host=h2.example.com
        """
    )
    h1, h2 = inv.hosts["h1"], inv.hosts["h2"]
    assert (h1.port, h1.owner, h1.tags) == (2222, "ops team", frozenset({"x", "y"}))
    assert (h2.tags, h2.criticality, h2.address) == (frozenset({"a", "b"}), 5, "h2.example.com")


def test_ini_ungrouped_vars_apply_only_to_ungrouped() -> None:
    inv = ini(
        """
        lonely
        twice
        [ungrouped:vars]
        ansible_user=u
        [g]
        twice
        """
    )
    assert inv.hosts["lonely"].user == "u"
    assert inv.hosts["twice"].user is None  # Ansible drops it from ungrouped
    assert inv.hosts["lonely"].groups == frozenset()
    assert inv.hosts["twice"].groups == {"g"}


def test_ini_child_declared_later() -> None:
    inv = ini(
        """
        [parent:children]
        child
        [child]
        h1
        [parent:vars]
        ansible_user=p
        """
    )
    assert inv.hosts["h1"].groups == {"parent", "child"}
    assert inv.hosts["h1"].user == "p"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[web:foo]\nh1\n", "line 1 [web:foo]", "section type 'foo' is unknown"),
        ("[web servers]\nh1\n", "line 1", "invalid section header"),
        ("[web:vars]\na=1\n", "line 1 [web:vars]", "has no [web] or [web:children] section"),
        ("[p:children]\nnope\n", "line 2 [p:children]", "includes group 'nope'"),
        ("[web]\nh1 foo\n", "line 2 [web]", "expected key=value host variable, got 'foo'"),
        ("[web]\nh1\n[web:vars]\nnovalue\n", "line 4 [web:vars]", "expected key=value"),
        ("[web]\nh1 a='unclosed\n", "line 2 [web]", "cannot split host line"),
        ("[web]\nh1:\n", "line 2 [web]", "ends in ':'"),
        ("---\nall:\n", "line 1 [ungrouped]", "YAML"),
        ("[web]\nweb[3:1]\n", "line 2 [web]", "empty"),
        ("[web]\nh1\n[web:children]\nweb\n", "line 4 [web:children]", "child of itself"),
        ("[a:children]\nb\n[b:children]\na\n", "line 4 [b:children]", "cycle in group children"),
        ("[web]\nh1 ansible_port=70000\n", "line 2 [web] ansible_port", "between 1 and 65535"),
        ("[web]\nh1 patchpilot_exposure=public\n", "line 2 [web] patchpilot_exposure", "one of"),
        ("[web]\nh1 patchpilot_criticality=9\n", "line 2 [web] patchpilot_criticality", "1 and 5"),
    ],
)
def test_ini_errors(text: str, key: str, reason: str) -> None:
    err = ini_error(text)
    assert err.key == key
    assert reason in err.reason


@pytest.mark.parametrize(
    "line",
    [
        "-oProxyCommand=x",
        "'a;rm -rf /'",
        "$(id)",
        "'web 1'",
        "h1 ansible_host=-oProxyCommand=x",
        "h1 ansible_host='$(id)'",
        "h1 ansible_host='a;rm -rf /'",
        "h1 ansible_user=-lroot",
        "h1 ansible_user='root;id'",
        'h1 ansible_host=\'{{ lookup("pipe", "id") }}\'',
    ],
)
def test_ini_hostile_values_rejected(line: str) -> None:
    err = ini_error(f"[web]\n{line}\n")
    assert err.key is not None
    assert err.key.startswith("line 2 [web]")
    assert isinstance(err.__cause__, UnsafeArgumentError)


def test_ini_hostile_group_name_rejected() -> None:
    err = ini_error("[web$(id)]\nh1\n")
    assert "group name" in err.reason


@pytest.mark.parametrize(
    "text",
    [
        "[web]\nh1 ansible_become_pass=secret\n",
        "[all:vars]\nansible_password=secret\n",
        "[web]\nh1\n[web:vars]\nansible_ssh_pass=secret\n",
        "h1 ansible_become_password=x\n",
    ],
)
def test_ini_passwords_refused(text: str) -> None:
    err = ini_error(text)
    assert "passwords are not accepted" in err.reason
    assert "SSH keys" in err.reason


def test_unsupported_connection_is_skipped() -> None:
    with structlog.testing.capture_logs() as logs:
        inv = ini(
            """
            [windows]
            win1 ansible_connection=winrm
            [linux]
            lin1 ansible_connection=ssh
            lin2 ansible_connection=paramiko
            box ansible_connection=ansible.builtin.local
            """
        )
    assert list(inv.hosts) == ["lin1", "lin2", "box"]
    assert inv.hosts["box"].transport == "local"
    assert "winrm" in inv.skipped["win1"]
    assert any(e["event"] == "inventory.host_skipped" for e in logs)
    assert inv.groups["windows"] == ()


def test_ssh_aliases_last_one_wins() -> None:
    inv = ini(
        """
        h1 ansible_host=10.0.0.1 ansible_ssh_host=10.0.0.2 ansible_port=1 ansible_ssh_port=2
        h2 ansible_user=a ansible_ssh_user=b
        h2 ansible_ssh_private_key_file=/k2 ansible_private_key_file=/k1
        """
    )
    assert (inv.hosts["h1"].address, inv.hosts["h1"].port) == ("10.0.0.2", 2)
    assert (inv.hosts["h2"].user, inv.hosts["h2"].key_file) == ("b", "/k2")


# --------------------------------------------------------------------------- YAML details


def ayaml(text: str) -> Inventory:
    return parse_inventory(textwrap.dedent(text), file="inv.yml", format="ansible-yaml")


def yaml_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ayaml(text)
    assert info.value.file == "inv.yml"
    return info.value


def test_yaml_group_host_as_string_and_empty_sections() -> None:
    inv = ayaml(
        """
        all:
          children:
            web:
              hosts: web1
              vars:
            empty:
        """
    )
    assert inv.hosts["web1"].groups == {"web"}
    assert inv.groups["empty"] == ()


def test_yaml_unexpected_keys_skipped_with_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        inv = ayaml(
            """
            all:
              hots:
                web1:
              hosts:
                web2:
            """
        )
    assert list(inv.hosts) == ["web2"]
    assert any(e["event"] == "inventory.skipped_key" and e["key"] == "all.hots" for e in logs)


def test_yaml_duplicate_keys_warn_and_last_wins() -> None:
    with structlog.testing.capture_logs() as logs:
        inv = ayaml(
            """
            all:
              hosts:
                web1: {ansible_port: 1}
                web1: {ansible_port: 2}
            """
        )
    assert inv.hosts["web1"].port == 2
    assert any(e["event"] == "inventory.duplicate_key" for e in logs)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("all:\n  hosts: [a, b]\n", None, "'hosts' of group 'all' must be a mapping"),
        ("all:\n  hosts:\n    a: [1]\n", "all.hosts.a", "host variables must be a mapping"),
        ("all:\n  hosts:\n    1:\n", "all.hosts.1", "must be a string"),
        ("plugin: aws_ec2\n", "plugin", "inventory plugin configuration"),
        (
            "all:\n  children:\n    a:\n      children:\n"
            "        b:\n          children:\n            a:\n",
            "all.children.a.children.b.children.a",
            "cycle in group children: a -> b -> a",
        ),
        (
            "all:\n  hosts:\n    web1: {ansible_port: abc}\n",
            "all.hosts.web1.ansible_port",
            "integer",
        ),
        (
            "all:\n  hosts:\n    web1: {ansible_user: !vault secret}\n",
            "all.hosts.web1.ansible_user",
            "vault-encrypted",
        ),
        (
            "all:\n  vars: {ansible_become_password: x}\n  hosts: {web1: }\n",
            "all.vars.ansible_become_password",
            "passwords are not accepted",
        ),
        ("all:\n  hosts:\n    '-oProxyCommand=x':\n", "all.hosts.-oProxyCommand=x", "unsafe"),
        ("all:\n  hosts:\n    'a;rm -rf /':\n", "all.hosts.a;rm -rf /", "unsafe"),
        ("all:\n  children:\n    '$(id)':\n", "all.children.$(id)", "unsafe group name"),
    ],
)
def test_yaml_errors(text: str, key: str | None, reason: str) -> None:
    err = yaml_error(text)
    if key is not None:
        assert err.key == key
    assert reason in err.reason


def test_yaml_vault_on_unused_variable_is_fine() -> None:
    inv = ayaml(
        """
        all:
          hosts:
            web1:
              api_token: !vault |
                $ANSIBLE_VAULT;1.1;AES256
                6132
              ansible_user: !unsafe deploy
        """
    )
    assert inv.hosts["web1"].user == "deploy"


def test_vars_dirs_password_refused(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web]\nweb1\n", encoding="utf-8")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "web.yml").write_text("ansible_ssh_pass: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="passwords are not accepted") as info:
        load_inventory(tmp_path / "hosts")
    assert info.value.key == "group_vars/web.yml: ansible_ssh_pass"


def test_vault_encrypted_vars_file_skipped(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web]\nweb1\n", encoding="utf-8")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all").write_text(
        "$ANSIBLE_VAULT;1.1;AES256\n3132\n", encoding="utf-8"
    )
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web1.yaml").write_text("ansible_user: u\n", encoding="utf-8")
    with structlog.testing.capture_logs() as logs:
        inv = load_inventory(tmp_path / "hosts")
    assert inv.hosts["web1"].user == "u"
    assert any(e["event"] == "inventory.vault_file_skipped" for e in logs)


def test_vars_file_must_be_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("web1\n", encoding="utf-8")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web1.yml").write_text("- a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_inventory(tmp_path / "hosts")


def test_parse_without_base_dir_reads_no_vars_dirs() -> None:
    text = (ANSIBLE / "ini-vars-dirs" / "hosts").read_text(encoding="utf-8")
    inv = parse_inventory(text, format="ansible-ini")
    assert inv.hosts["web1"].user is None


# --------------------------------------------------------------------------- --list JSON

JSON_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ansible-json"


def _by_name(inv: Inventory) -> dict[str, dict[str, Any]]:
    return {h.name: h.model_dump() for h in inv}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_list_json_loads_like_the_inventory_it_came_from(sample: str) -> None:
    """`ansible-inventory --list` output of every sample gives the very same hosts and groups."""
    from_json = load_inventory(ANSIBLE / f"{sample}.list.json")
    source = load_inventory(ANSIBLE / sample / SAMPLES[sample])
    assert from_json.format == "ansible-json"
    assert _by_name(from_json) == _by_name(source)
    assert {g: set(h) for g, h in from_json.groups.items()} == {
        g: set(h) for g, h in source.groups.items()
    }


def test_bastion_sample_list_export_and_ini_agree() -> None:
    """hosts.ini, its recorded --list and --list --export output: same hosts, jumps, become."""
    loaded = [
        load_inventory(JSON_FIXTURES / name)
        for name in ("hosts.ini", "hosts.list.json", "hosts.export.json")
    ]
    assert [inv.format for inv in loaded] == ["ansible-ini", "ansible-json", "ansible-json"]
    first = _by_name(loaded[0])
    assert all(_by_name(inv) == first for inv in loaded[1:])
    inv = loaded[1]
    assert dict(inv.skipped) == {
        "legacy01": "ansible_become_method 'su' is not supported: patchpilot escalates only "
        "with `sudo -n`"
    }
    routes = {h.name: [j.spec for j in h.jump] for h in inv}
    behind = ["ops@bastion.example.com:2222"]
    assert routes == {
        "bastion.example.com": [],
        "web01.internal": behind,  # -o ProxyJump= in group ansible_ssh_common_args
        "web02.internal": behind,
        "db01.internal": behind,  # ProxyCommand="ssh -W %h:%p ..." and the group's -J agree
        "db02.internal": behind,  # -J in the group's ansible_ssh_extra_args
        "edge01": [],
    }
    assert [
        (h.name, h.become, h.become_user) for h in inv if not h.become or h.become_user != "root"
    ] == [
        ("db02.internal", True, "postgres"),
        ("edge01", False, "root"),
    ]
    assert inv.hosts["db01.internal"].address == "10.20.0.5"
    assert inv.hosts["db01.internal"].criticality == 5
    assert inv.hosts["bastion.example.com"].exposure is Exposure.INTERNET


def test_bastion_sample_oracle_metadata() -> None:
    version = (JSON_FIXTURES / "ansible-version.txt").read_text(encoding="utf-8")
    assert version.startswith("ansible-inventory [core ")


@live
@pytest.mark.slow
def test_live_bastion_sample(tmp_path: Path) -> None:
    assert _ANSIBLE_INVENTORY is not None
    out = subprocess.run(
        [_ANSIBLE_INVENTORY, "-i", str(JSON_FIXTURES / "hosts.ini"), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env=_ansible_env(tmp_path),
        timeout=120,
    )
    recorded = json.loads((JSON_FIXTURES / "hosts.list.json").read_text(encoding="utf-8"))
    assert json.loads(out.stdout) == recorded, "re-run tests/fixtures/ansible-json/record.sh"


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_standard_input_is_an_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (JSON_FIXTURES / "hosts.list.json").read_bytes()
    _stdin(monkeypatch, data)
    inv = load_inventory("-")
    assert (inv.source, inv.format) == ("<stdin>", "ansible-json")
    assert _by_name(inv) == _by_name(load_inventory(JSON_FIXTURES / "hosts.list.json"))
    _stdin(monkeypatch, b"[web]\nweb1 ansible_port=2200\n")  # any format works on stdin
    assert load_inventory("-").hosts["web1"].port == 2200
    _stdin(monkeypatch, b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_inventory("-")


def test_cli_reads_the_inventory_from_standard_input(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env.update(PATCHPILOT_HOME=str(tmp_path / "pp"), HOME=str(tmp_path / "home"))
    res = subprocess.run(
        [sys.executable, "-m", "patchpilot", "inventory", "-i", "-", "-f", "json"],
        input=(JSON_FIXTURES / "hosts.list.json").read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    hosts = {h["name"]: h for h in json.loads(res.stdout)["hosts"]}
    assert hosts["db01.internal"]["jump"] == [
        {
            "name": "bastion.example.com",
            "address": "bastion.example.com",
            "port": 2222,
            "user": "ops",
            "key_file": None,
        }
    ]
    assert hosts["edge01"]["become"] is False
    assert "StrictHostKeyChecking" in res.stderr  # the ignored option is warned about


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("inv.json", '{"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped"]}}', "json"),
        ("noext", '{"web": {"hosts": ["a", "b"]}}', "json"),
        ("inv.yaml", '{"web": ["a", "b"]}', "json"),  # a script's bare list of hosts
        ("inv.json", '{"hosts": {"a": {"port": 2}}}', "patchpilot"),
        ("inv.json", '{"all": {"hosts": {"a": null}}}', "ansible-yaml"),
    ],
)
def test_json_detection(name: str, text: str, expected: str) -> None:
    from patchpilot.core.inventory import detect_format

    found = detect_format(text, name)
    assert found == ("ansible-json" if expected == "json" else expected)


def test_dynamic_script_output_with_group_vars_and_bare_lists() -> None:
    doc = {
        "web": ["w1", "w2"],
        "db": {"hosts": ["d1"], "vars": {"ansible_user": "dba", "ansible_port": 2200}},
        "prod": {"children": ["web", "db"], "vars": {"patchpilot_criticality": 5}},
        "_meta": {"hostvars": {"w1": {"ansible_host": "10.0.0.1"}, "ghost": {"x": 1}}},
    }
    inv = parse_inventory(json.dumps(doc), file="script-output")
    assert inv.format == "ansible-json"
    assert list(inv.hosts) == ["w1", "w2", "d1"]  # 'ghost' is in no group: not a host
    assert inv.hosts["w1"].address == "10.0.0.1"
    assert (inv.hosts["d1"].user, inv.hosts["d1"].port) == ("dba", 2200)
    assert {h.criticality for h in inv} == {5}
    assert set(inv.groups["prod"]) == {"w1", "w2", "d1"}


@pytest.mark.parametrize(
    ("doc", "message", "key"),
    [
        ({"_meta": []}, "'_meta' must be an object", "_meta"),
        ({"web": {"hosts": "w1"}}, "expected a list", "web.hosts"),
        ({"web": {"hosts": [1]}}, "host name", "web.hosts[0]"),
        ({"web": {"hosts": ["a;id"]}}, "host name", "web.hosts[0]"),
        ({"web": 3}, "object or a list", "web"),
        (
            {"web": ["w"], "_meta": {"hostvars": {"w": {"ansible_password": "x"}}}},
            "passwords are not accepted",
            "_meta.hostvars.w.ansible_password",
        ),
        (
            {
                "web": ["w"],
                "_meta": {"hostvars": {"w": {"ansible_host": {"__ansible_vault": "$A"}}}},
            },
            "vault-encrypted",
            "_meta.hostvars.w.ansible_host",
        ),
        ({"web": {"children": ["all"]}}, "'all' cannot be a child", "web.children[0]"),
    ],
)
def test_json_errors_name_the_key(doc: dict[str, Any], message: str, key: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_inventory(json.dumps(doc), file="list.json", format="ansible-json")
    assert info.value.key == key
    assert info.value.file == "list.json"
