"""Format detection, the format override, and reading files safely."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError
from patchpilot.core.inventory import (
    InventoryFormat,
    _load,
    detect_format,
    load_inventory,
    parse_inventory,
)

ANSIBLE_YAML = "all:\n  hosts:\n    web1:\n"
NATIVE = "hosts:\n  web1: {address: 10.0.0.1}\n"
INI = "[web]\nweb1\n"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("hosts.ini", INI, "ansible-ini"),
        ("hosts.cfg", "web1\n", "ansible-ini"),
        ("hosts", INI, "ansible-ini"),
        ("hosts", "# comment\n; another\n[web]\nweb1\n", "ansible-ini"),
        ("hosts", "web1\nweb2 ansible_port=2222\n", "ansible-ini"),  # a YAML scalar
        ("hosts", "web1 a=1\n[web]\n", "ansible-ini"),
        ("hosts", ANSIBLE_YAML, "ansible-yaml"),
        ("hosts", NATIVE, "patchpilot"),
        ("inventory.yml", ANSIBLE_YAML, "ansible-yaml"),
        ("inventory.yaml", "web:\n  hosts:\n    a:\nother:\n  children:\n", "ansible-yaml"),
        ("inventory.yaml", NATIVE, "patchpilot"),
        ("inventory.yaml", "defaults: {}\ngroups: {}\n", "patchpilot"),
        ("inventory.json", '{"hosts": {"a": {}}}', "patchpilot"),
        ("inventory.json", '{"all": {"hosts": {"a": null}}}', "ansible-yaml"),
    ],
)
def test_detect_format(name: str, text: str, expected: str) -> None:
    assert detect_format(text, name) == expected


@pytest.mark.parametrize(
    ("name", "text"),
    [("inv.yaml", "- a\n- b\n"), ("inv.yaml", "nothing: here\n"), ("inv.yml", "")],
)
def test_undetectable_yaml(name: str, text: str) -> None:
    with pytest.raises(ConfigError, match="cannot tell the inventory format"):
        detect_format(text, name)


def test_override_skips_detection(tmp_path: Path) -> None:
    # An Ansible YAML inventory whose only group is called "hosts" reads as patchpilot's format
    # under detection; the override says what it is.
    path = tmp_path / "inventory.yml"
    path.write_text("hosts:\n  hosts:\n    web1:\n", encoding="utf-8")
    inv = load_inventory(path, format="ansible-yaml")
    assert inv.hosts["web1"].groups == {"hosts"}
    assert inv.format == "ansible-yaml"

    ini_named_yaml = tmp_path / "hosts.yaml"
    ini_named_yaml.write_text("web1\nweb2\n", encoding="utf-8")
    assert list(load_inventory(ini_named_yaml, format="ansible-ini").hosts) == ["web1", "web2"]


@pytest.mark.parametrize("fmt", ["patchpilot", "ansible-ini", "ansible-yaml"])
def test_each_format_parses(fmt: InventoryFormat) -> None:
    text = {"patchpilot": NATIVE, "ansible-ini": INI, "ansible-yaml": ANSIBLE_YAML}[fmt]
    inv = parse_inventory(text, format=fmt)
    assert list(inv.hosts) == ["web1"]
    assert inv.format == fmt
    assert inv.source == "<string>"


def test_unknown_format_name() -> None:
    with pytest.raises(ConfigError, match="unknown inventory format 'toml'"):
        parse_inventory(NATIVE, format="toml")  # type: ignore[arg-type]


def test_wrong_forced_format_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_inventory("[web]\nweb1 a=1\n", format="patchpilot", file="hosts")


def test_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_load, "MAX_INVENTORY_BYTES", 10)
    path = tmp_path / "inv.yaml"
    path.write_text(NATIVE, encoding="utf-8")
    with pytest.raises(ConfigError, match="over the 10-byte limit"):
        load_inventory(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"web1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_inventory(path)


def test_directory_is_not_an_inventory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read inventory"):
        load_inventory(tmp_path)


def test_alias_bomb_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nhosts: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="too many alias expansions"):
        load_inventory(path)


def test_deep_nesting_refused() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_inventory("hosts: " + "[" * 5000 + "]" * 5000, format="patchpilot")
