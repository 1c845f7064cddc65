"""The baseline / approvals / schedule sections of the policy file."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.core.errors import ConfigError
from patchpilot.core.policy import RejectedAction, load_policy
from patchpilot.core.schedule import RebootPolicy

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "configs" / "policy.yaml"


def test_bundled_defaults_for_the_lab() -> None:
    p = load_policy(POLICY)
    assert p.schedule.is_always_open
    assert [r.name for r in p.schedule.rings] == ["canary", "early", "broad"]
    assert p.schedule.waves == (1, "50%")
    assert (p.schedule.rate.max_concurrency, p.schedule.rate.max_errors) == (2, 0)
    assert p.schedule.reboot is RebootPolicy.NEVER
    assert p.approvals.tags == ("prod",)
    assert p.approvals.on_removals
    assert p.approvals.on_held
    assert p.baseline.rejected_packages == ()
    assert p.baseline.rejected_action is RejectedAction.ALLOW_AS_DEPENDENCY


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        (
            "  windows: []\n  always_open: true\n",
            "  windows:\n    - {name: w, cron: '0 15 * * * *', duration: PT3H}\n",
            "schedule.windows.0.cron",
            "5 fields",
        ),
        (
            "  windows: []\n  always_open: true\n",
            "  windows:\n    - {name: w, cron: '0 15 * * *', duration: PT3H, "
            "timezone: Mars/Base}\n",
            "schedule.windows.0.timezone",
            "unknown IANA",
        ),
        (
            "  windows: []\n  always_open: true\n",
            "  windows:\n    - {name: w, cron: '0 15 * * *', duration: 3 hours}\n",
            "schedule.windows.0.duration",
            "not a duration",
        ),
        (
            "  windows: []\n",
            "  windows: [{name: w, cron: '0 1 * * *', duration: 60}]\n",
            "schedule",
            "always_open",
        ),
        ('waves: [1, "50%"]', 'waves: [1, "150%"]', "schedule.waves", "100%"),
        ("max_errors: 0", "max_errors: lots", "schedule.rate.max_errors", "percentage"),
        ("max_concurrency: 2", "max_concurrency: 0", "schedule.rate.max_concurrency", "at least"),
        ("reboot: never ", "reboot: sometimes ", "schedule.reboot", "never"),
        (
            "      approve_after_days: 0\n    - name: local",
            "      approve_after_days: 400\n    - name: local",
            "baseline.rules.0.approve_after_days",
            "360",
        ),
        (
            "rejected_packages: []",
            "rejected_packages: ['bad pkg']",
            "baseline.rejected_packages",
            "package spec",
        ),
        (
            "rejected_action: allow-as-dependency",
            "rejected_action: maybe",
            "baseline.rejected_action",
            "block",
        ),
        ("origin: [local]", "origin: [moon]", "baseline.rules.1.origin", "local"),
        ("expires_after_hours: 24", "expires_after_hours: 0", "approvals.expires_after_hours", ""),
        (
            "blackouts: []",
            "blackouts: [{start: 2025-01-02T00:00:00, end: 2025-01-03T00:00:00}]",
            "schedule.blackouts",
            "timezone",
        ),
    ],
)
def test_bad_values_name_file_key_reason(
    tmp_path: Path, old: str, new: str, key: str, reason: str
) -> None:
    text = POLICY.read_text()
    assert old in text
    bad = tmp_path / "policy.yaml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_policy(bad)
    assert str(bad) in str(info.value)
    assert info.value.key is not None
    assert info.value.key.startswith(key), info.value.key
    assert reason in info.value.reason
