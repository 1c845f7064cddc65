"""Configuration edge cases fail fast with exit 2 naming the source and key (issue 11).

Every test runs the real CLI as a subprocess with real environment variables and real files
(or :func:`load_settings` on real files), and asserts what a person sees: the exit code, the
variable, option, file and key named, and no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import (
    OTHER_ENV_VARS,
    check_environment,
    load_settings,
    settings_env_names,
)
from patchpilot.core.store import Store

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def assert_usage_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    flat = " ".join(res.stderr.split())
    for needle in needles:
        assert needle in flat, (needle, res.stderr)


# --------------------------------------------------------------------------- environment


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PATCHPILOT_SSH", "{bad"),
        ("PATCHPILOT_FEEDS", '{"timeout": 3'),
        ("PATCHPILOT_LLM", "not json"),
    ],
)
def test_malformed_json_in_the_environment_is_a_usage_error(var: str, value: str) -> None:
    res = run_cli("runs", env={var: value})
    assert_usage_error(res, var, "not valid JSON")


def test_json_section_with_a_bad_value_names_the_variable() -> None:
    res = run_cli("runs", env={"PATCHPILOT_SSH": '{"connect_timeout": "soon"}'})
    assert_usage_error(res, "ssh.connect_timeout", "environment variable PATCHPILOT_SSH")


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("PATCHPILOT_SSH__CONNECT_TIMEOUT", "inf", "finite"),
        ("PATCHPILOT_SSH__CONNECT_TIMEOUT", "nan", "finite"),
        ("PATCHPILOT_SSH__CONNECT_TIMEOUT", "301", "less than or equal to 300"),
        ("PATCHPILOT_SSH__COMMAND_TIMEOUT", "1e300", "less than or equal to 86400"),
        ("PATCHPILOT_SSH__COMMAND_TIMEOUT", "-inf", "finite"),
        ("PATCHPILOT_FEEDS__TIMEOUT", "Infinity", "finite"),
        ("PATCHPILOT_FEEDS__TIMEOUT", "3601", "less than or equal to 3600"),
        ("PATCHPILOT_SSH__MAX_OUTPUT_BYTES", str(2**40), "less than or equal to"),
        ("PATCHPILOT_CONCURRENCY", "99999999999999999999", "less than or equal to 512"),
    ],
)
def test_infinite_or_huge_numbers_are_refused(var: str, value: str, reason: str) -> None:
    res = run_cli("runs", env={var: value})
    key = var.removeprefix("PATCHPILOT_").lower().replace("__", ".")
    assert_usage_error(res, key, reason, f"environment variable {var}")


def test_timeouts_at_their_bounds_are_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("ssh: {connect_timeout: 300, command_timeout: 86400}\nfeeds: {timeout: 3600}\n")
    s = load_settings(cfg)
    assert (s.ssh.connect_timeout, s.ssh.command_timeout, s.feeds.timeout) == (300, 86400, 3600)


def test_infinite_timeout_in_the_settings_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("ssh:\n  command_timeout: .inf\n")
    res = run_cli("--config", str(cfg), "runs")
    assert_usage_error(res, str(cfg), "ssh.command_timeout", "finite")


@pytest.mark.parametrize(
    ("var", "suggestion"),
    [
        ("PATCHPILOT_CONCURENCY", "PATCHPILOT_CONCURRENCY"),
        ("PATCHPILOT_SSH_CONNECT_TIMEOUT", "PATCHPILOT_SSH__CONNECT_TIMEOUT"),
        ("PATCHPILOT_HOMEDIR", "PATCHPILOT_HOME"),
        ("patchpilot_log_levl", "PATCHPILOT_LOG_LEVEL"),
    ],
)
def test_unknown_patchpilot_variable_is_a_usage_error(var: str, suggestion: str) -> None:
    res = run_cli("runs", env={var: "3"})
    assert_usage_error(res, f"unknown environment variable {var}", f"did you mean {suggestion}?")


def test_unknown_key_of_a_known_section_names_the_variable() -> None:
    res = run_cli("runs", env={"PATCHPILOT_SSH__CONECT_TIMEOUT": "3"})
    assert_usage_error(
        res,
        "ssh.conect_timeout",
        "unknown key",
        "environment variable PATCHPILOT_SSH__CONECT_TIMEOUT",
    )


def test_known_non_setting_variables_are_accepted(tmp_path: Path) -> None:
    env = {
        "PATCHPILOT_LAB_CACHE": str(tmp_path / "cache"),
        "PATCHPILOT_FAILPOINTS": "no-such-failpoint",
        "PATCHPILOT_CONFIG": str(REPO / "configs" / "settings.yaml"),
        "PATCHPILOT_SSH__CONNECT_TIMEOUT": "5",
        "PATCHPILOT_LLM__API_KEY_ENV": "PATCHPILOT_MY_LLM_KEY",
        "PATCHPILOT_MY_LLM_KEY": "sk-test",  # named by llm.api_key_env: not a typo
    }
    res = run_cli("runs", "-f", "json", env=env)
    assert res.returncode == 0, res.stderr


def test_every_setting_has_its_variable() -> None:
    names = settings_env_names()
    assert names["PATCHPILOT_SSH__CONNECT_TIMEOUT"] == "ssh.connect_timeout"
    assert names["PATCHPILOT_HOME"] == "home"
    assert names["PATCHPILOT_LLM__BASE_URL"] == "llm.base_url"
    check_environment(dict.fromkeys([*names, *OTHER_ENV_VARS], "x"))  # all accepted


# --------------------------------------------------------------------------- home and files


def test_empty_home_is_refused_and_nothing_lands_in_the_cwd(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = run_cli("runs", env={"PATCHPILOT_HOME": ""}, cwd=cwd)
    assert_usage_error(res, "home", "is empty", "environment variable PATCHPILOT_HOME")
    assert list(cwd.iterdir()) == []
    res = run_cli("--home", "", "runs", cwd=cwd)
    assert_usage_error(res, "home", "is empty", "--home")
    assert list(cwd.iterdir()) == []


def test_empty_home_in_the_settings_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATCHPILOT_HOME")  # the environment would win over the file
    cfg = tmp_path / "settings.yaml"
    cfg.write_text('home: ""\n')
    with pytest.raises(ConfigError, match="is empty") as info:
        load_settings(cfg)
    assert info.value.file == str(cfg)
    assert info.value.key == "home"


def test_empty_config_variable_is_refused() -> None:
    res = run_cli("runs", env={"PATCHPILOT_CONFIG": ""})
    assert_usage_error(res, "PATCHPILOT_CONFIG", "empty")


def test_relative_xdg_data_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHPILOT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    assert load_settings().home == Path.home() / ".local" / "share" / "patchpilot"


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("concurrency: 4\nconcurrency: 8\n", "concurrency", "line 2 (first at line 1)"),
        (
            "ssh:\n  trust_on_first_use: false\n  connect_timeout: 3\n  trust_on_first_use: true\n",
            "ssh.trust_on_first_use",
            "line 4 (first at line 2)",
        ),
    ],
)
def test_duplicate_keys_in_the_settings_file_are_refused(
    tmp_path: Path, text: str, key: str, lines: str
) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text(text)
    res = run_cli("--config", str(cfg), "runs")
    assert_usage_error(res, str(cfg), f"key {key}", "duplicate key", lines)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("ssh:\n  connect_timeout: 3\n  <<: {use_agent: false, connect_timeout: 9}\n")
    s = load_settings(cfg)
    assert (s.ssh.connect_timeout, s.ssh.use_agent) == (3, False)  # the explicit key wins


def test_duplicate_keys_in_a_policy_file_are_refused(tmp_path: Path) -> None:
    text = (REPO / "configs" / "policy.yaml").read_text()
    bad = tmp_path / "policy.yaml"
    bad.write_text(text + "\nrisk:\n  weights: {}\n")
    with pytest.raises(ConfigError, match="duplicate key 'risk'") as info:
        load_policy(bad)
    assert info.value.file == str(bad)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("runs", "-n", "99999999999999999999"), "--limit"),
        (("runs", "-n", "0"), "--limit"),
        (("facts", "local", "--concurrency", "99999999999999999999"), "--concurrency"),
        (("scan", "--concurrency", "513"), "--concurrency"),
        (("scan", "--fail-on-score", "nan"), "--fail-on-score"),
        (("lab", "up", "--hosts", "100000"), "--hosts"),
        (("lab", "up", "--max-base-age-days", "nan"), "--max-base-age-days"),
        (("lab", "up", "--base-port", "70000"), "--base-port"),
        (("--log-format", "xml", "runs"), "--log-format"),
    ],
)
def test_out_of_range_options_are_usage_errors(args: tuple[str, ...], option: str) -> None:
    res = run_cli(*args)
    assert_usage_error(res, option)


def test_runs_limit_at_its_bound_works() -> None:
    res = run_cli("runs", "-n", "10000", "-f", "json")
    assert res.returncode == 0, res.stderr


def test_findings_of_an_unknown_run_is_a_usage_error(tmp_path: Path) -> None:
    res = run_cli("findings", "--run", "nope")
    assert_usage_error(res, "no run 'nope'", "--run", "patchpilot runs")
    home = Path(os.environ["PATCHPILOT_HOME"])
    with Store(home / "patchpilot.db") as store:
        store.create_run("r1", kind="scan", target="local", params={})
        store.finish_run("r1", status="completed", summary={"findings": 0})
    res = run_cli("findings", "--run", "r1", "-f", "json")
    assert res.returncode == 0, res.stderr
