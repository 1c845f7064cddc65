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


def _to_json(value: object) -> object:
    if isinstance(value, RebootStatus):
        return {"required": value.required, "packages": list(value.packages)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_to_json(item) for item in value]
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
        assert _to_json(fact.parse(result)) == data["expected"]


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
