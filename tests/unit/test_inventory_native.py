"""patchpilot's own inventory format: loading, precedence, strictness and refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError, UnsafeArgumentError
from patchpilot.core.inventory import Inventory, load_inventory
from patchpilot.core.models import Exposure

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventory"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "user-home"
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Inventory:
    return load_inventory(write(tmp_path, text, name))


def config_error(tmp_path: Path, text: str, name: str = "inventory.yaml") -> ConfigError:
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert info.value.file == str(path)
    return info.value


# --------------------------------------------------------------------------- loading


def test_basic_fixture(fake_home: Path) -> None:
    inv = load_inventory(FIXTURES / "basic.yaml")
    assert inv.format == "patchpilot"
    assert list(inv.hosts) == ["web-1", "db-1", "local"]

    web = inv.hosts["web-1"]
    assert (web.address, web.port, web.user) == ("127.0.0.2", 2201, "patchpilot")
    assert web.key_file == str(fake_home / ".ssh" / "id_ed25519")
    assert web.criticality == 4
    assert web.exposure is Exposure.INTERNET
    assert web.owner == "team-web"
    assert web.groups == {"webservers", "prod"}
    assert web.tags == {"web", "prod", "webservers"}

    db = inv.hosts["db-1"]
    assert (db.address, db.port, db.criticality, db.exposure) == (
        "db1.example.internal",
        22,
        3,
        Exposure.INTERNAL,
    )
    assert db.groups == frozenset()
    assert db.tags == {"db"}

    local = inv.hosts["local"]
    assert local.transport == "local"
    assert local.address == "127.0.0.1"

    assert inv.groups == {"webservers": ("web-1",), "prod": ("web-1",)}
    assert inv.tags["prod"] == ("web-1",)


def test_precedence_fixture() -> None:
    inv = load_inventory(FIXTURES / "precedence.yaml")
    a, b, c, d = (inv.hosts[n] for n in "abcd")
    # deepest group wins; parents still supply what the child does not set
    assert (a.user, a.port, a.criticality) == ("rack1", 2100, 3)
    # the host's own value beats every group
    assert b.user == "hostuser"
    # same depth: name order, the later name wins; unset keys fall through
    assert (c.user, c.exposure, c.owner, c.port) == ("zeta", Exposure.ISOLATED, "team-alpha", 2000)
    assert (d.user, d.criticality) == ("region", 2)
    # groups are transitive; tags add up across defaults, groups and host
    assert a.groups == {"rack1", "dc1", "region"}
    assert a.tags == {"rack1", "dc1", "region", "emea", "fleet"}
    assert c.tags == {"alpha", "zeta", "fleet"}
    assert inv.groups["region"] == ("a", "b", "d")


def test_example_config_loads() -> None:
    inv = load_inventory(REPO / "configs" / "inventory.example.yaml")
    assert inv.format == "patchpilot"
    assert inv.hosts["db-1"].criticality == 5
    assert inv.hosts["local"].transport == "local"
    assert "production" in inv.hosts["web-1"].tags
    assert set(inv.groups["prod"]) == {"web-1", "web-2", "web-canary", "db-1", "db-2"}


def test_address_defaults_to_name_and_empty_entries(tmp_path: Path) -> None:
    inv = load_text(
        tmp_path,
        """
        hosts:
          db1.example.com:
          "2001:db8::5": {port: 2222}
        """,
    )
    assert inv.hosts["db1.example.com"].address == "db1.example.com"
    assert inv.hosts["2001:db8::5"].address == "2001:db8::5"
    assert inv.hosts["2001:db8::5"].port == 2222


def test_key_file_tilde_expanded(tmp_path: Path, fake_home: Path) -> None:
    inv = load_text(tmp_path, "hosts: {a: {key_file: ~/keys/a}, b: {key_file: /etc/k}}")
    assert inv.hosts["a"].key_file == str(fake_home / "keys" / "a")
    assert inv.hosts["b"].key_file == "/etc/k"


def test_inventory_is_immutable(tmp_path: Path) -> None:
    inv = load_text(tmp_path, "hosts: {a: {}}")
    with pytest.raises(AttributeError):
        inv.hosts = {}
    with pytest.raises(TypeError):
        inv.hosts["b"] = inv.hosts["a"]  # type: ignore[index]
    assert len(inv) == 1
    assert "a" in inv
    assert [h.name for h in inv] == ["a"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("hosts: {web-1: {port: 99999}}", "hosts.web-1.port", "less than or equal to 65535"),
        ('hosts: {web-1: {port: "22"}}', "hosts.web-1.port", "valid integer"),
        ("hosts: {web-1: {prot: 22}}", "hosts.web-1.prot", "unknown key 'prot'"),
        ("hosts: {a: {}}\nextra: 1", "extra", "unknown key 'extra'"),
        ("hosts: {a: {criticality: 7}}", "hosts.a.criticality", "less than or equal to 5"),
        ("hosts: {a: {criticality: true}}", "hosts.a.criticality", "valid integer"),
        ("hosts: {a: {exposure: public}}", "hosts.a.exposure", "'internet'"),
        ("hosts: {a: {transport: winrm}}", "hosts.a.transport", "'ssh' or 'local'"),
        ("hosts: {a: {tags: web}}", "hosts.a.tags", "valid list"),
        ("defaults: {address: x}\nhosts: {a: {}}", "defaults.address", "unknown key"),
        ("groups: {g: {hosts: []}}", "hosts", "missing required key 'hosts'"),
        ("hosts: {a: {}}\ngroups: {g: {hosts: [b]}}", "groups.g.hosts[0]", "unknown host 'b'"),
        ("hosts: {a: {}}\ngroups: {g: {hosts: [a, a]}}", "groups.g.hosts[1]", "twice"),
        (
            "hosts: {a: {}}\ngroups: {g: {children: [nope]}}",
            "groups.g.children[0]",
            "unknown child group 'nope'",
        ),
        ("hosts: {a: {}}\ngroups: {g: {vars: {address: x}}}", "groups.g.vars.address", "unknown"),
        ("hosts: {a: {}}\ngroups: {a: {}}", "groups.a", "both a host and a group"),
        ("hosts: {a: {}}\ngroups: {all: {}}", "groups.all", "built-in group"),
        ("hosts: {a: {tags: [b]}, b: {}}", "hosts.a.tags", "also a host name"),
    ],
)
def test_structural_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = config_error(tmp_path, text)
    assert err.key == key
    assert reason in err.reason
    assert str(tmp_path) in str(err)
    assert key in str(err)


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hosts: {web-1: {adress: 10.0.0.1}}")
    assert "unknown key 'adress' (allowed here: address, criticality," in err.reason


def test_duplicate_host_is_an_error(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        """
        hosts:
          web-1: {address: 10.0.0.1}
          db-1: {}
          web-1: {address: 10.0.0.2}
        """,
    )
    assert err.key == "hosts.web-1"
    assert "duplicate key 'web-1' at line 5 (first at line 3)" in err.reason


def test_cycle_in_children(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        """
        hosts: {a: {}}
        groups:
          g1: {children: [g2], hosts: [a]}
          g2: {children: [g3]}
          g3: {children: [g1]}
        """,
    )
    assert "cycle in group children: g1 -> g2 -> g3 -> g1" in err.reason
    assert err.key == "groups.g3.children[0]"


def test_self_child(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hosts: {a: {}}\ngroups: {g: {children: [g]}}")
    assert "child of itself" in err.reason


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hosts:\n  a: {port: 22\n  b: {}\n")
    assert "invalid YAML at line" in err.reason


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a mapping"):
        load_text(tmp_path, "- a\n- b\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read inventory") as info:
        load_inventory(tmp_path / "nope.yaml")
    assert info.value.file == str(tmp_path / "nope.yaml")


def test_unknown_yaml_tag_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hosts: {a: {user: !!python/name:os.system }}")
    assert "invalid YAML" in err.reason


@pytest.mark.parametrize(
    "text",
    [
        "hosts: {a: {password: hunter2}}",
        "hosts: {a: {}}\ndefaults: {ansible_password: x}",
        "hosts: {a: {}}\ngroups: {g: {hosts: [a], vars: {ansible_become_pass: x}}}",
        "hosts: {a: {ansible_ssh_pass: x}}",
        "hosts: {a: {}}\npassword: x",
    ],
)
def test_passwords_refused(tmp_path: Path, text: str) -> None:
    err = config_error(tmp_path, text)
    assert "passwords are not accepted" in err.reason
    assert "SSH keys" in err.reason
    assert "ssh-agent" in err.reason
    assert err.key is not None
    assert err.key.split(".")[-1] in {
        "password",
        "ansible_password",
        "ansible_become_pass",
        "ansible_ssh_pass",
    }


# --------------------------------------------------------------------------- hostile values


HOSTILE = ["-oProxyCommand=x", "a;rm -rf /", "$(id)", "web 1", "a|b", "`id`", "a&b", "-", ".hidden"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_host_names_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / "inv.json"
    import json

    path.write_text(json.dumps({"hosts": {name: {"address": "10.0.0.1"}}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert info.value.key == f"hosts.{name}"
    assert isinstance(info.value.__cause__, UnsafeArgumentError)
    assert "refusing unsafe host name" in info.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "-oProxyCommand=x"),
        ("address", "a;rm -rf /"),
        ("address", "$(id)"),
        ("address", "host name"),
        ("address", "999.1.1.1"),
        ("address", "{{ lookup('pipe', 'id') }}"),
        ("user", "-l root"),
        ("user", "root;id"),
        ("user", "$(id)"),
        ("user", "ro ot"),
        ("key_file", "-oProxyCommand=x"),
        ("owner", "line1\nline2"),
    ],
)
def test_hostile_values_rejected(tmp_path: Path, field: str, value: str) -> None:
    import json

    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"hosts": {"web-1": {field: value}}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert info.value.key == f"hosts.web-1.{field}"
    assert isinstance(info.value.__cause__, UnsafeArgumentError)


@pytest.mark.parametrize("tag", ["-x", "a b", "a:b", "!prod", "web*"])
def test_hostile_tags_rejected(tmp_path: Path, tag: str) -> None:
    import json

    path = tmp_path / "inv.json"
    path.write_text(json.dumps({"hosts": {"a": {"tags": [tag]}}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    assert info.value.key == "hosts.a.tags"


def test_hostile_group_name_rejected(tmp_path: Path) -> None:
    err = config_error(tmp_path, 'hosts: {a: {}}\ngroups: {"x;id": {hosts: [a]}}')
    assert err.key == "groups.x;id"
    assert "group name" in err.reason


def test_name_that_is_not_an_address_needs_one(tmp_path: Path) -> None:
    err = config_error(tmp_path, "hosts: {web_-: {}}")
    assert err.key == "hosts.web_-"
    assert "not a usable address" in err.reason
