"""The lab's policy: the bundled default policy plus acme-web health checks and analysis.

``patchpilot lab up`` writes it to ``$LAB/policy.yaml`` (rewritten on every up/reset: acme-web
ports can change). It is the bundled ``configs/policy.yaml`` (found the way the settings find
the default policy, :attr:`patchpilot.core.settings.Settings.policy_path` with no ``policy`` set)
with
one more ``health.checks`` rule, :data:`LAB_HEALTH_RULE`, for every change on every host: an
HTTP check of acme-web's ``/health`` (200 and a body containing ``OK``), each host on its own
port through ``url_overrides``, and an ``analysis`` section, :func:`lab_analysis_section`:
HTTP probes of acme-web's main endpoint ``/`` (latency and errors, both critical), 60 samples
0.05 s apart after a 1 s soak, judged against unpatched peers of the ring or, for a ring without
any (the one-host canary), the host's own window before the patch. acme-web 1.3.0 (``/`` 150-250
ms and 4 % errors, ``/health`` fine) fails it; 1.1.0 passes. The lab, a one-person sandbox, sets
``approvals.refuse_self_approval: false`` (its operator approves their own runs while the store
has no users). Everything else (the always-open window, ``approvals.tags: [prod]``...) stays the
default's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from patchpilot.core.configfile import read_yaml_mapping
from patchpilot.core.errors import ConfigError
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings, format_validation_error
from patchpilot.lab.inventory import _write_atomic
from patchpilot.lab.models import LabHost
from patchpilot.lab.profile import DEFAULT_ACME_BASE_PORT

__all__ = [
    "LAB_HEALTH_RULE",
    "default_policy_path",
    "lab_analysis_section",
    "lab_health_rule",
    "lab_policy_document",
    "write_lab_policy",
]

#: Name of the lab's health-check rule.
LAB_HEALTH_RULE = "acme-web"

_HEADER = (
    "# patchpilot lab policy, written by `patchpilot lab up` (rewritten on every up/reset):\n"
    "# the bundled configs/policy.yaml plus a health check of each host's acme-web and the\n"
    "# post-patch analysis of its main endpoint.\n"
)


def default_policy_path() -> Path:
    """The bundled default policy, as the settings find it when no ``policy`` is set.

    The environment (``PATCHPILOT_POLICY``) is deliberately ignored: the lab's policy is always
    built on the repository's default.
    """
    return Settings.model_construct(policy=None).policy_path


def _acme_url(port: int) -> str:
    return f"http://{{address}}:{port}/health"


def lab_health_rule(hosts: Sequence[LabHost]) -> dict[str, Any]:
    """The ``health.checks`` rule of the lab: acme-web ``/health`` on every host, every change."""
    return {
        "name": LAB_HEALTH_RULE,
        "check": {
            "kind": "http",
            "url": _acme_url(DEFAULT_ACME_BASE_PORT),
            "url_overrides": {host.name: _acme_url(host.acme_port) for host in hosts},
            "expect_status": 200,
            "body_contains": "OK",
            "timeout_s": 2.0,
            "retries": 20,
            "interval_s": 0.25,
        },
    }


def _page_url(port: int) -> str:
    return f"http://{{host}}:{port}/"


def lab_analysis_section(hosts: Sequence[LabHost]) -> dict[str, Any]:
    """The lab's ``analysis`` section: acme-web ``/`` latency and errors, both critical.

    60 samples per host 0.05 s apart (>= the 50 Spinnaker asks for, about 3 s against a healthy
    acme-web, 15 s against 1.3.0). Latency fails when the canary's median is significantly
    above the baseline's and at least 5x it (10x: critical): millisecond latencies on a loaded
    2-core machine drift 2x between two windows of the same release (a CI run showed 2.1x for
    the healthy 1.1.0 against its own earlier window), while 1.3.0 is 40-150x; the error rate
    fails when more than one request of the 60 fails (Argo-like ``fail_above`` +
    ``failure_limit``), since a few percent of 1/0 samples are too few for a rank test. A
    latency shift under 50 ms (``min_shift``) never fails: 1.3.0 adds 150-250 ms.
    """
    overrides = {host.name: _page_url(host.acme_port) for host in hosts}
    probe = {
        "provider": "http",
        "url": _page_url(DEFAULT_ACME_BASE_PORT),
        "url_overrides": overrides,
        "method": "GET",
        "expected_status": 200,
        "timeout_s": 2.0,
        "group": "acme-web",
        "direction": "increase",
        "critical": True,
    }
    return {
        "enabled": True,
        "soak_s": 1.0,
        "interval_s": 0.05,
        "count": 60,
        "baseline": "peers",
        "baseline_fallback": "self",
        "min_samples": 50,
        "metrics": [
            {
                **probe,
                "name": "latency",
                "measure": "latency",
                "effect_size": {
                    "measure": "median_ratio",
                    "allowed_increase": 5.0,
                    "critical_increase": 10.0,
                    "min_shift": 0.05,
                },
            },
            {
                **probe,
                "name": "error_rate",
                "measure": "error",
                "fail_above": 0.5,
                "failure_limit": 1,
            },
        ],
    }


def lab_policy_document(
    hosts: Sequence[LabHost], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The lab's policy as a mapping, validated with :class:`~patchpilot.core.policy.Policy`.

    Pure apart from reading the bundled default policy when ``base`` is omitted.

    Args:
        hosts: the lab's hosts (each gets a ``url_overrides`` entry with its acme-web port).
        base: the policy mapping to extend (default: the bundled ``configs/policy.yaml``);
            its ``health.checks`` are kept, the lab's rule is appended; its ``analysis``
            section is replaced by :func:`lab_analysis_section`.

    Raises:
        ConfigError: the result is not a valid policy (e.g. ``base`` already has a rule called
            :data:`LAB_HEALTH_RULE`), naming the key and reason.
    """
    source = "(lab policy)"
    if base is None:
        path = default_policy_path()
        base = read_yaml_mapping(path)
        source = str(path)
    document = copy.deepcopy(dict(base))
    health = dict(document.get("health") or {})
    health["checks"] = [*(health.get("checks") or []), lab_health_rule(hosts)]
    document["health"] = health
    document["analysis"] = lab_analysis_section(hosts)
    # The lab is a one-person sandbox: its operator approves the runs they start (without users;
    # once the store has users, the requester's own approval is refused all the same).
    approvals = dict(document.get("approvals") or {})
    approvals["refuse_self_approval"] = False
    document["approvals"] = approvals
    try:
        Policy.model_validate(document)
    except ValidationError as exc:
        key, reason = format_validation_error(exc)
        raise ConfigError(
            f"the lab policy built on it is invalid: {reason}", file=source, key=key
        ) from exc
    return document


def write_lab_policy(
    path: Path, hosts: Sequence[LabHost], base: Mapping[str, Any] | None = None
) -> None:
    """Write :func:`lab_policy_document` to ``path`` atomically (temp file + rename)."""
    document = lab_policy_document(hosts, base)
    text = _HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    _write_atomic(path, text, 0o644)
