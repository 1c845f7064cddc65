"""Every recorded fixture in tests/fixtures/facts/<FactName>/<case>.json parses as recorded.

A fixture holds the fact's argv (``command``), the recorded ``exit_code``/``stdout``/``stderr``,
a ``source`` saying where the output comes from (recorded here, upstream testdata, synthetic)
and either ``expected`` (the parsed value as JSON) or ``raises`` (an error class name from
:mod:`patchpilot.core.errors`). Optional ``fact_args`` are passed to the fact's constructor.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from patchpilot.core import errors
from patchpilot.core.models import CommandResult
from patchpilot.tools.facts import (
    ApkPackages,
    AptCandidatePolicy,
    AptHolds,
    AptPendingUpdates,
    AptPolicy,
    AptSimulateInstall,
    DeletedLibraries,
    DpkgPackages,
    Fact,
    KernelRelease,
    ListeningSockets,
    MappedPackages,
    ModifiedConffiles,
    NeedrestartAvailable,
    NeedrestartBatch,
    OsRelease,
    PackageServices,
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    RpmPackages,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts"

FACTS: dict[str, Callable[..., Fact[Any]]] = {
    "ApkPackages": ApkPackages,
    "AptCandidatePolicy": AptCandidatePolicy,
    "AptHolds": AptHolds,
    "AptPendingUpdates": AptPendingUpdates,
    "AptPolicy": AptPolicy,
    "AptSimulateInstall": AptSimulateInstall,
    "DeletedLibraries": DeletedLibraries,
    "DpkgPackages": DpkgPackages,
    "KernelRelease": KernelRelease,
    "ListeningSockets": ListeningSockets,
    "MappedPackages": MappedPackages,
    "ModifiedConffiles": ModifiedConffiles,
    "NeedrestartAvailable": NeedrestartAvailable,
    "NeedrestartBatch": NeedrestartBatch,
    "OsRelease": OsRelease,
    "PackageServices": PackageServices,
    "RebootRequired": RebootRequired,
    "RpmKernelRebootRequired": RpmKernelRebootRequired,
    "RpmPackages": RpmPackages,
}

CASES = sorted(FIXTURES.glob("*/*.json"))


def _to_json(value: object, expected: object = None) -> object:
    """``value`` as JSON, shaped like ``expected``: a top-level model field the fixture does not
    name and that holds its default is left out, so a field added to a model after the fixture
    was recorded (``PendingUpdate.urgency``) does not invalidate it; a field it names must
    match, and a non-default value the fixture does not name still fails."""
    if isinstance(value, RebootStatus):
        return {"required": value.required, "packages": list(value.packages)}
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        if not isinstance(expected, dict):
            return dumped
        changed = value.model_dump(mode="json", exclude_defaults=True)
        return {k: v for k, v in dumped.items() if k in expected or k in changed}
    if isinstance(value, list):
        shapes = expected if isinstance(expected, list) else []
        return [
            _to_json(item, shapes[i] if i < len(shapes) else None) for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    return value


def _load(path: Path) -> tuple[Fact[Any], dict[str, Any], CommandResult]:
    data = json.loads(path.read_text(encoding="utf-8"))
    fact = FACTS[path.parent.name](**data.get("fact_args", {}))
    result = CommandResult(
        host="fixture",
        argv=tuple(data["command"]),
        exit_code=data["exit_code"],
        stdout=data["stdout"],
        stderr=data["stderr"],
    )
    return fact, data, result


def test_fixtures_exist_for_every_fact() -> None:
    assert {path.parent.name for path in CASES} == set(FACTS)


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(path: Path) -> None:
    fact, data, result = _load(path)
    assert fact.name == path.parent.name
    assert data["command"] == fact.command(), "fixture argv is out of date with the fact"
    assert data["source"]["kind"] in {"recorded", "upstream", "upstream-rows", "synthetic"}
    assert ("expected" in data) != ("raises" in data)
    if "raises" in data:
        error = getattr(errors, data["raises"])
        with pytest.raises(error):
            fact.parse(result)
    else:
        assert _to_json(fact.parse(result), data["expected"]) == data["expected"]


@pytest.mark.parametrize(
    "path",
    [p for p in CASES if p.parent.name.endswith("Packages")],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_package_fixtures_never_parse_to_an_empty_inventory(path: Path) -> None:
    fact, data, result = _load(path)
    if "expected" in data:
        assert data["expected"], "a successful package fixture must list packages"
        assert fact.parse(result)
