"""Domain models: fix-state typing, actionability, frozen records, enrichment rules."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from patchpilot.core.models import (
    CVSS,
    Advisory,
    Ecosystem,
    Enrichment,
    Finding,
    FixState,
    FixStatus,
    OSFamily,
    OSInfo,
    Provenance,
    RiskAssessment,
    SSVCOutcome,
)

PROV = Provenance(feed="debian-tracker", source="file:///tmp/x.json", record_id="CVE-2024-6387")


def test_fixed_state_requires_version() -> None:
    with pytest.raises(ValidationError, match="needs the fixed version"):
        FixState(status=FixStatus.FIXED)
    assert FixState.fixed("1:9.2p1-2+deb12u3").version == "1:9.2p1-2+deb12u3"


@pytest.mark.parametrize(
    "status", [s for s in FixStatus if s not in (FixStatus.FIXED, FixStatus.HELD)]
)
def test_unfixed_states_carry_no_version(status: FixStatus) -> None:
    assert FixState(status=status).version is None
    with pytest.raises(ValidationError, match="has no fixed version"):
        FixState(status=status, version="1.0")


def test_held_keeps_the_fixed_version_and_is_not_actionable() -> None:
    with pytest.raises(ValidationError, match="needs the fixed version"):
        FixState(status=FixStatus.HELD)
    held = FixState.fixed("1.2").held()
    assert (held.status, held.version) == (FixStatus.HELD, "1.2")
    assert FixState(status=FixStatus.NO_FIX_YET).held().status is FixStatus.NO_FIX_YET
    assert not _finding(held, True).actionable
    assert _finding(held, True).fixed_version == "1.2"


def _finding(fix: FixState, reachable: bool | None) -> Finding:
    return Finding(
        host="web-1",
        source_package="openssh",
        binary_packages=("openssh-server", "openssh-client"),
        installed_source_version="1:9.2p1-2+deb12u2",
        advisory_id="DSA-5724-1",
        cves=("CVE-2024-6387",),
        fix=fix,
        fix_reachable=reachable,
        provenance=(PROV,),
    )


@pytest.mark.parametrize(
    ("fix", "reachable", "actionable"),
    [
        (FixState.fixed("1:9.2p1-2+deb12u3"), True, True),
        (FixState.fixed("1:9.2p1-2+deb12u3"), False, False),
        (FixState.fixed("1:9.2p1-2+deb12u3"), None, False),
        (FixState(status=FixStatus.NO_FIX_YET), True, False),
        (FixState(status=FixStatus.WILL_NOT_FIX), True, False),
        (FixState(status=FixStatus.END_OF_LIFE), True, False),
    ],
)
def test_only_fixed_and_reachable_is_actionable(
    fix: FixState, reachable: bool | None, actionable: bool
) -> None:
    finding = _finding(fix, reachable)
    assert finding.actionable is actionable
    assert finding.fixed_version == fix.version


def test_records_are_frozen() -> None:
    finding = _finding(FixState.fixed("2"), True)
    with pytest.raises(ValidationError):
        finding.host = "other"  # type: ignore[misc]


def test_advisory_cves_from_id_and_aliases() -> None:
    adv = Advisory(
        id="DSA-5724-1",
        aliases=("CVE-2024-6387", "CVE-2024-6387", "GHSA-xxxx"),
        ecosystem=Ecosystem.DEBIAN,
        release="bookworm",
        source_package="openssh",
        fix=FixState.fixed("1:9.2p1-2+deb12u3"),
        feed="debian-dsa",
        provenance=PROV,
    )
    assert adv.cves == ("CVE-2024-6387",)
    with pytest.raises(ValidationError, match="never an advisory's"):
        adv.model_validate({**adv.model_dump(), "fix": FixState.fixed("1.0").held()})


def test_enrichment_validates_cve_and_picks_newest_cvss() -> None:
    with pytest.raises(ValidationError, match="not a CVE id"):
        Enrichment(cve="DSA-1")
    e = Enrichment(
        cve="CVE-2024-6387",
        cvss=(
            CVSS(
                version="3.1", vector="CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", base_score=8.1
            ),
            CVSS(
                version="4.0",
                vector="CVSS:4.0/AV:N/AC:H/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
                base_score=9.2,
            ),
        ),
    )
    assert e.best_cvss is not None
    assert e.best_cvss.version == "4.0"
    with pytest.raises(ValidationError):
        CVSS(version="3.1", vector="x", base_score=11)


def test_os_release_key() -> None:
    deb = OSInfo(id="debian", version_id="12", version_codename="bookworm", family=OSFamily.DEBIAN)
    alp = OSInfo(id="alpine", version_id="3.19.1", family=OSFamily.ALPINE)
    rhel = OSInfo(id="rocky", version_id="9.4", family=OSFamily.RHEL)
    assert (deb.release, alp.release, rhel.release) == ("bookworm", "v3.19", "9.4")
    assert OSFamily.RHEL.ecosystem is Ecosystem.RPM
    assert OSFamily.UNKNOWN.ecosystem is None


def test_risk_assessment_bounds() -> None:
    with pytest.raises(ValidationError):
        RiskAssessment(
            finding_key="k",
            score=101,
            factors=(),
            ssvc=SSVCOutcome.ACT,
            due_date=date(2026, 1, 1),
            rationale="x",
        )
