"""The policy's ``health`` section: rule selectors, order, validation, and the lab's policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import Host
from patchpilot.core.policy import (
    AnalysisPolicy,
    HealthPolicy,
    HealthRule,
    Policy,
    load_policy,
)
from patchpilot.lab.models import LabHost
from patchpilot.lab.policy import (
    LAB_HEALTH_RULE,
    default_policy_path,
    lab_policy_document,
    write_lab_policy,
)
from patchpilot.lab.profile import fleet_profile
from patchpilot.tools.health import CommandCheck, HttpCheck, ProcessCheck, render_url

REPO_POLICY = Path(__file__).resolve().parents[2] / "configs" / "policy.yaml"


def _base() -> dict[str, Any]:
    data = yaml.safe_load(REPO_POLICY.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _policy(*rules: dict[str, Any]) -> Policy:
    return Policy.model_validate({**_base(), "health": {"checks": list(rules)}})


def _proc(rule: str, process: str | None = None, **selectors: Any) -> dict[str, Any]:
    return {"name": rule, **selectors, "check": {"kind": "process", "name": process or rule}}


def _host(name: str = "web-1", *tags: str) -> Host:
    return Host(name=name, address="127.0.0.1", tags=frozenset(tags))


def _names(checks: list[HttpCheck | CommandCheck | ProcessCheck]) -> list[str]:
    out = []
    for check in checks:
        assert isinstance(check, ProcessCheck)
        out.append(check.name)
    return out


def test_default_policy_has_no_checks() -> None:
    policy = load_policy(REPO_POLICY)
    assert policy.health == HealthPolicy()
    assert policy.checks_for(_host("web-1", "web", "prod"), ["openssl"]) == []


def test_empty_selectors_match_everything() -> None:
    policy = _policy(_proc("sshd"))
    assert _names(policy.checks_for(_host("anything"), [])) == ["sshd"]
    assert _names(policy.checks_for(_host("db-1", "db"), ["libc6"])) == ["sshd"]


def test_hosts_selector_is_a_glob_of_names() -> None:
    policy = _policy(_proc("web", hosts=["web-*", "canary-1"]))
    assert _names(policy.checks_for(_host("web-2"), [])) == ["web"]
    assert _names(policy.checks_for(_host("canary-1"), [])) == ["web"]
    assert policy.checks_for(_host("canary-10"), []) == []
    assert policy.checks_for(_host("db-1"), []) == []


def test_tags_selector_is_any_of() -> None:
    policy = _policy(_proc("t", tags=["web", "db"]))
    assert _names(policy.checks_for(_host("x", "db", "prod"), [])) == ["t"]
    assert _names(policy.checks_for(_host("x", "web"), [])) == ["t"]
    assert policy.checks_for(_host("x", "prod"), []) == []
    assert policy.checks_for(_host("x"), []) == []


def test_packages_selector_needs_a_matching_package() -> None:
    policy = _policy(_proc("nginx", packages=["nginx*", "libssl?"]))
    assert _names(policy.checks_for(_host(), ["curl", "libssl3"])) == ["nginx"]
    assert _names(policy.checks_for(_host(), iter(["nginx-common"]))) == ["nginx"]
    assert policy.checks_for(_host(), ["libssl30", "curl"]) == []
    assert policy.checks_for(_host(), []) == []


def test_all_given_selectors_must_match() -> None:
    policy = _policy(_proc("r", hosts=["web-*"], tags=["prod"], packages=["acme-*"]))
    assert _names(policy.checks_for(_host("web-1", "prod"), ["acme-web"])) == ["r"]
    assert policy.checks_for(_host("db-1", "prod"), ["acme-web"]) == []
    assert policy.checks_for(_host("web-1", "staging"), ["acme-web"]) == []
    assert policy.checks_for(_host("web-1", "prod"), ["openssl"]) == []


def test_checks_come_in_file_order() -> None:
    policy = _policy(
        _proc("c", tags=["web"]),
        _proc("a"),
        _proc("b", packages=["openssl"]),
        _proc("d", hosts=["db-*"]),
    )
    assert _names(policy.checks_for(_host("web-1", "web"), ["openssl"])) == ["c", "a", "b"]
    assert _names(policy.checks_for(_host("db-1"), ["openssl"])) == ["a", "b", "d"]


def test_every_check_kind_loads() -> None:
    policy = _policy(
        {"name": "h", "check": {"kind": "http", "url": "http://{address}:80/health"}},
        {"name": "c", "check": {"kind": "command", "argv": ["true"]}},
        _proc("p"),
    )
    kinds = [type(c) for c in policy.checks_for(_host(), [])]
    assert kinds == [HttpCheck, CommandCheck, ProcessCheck]


def test_rule_names_are_unique() -> None:
    with pytest.raises(ValueError, match=r"duplicate health check names: \['a'\]"):
        _policy(_proc("a"), _proc("b"), _proc("a", "other"))


def test_package_selector_rejects_versions() -> None:
    with pytest.raises(ValueError, match="not a package name glob"):
        HealthRule.model_validate(_proc("p", packages=["openssl=3.0"]))


def _write(tmp_path: Path, health: Any) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**_base(), "health": health}), encoding="utf-8")
    return path


def test_invalid_check_kind_is_a_clear_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, {"checks": [{"name": "x", "check": {"kind": "smtp"}}]})
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert "health.checks.0.check" in message
    assert "'smtp'" in message
    assert "'http'" in message


@pytest.mark.parametrize(
    ("health", "key", "fragment"),
    [
        (
            {"checks": [{"name": "x", "check": {"url": "http://h/"}}]},
            "health.checks.0.check",
            "needs `kind`",
        ),
        ({"checks": [{"name": "x"}]}, "health.checks.0.check", "required"),
        ({"checks": [_proc("a"), _proc("a")]}, "health.checks", "duplicate"),
        ({"checks": [{**_proc("a"), "hots": ["x"]}]}, "health.checks.0.hots", "unknown key"),
        (
            {"checks": [{"name": "x", "check": {"kind": "http", "url": "http://{ip}/"}}]},
            "health.checks.0.check.http.url",
            "{address}",
        ),
    ],
)
def test_invalid_health_sections_name_the_key(
    tmp_path: Path, health: Any, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_write(tmp_path, health))
    assert key in str(info.value)
    assert fragment in str(info.value)


# -- the lab's policy ---------------------------------------------------------------------


def test_default_policy_path_is_the_bundled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_POLICY", "/nonexistent/site-policy.yaml")
    assert default_policy_path() == REPO_POLICY


def _lab_hosts() -> list[LabHost]:
    return fleet_profile(4, base_port=2301, acme_base_port=9101)


def test_lab_policy_round_trips_with_one_override_per_host() -> None:
    hosts = _lab_hosts()
    document = lab_policy_document(hosts)
    policy = Policy.model_validate(document)
    default = load_policy(REPO_POLICY)
    # the lab's policy is the default with its checks, its analysis and self-approval allowed
    assert not policy.approvals.refuse_self_approval
    approvals = policy.approvals.model_copy(update={"refuse_self_approval": True})
    unchanged = {"health": HealthPolicy(), "analysis": AnalysisPolicy(), "approvals": approvals}
    assert policy.model_copy(update=unchanged) == default
    assert policy.schedule.always_open
    assert policy.approvals.tags == ("prod",)
    [rule] = policy.health.checks
    assert rule.name == LAB_HEALTH_RULE
    assert (rule.hosts, rule.tags, rule.packages) == ((), (), ())
    check = rule.check
    assert isinstance(check, HttpCheck)
    assert check.body_contains == "OK"
    assert check.retries == 20
    assert check.interval_s == 0.25
    assert check.url == "http://{address}:8081/health"
    assert check.url_overrides == {
        h.name: f"http://{{address}}:{h.acme_port}/health" for h in hosts
    }
    for host in hosts:
        inventory_host = Host(name=host.name, address=host.address, tags=frozenset(host.tags))
        assert policy.checks_for(inventory_host, []) == [check]
        assert render_url(check, inventory_host) == f"http://127.0.0.1:{host.acme_port}/health"


def test_lab_policy_keeps_base_checks_and_rejects_a_clash() -> None:
    base = {**_base(), "health": {"checks": [_proc("sshd")]}}
    document = lab_policy_document(_lab_hosts()[:1], base)
    names = [rule["name"] for rule in document["health"]["checks"]]
    assert names == ["sshd", LAB_HEALTH_RULE]
    assert base["health"]["checks"] == [_proc("sshd")]  # the base is not modified
    clash = {**_base(), "health": {"checks": [_proc(LAB_HEALTH_RULE, "acme")]}}
    with pytest.raises(ConfigError, match="duplicate health check names"):
        lab_policy_document(_lab_hosts(), clash)


def test_write_lab_policy_loads_with_load_policy(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "policy.yaml"
    write_lab_policy(path, _lab_hosts())
    first = load_policy(path)
    assert path.read_text(encoding="utf-8").startswith("# patchpilot lab policy")
    assert not list(path.parent.glob(".*.tmp"))
    check = first.health.checks[0].check
    assert isinstance(check, HttpCheck)
    assert len(check.url_overrides) == 4
    # Rewritten on every up: new ports replace the old ones.
    write_lab_policy(path, fleet_profile(2, acme_base_port=9201))
    check = load_policy(path).health.checks[0].check
    assert isinstance(check, HttpCheck)
    assert check.url_overrides == {
        "canary-1": "http://{address}:9201/health",
        "web-1": "http://{address}:9202/health",
    }
