"""The lab's policy: the bundled default policy plus a health check of every host's acme-web.

``patchpilot lab up`` writes it to ``$LAB/policy.yaml`` (rewritten on every up/reset: acme-web
ports can change). It is the bundled ``configs/policy.yaml`` (found the way the settings find
the default policy, :attr:`patchpilot.core.settings.Settings.policy_path` with no ``policy`` set)
with
one more ``health.checks`` rule, :data:`LAB_HEALTH_RULE`, for every change on every host: an
HTTP check of acme-web's ``/health`` (200 and a body containing ``OK``), each host on its own
port through ``url_overrides``. Everything else (the always-open window, ``approvals.tags:
[prod]``...) stays the default's.
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
    "lab_health_rule",
    "lab_policy_document",
    "write_lab_policy",
]

#: Name of the lab's health-check rule.
LAB_HEALTH_RULE = "acme-web"

_HEADER = (
    "# patchpilot lab policy, written by `patchpilot lab up` (rewritten on every up/reset):\n"
    "# the bundled configs/policy.yaml plus a health check of each host's acme-web.\n"
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


def lab_policy_document(
    hosts: Sequence[LabHost], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The lab's policy as a mapping, validated with :class:`~patchpilot.core.policy.Policy`.

    Pure apart from reading the bundled default policy when ``base`` is omitted.

    Args:
        hosts: the lab's hosts (each gets a ``url_overrides`` entry with its acme-web port).
        base: the policy mapping to extend (default: the bundled ``configs/policy.yaml``);
            its ``health.checks`` are kept, the lab's rule is appended.

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
