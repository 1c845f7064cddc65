"""Validators for values that may reach a remote command line."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.models import Ecosystem
from patchpilot.core.validate import (
    MAX_NAME_LENGTH,
    split_pin,
    validate_hostname,
    validate_package_name,
    validate_path,
    validate_pin,
    validate_user,
    validate_version,
)

SHELL_META = set(" \t\n\r\v\f|&;<>()$`\\\"'*?[]{}#!")

ECOSYSTEMS = list(Ecosystem)


def _name(value: str, ecosystem: Ecosystem) -> str:
    return validate_package_name(value, ecosystem)


def _version(value: str, ecosystem: Ecosystem) -> str:
    return validate_version(value, ecosystem)


def _pin(value: str, ecosystem: Ecosystem) -> str:
    return validate_pin(value, ecosystem)


def _all_validators() -> list[tuple[str, Callable[[str], str]]]:
    validators: list[tuple[str, Callable[[str], str]]] = [
        ("hostname", validate_hostname),
        ("user", validate_user),
        ("path", validate_path),
    ]
    for eco in ECOSYSTEMS:
        validators += [
            (f"name-{eco.value}", functools.partial(_name, ecosystem=eco)),
            (f"version-{eco.value}", functools.partial(_version, ecosystem=eco)),
            (f"pin-{eco.value}", functools.partial(_pin, ecosystem=eco)),
        ]
    return validators


VALIDATORS = _all_validators()

# Text that looks like the real thing, with hostile characters mixed in.
near_miss = st.text(
    alphabet=st.sampled_from(list("abcAZ019.-+~:^_=/@%,") + sorted(SHELL_META) + ["é", "\0"]),
    max_size=40,
)


def _assert_safe(value: str) -> None:
    assert value, "an empty value was accepted"
    assert not value.startswith(("-", "~")), value
    assert not SHELL_META & set(value), value
    assert value.isascii(), value
    assert value.isprintable(), value


@pytest.mark.parametrize(("label", "validator"), VALIDATORS, ids=[v[0] for v in VALIDATORS])
@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.text(max_size=60), near_miss))
@example(value="$(touch /tmp/pwned)")
@example(value="-oProxyCommand=id")
@example(value="a;b")
@example(value="1.0\n")
@example(value="openssl=1.0 ; id")
def test_accepted_values_are_shell_safe(
    label: str, validator: Callable[[str], str], value: str
) -> None:
    try:
        accepted = validator(value)
    except UnsafeArgumentError:
        return
    assert accepted == value
    _assert_safe(accepted)


# --------------------------------------------------------------------------- package names


@pytest.mark.parametrize(
    ("name", "eco"),
    [
        ("openssl", "debian"),
        ("libc6:amd64", "debian"),
        ("g++", "debian"),
        ("libstdc++6", "debian"),
        ("python3.11", "debian"),
        ("0ad", "debian"),
        ("kernel-core", "rpm"),
        ("perl-Data-Dumper", "rpm"),
        ("NetworkManager", "rpm"),
        ("_private", "rpm"),
        ("busybox", "alpine"),
        ("py3-requests", "alpine"),
        ("Django", "pypi"),
        ("zope.interface", "pypi"),
        ("a", "pypi"),
        ("typing_extensions", "pypi"),
    ],
)
def test_package_names_accepted(name: str, eco: str) -> None:
    assert validate_package_name(name, eco) == name


@pytest.mark.parametrize(
    ("name", "eco"),
    [
        ("a", "debian"),
        ("OpenSSL", "debian"),
        ("-oops", "debian"),
        ("pkg:", "debian"),
        ("pkg:AMD64", "debian"),
        ("pkg name", "debian"),
        ("pkg;id", "rpm"),
        (".hidden", "rpm"),
        ("-x", "alpine"),
        ("name_", "pypi"),
        ("requests[socks]", "pypi"),
        ("requests>=2", "pypi"),
        ("", "pypi"),
        ("a" * (MAX_NAME_LENGTH + 1), "debian"),
    ],
)
def test_package_names_refused(name: str, eco: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_package_name(name, eco)


def test_unknown_ecosystem_is_refused() -> None:
    with pytest.raises(UnsafeArgumentError, match="ecosystem"):
        validate_package_name("x", "npm")


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("version", "eco"),
    [
        ("3.0.15-1~deb12u1", "debian"),
        ("1:2.36-9+deb12u9", "debian"),
        ("2.4.57-2", "debian"),
        ("1.0", "debian"),
        ("1.2-3-4", "debian"),
        ("0.9.8~rc1", "debian"),
        ("1:9.2p1-2+deb12u3", "debian"),
        ("3.0.7-27.el9", "rpm"),
        ("1:1.1.1k-12.el8_9", "rpm"),
        ("9:1.18.36:5.4-20", "debian"),  # colons inside upstream are valid for dpkg
        ("2.0^20230101git1234-1", "rpm"),
        ("1.0~rc1-1.fc39", "rpm"),
        ("5.14.0-362.8.1.el9_3.x86_64", "rpm"),
        ("3.1.4-r5", "alpine"),
        ("1.36.1-r15", "alpine"),
        ("2.0_rc1-r0", "alpine"),
        ("1.2.3a_p2", "alpine"),
        ("2.31.0", "pypi"),
        ("1.0rc1", "pypi"),
        ("1.0.post1", "pypi"),
        ("1.0+local.1", "pypi"),
        ("2.0.dev3", "pypi"),
    ],
)
def test_versions_accepted(version: str, eco: str) -> None:
    assert validate_version(version, eco) == version


@pytest.mark.parametrize(
    ("version", "eco"),
    [
        ("", "debian"),
        ("a1.0", "debian"),
        ("x:1.0", "debian"),
        ("1.0-", "debian"),
        ("1.0-rev_1", "debian"),
        ("1.0 ; id", "debian"),
        ("-1.0", "rpm"),
        ("~1", "rpm"),
        ("1.0-1-1", "rpm"),
        ("1.0$x", "rpm"),
        ("1.0-r", "alpine"),
        ("v1.0", "alpine"),
        ("1.0_foo", "alpine"),
        ("not a version", "pypi"),
        (" 1.0", "pypi"),
        ("1!2.0", "pypi"),
        ("1.0.0.0.0.0x", "pypi"),
    ],
)
def test_versions_refused(version: str, eco: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_version(version, eco)


# --------------------------------------------------------------------------- pins


def test_pins() -> None:
    assert validate_pin("openssl=3.0.15-1~deb12u1", "debian") == "openssl=3.0.15-1~deb12u1"
    assert split_pin("libc6:amd64=2.36-9+deb12u9", Ecosystem.DEBIAN) == (
        "libc6:amd64",
        "2.36-9+deb12u9",
    )
    assert split_pin("openssl=1:3.0.7-27.el9", "rpm") == ("openssl", "1:3.0.7-27.el9")
    assert split_pin("requests==2.31.0", "pypi") == ("requests", "2.31.0")
    assert split_pin("requests=2.31.0", "pypi") == ("requests", "2.31.0")


@pytest.mark.parametrize(
    ("pin", "eco"),
    [
        ("openssl", "debian"),
        ("=1.0", "debian"),
        ("openssl=", "debian"),
        ("openssl=1.0=2", "debian"),
        ("openssl==1.0", "debian"),
        ("openssl=$(id)", "rpm"),
        ("requests===2.0", "pypi"),
    ],
)
def test_pins_refused(pin: str, eco: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_pin(pin, eco)


# --------------------------------------------------------------------------- hosts, users, paths


@pytest.mark.parametrize(
    "value",
    [
        "web1",
        "web-1.example.com",
        "example.com.",
        "my_host.internal",
        "10.0.0.1",
        "127.0.0.1",
        "::1",
        "2001:db8::1",
        "fe80::1%eth0",
        "xn--bcher-kva.example",
    ],
)
def test_hostnames_accepted(value: str) -> None:
    assert validate_hostname(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-oProxyCommand=id",
        "host name",
        "host;id",
        "1.2.3.999",
        "010.0.0.1",
        "a..b",
        "-web",
        "web-",
        "[::1]",
        "fe80::1%$(id)",
        "::1%",
        "x" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "host\n",
        "hôst",
    ],
)
def test_hostnames_refused(value: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_hostname(value)


@pytest.mark.parametrize("value", ["root", "deploy", "_apt", "svc.backup", "a-b", "User1"])
def test_users_accepted(value: str) -> None:
    assert validate_user(value) == value


@pytest.mark.parametrize("value", ["", "-l", "1user", "a b", "root;id", "machine$", "x" * 33])
def test_users_refused(value: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_user(value)


@pytest.mark.parametrize(
    "value", ["/etc/os-release", "/var/run/reboot-required", "/opt/app-1.2/bin/x_y+z", "/"]
)
def test_paths_accepted(value: str) -> None:
    assert validate_path(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "etc/passwd",
        "-rf",
        "/tmp/a b",
        "/tmp/x\n",
        "/tmp/x\0y",
        "/tmp/$(id)",
        "/tmp/*",
        "/etc/../shadow",
        "/./x",
        "/" + "a" * 4096,
    ],
)
def test_paths_refused(value: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_path(value)


def test_error_carries_kind_value_and_reason() -> None:
    with pytest.raises(UnsafeArgumentError) as info:
        validate_package_name("bad;name", "debian")
    assert info.value.kind == "debian package name"
    assert info.value.value == "bad;name"
    assert "refusing unsafe debian package name 'bad;name'" in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"bytes"])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_user(value)  # type: ignore[arg-type]
