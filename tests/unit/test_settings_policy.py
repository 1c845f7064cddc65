"""Settings (YAML + PATCHPILOT_* env) and policy loading: fail fast with file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import Severity, SSVCOutcome
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_live_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "a"))
    s = load_settings()
    assert s.home == tmp_path / "a"
    for p in (s.store_path, s.cache_dir, s.checkpoint_path, s.memory_dir, s.known_hosts_path):
        assert p.is_relative_to(s.home)
    assert s.ssh.trust_on_first_use is False


def test_two_homes_are_kept_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "one"))
    one = load_settings()
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "two"))
    two = load_settings()
    assert one.store_path != two.store_path


def test_bundled_settings_example_loads() -> None:
    s = load_settings(REPO / "configs" / "settings.yaml")
    assert s.concurrency == 10
    assert s.ssh.connect_timeout == 10


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("concurrency: 4\nssh:\n  connect_timeout: 7\n")
    monkeypatch.setenv("PATCHPILOT_SSH__CONNECT_TIMEOUT", "3")
    s = load_settings(cfg)
    assert (s.concurrency, s.ssh.connect_timeout) == (4, 3)


def test_home_config_yaml_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.yaml").write_text("concurrency: 2\n")
    monkeypatch.setenv("PATCHPILOT_HOME", str(home))
    assert load_settings().concurrency == 2


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("ssh:\n  conect_timeout: 3\n", "ssh.conect_timeout", "unknown key"),
        ("concurrency: -1\n", "concurrency", "greater than or equal to 1"),
        ("ssh:\n  password: hunter2\n", "ssh.password", "unknown key"),
        ("log_format: xml\n", "log_format", "'console' or 'json'"),
    ],
)
def test_bad_settings_name_file_key_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    msg = str(info.value)
    assert str(cfg) in msg
    assert key in msg
    assert reason in msg
    assert info.value.key == key


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("ssh: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="PATCHPILOT_CONCURRENCY"):
        load_settings()


def test_bundled_policy_loads() -> None:
    p = load_policy(REPO / "configs" / "policy.yaml")
    assert abs(sum(p.risk.weights.normalised().values()) - 1) < 1e-9
    assert p.sla_days.days_for_ssvc(SSVCOutcome.ACT) == 2
    assert p.sla_days.days_for_ssvc(SSVCOutcome.TRACK_STAR) == 60
    assert p.sla_days.days_for_severity(Severity.UNIMPORTANT) is None
    assert p.kev.due_date_is_hard_bound


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda t: t.replace("critical: 7", "critical: 0"), "sla_days.severity.critical"),
        (lambda t: t.replace("severity: 0.35", "severity: -1"), "risk.weights.severity"),
        (lambda t: t.replace("    act: 2\n", ""), "sla_days.ssvc.act"),
        (lambda t: t.replace("minimum_ssvc: attend", "minimum_ssvc: panic"), "kev.minimum_ssvc"),
    ],
)
def test_bad_policy_names_file_key(tmp_path: Path, mutate, key: str) -> None:  # type: ignore[no-untyped-def]
    text = (REPO / "configs" / "policy.yaml").read_text()
    bad = tmp_path / "policy.yaml"
    bad.write_text(mutate(text))
    with pytest.raises(ConfigError) as info:
        load_policy(bad)
    assert str(bad) in str(info.value)
    assert info.value.key is not None
    assert info.value.key.startswith(key)
