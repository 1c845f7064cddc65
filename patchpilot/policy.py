"""Policy: risk weights, SLA days per severity and SSVC outcome, KEV handling.

The bundled default is ``configs/policy.yaml``; a site copy is selected with the ``policy``
setting (``PATCHPILOT_POLICY``). Loading validates everything and fails with the file, key and
reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from patchpilot.configfile import read_yaml_mapping
from patchpilot.errors import ConfigError
from patchpilot.models import Exposure, Severity, SSVCOutcome
from patchpilot.settings import format_validation_error

__all__ = ["KEVPolicy", "Policy", "RiskPolicy", "SLAPolicy", "load_policy"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskWeights(_Strict):
    """Relative factor weights; normalised so only ratios matter."""

    severity: float = Field(default=0.35, ge=0)
    epss: float = Field(default=0.25, ge=0)
    kev: float = Field(default=0.20, ge=0)
    criticality: float = Field(default=0.10, ge=0)
    exposure: float = Field(default=0.10, ge=0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> Self:
        if sum(self.normalised().values()) == 0:
            raise ValueError("at least one risk weight must be above 0")
        return self

    def normalised(self) -> dict[str, float]:
        """Weights scaled to sum to 1 (all zeros stay zeros)."""
        raw = self.model_dump()
        total = sum(raw.values())
        return {k: (v / total if total else 0.0) for k, v in raw.items()}


class RiskPolicy(_Strict):
    """How the 0-100 risk score is built."""

    weights: RiskWeights = Field(default_factory=RiskWeights)
    exposure: dict[Exposure, float] = Field(
        default_factory=lambda: {
            Exposure.INTERNET: 1.0,
            Exposure.INTERNAL: 0.5,
            Exposure.ISOLATED: 0.1,
        }
    )
    epss_likely: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _exposure_complete(self) -> Self:
        missing = set(Exposure) - set(self.exposure)
        if missing:
            raise ValueError(f"exposure factors missing for: {sorted(m.value for m in missing)}")
        if any(not 0 <= v <= 1 for v in self.exposure.values()):
            raise ValueError("exposure factors must be between 0 and 1")
        return self


SLADays = Annotated[int | None, Field(ge=1, description="days from first seen; null = none")]


class SeveritySLA(_Strict):
    """Days to fix per severity; every severity must be listed (``null`` = no deadline)."""

    critical: SLADays
    high: SLADays
    medium: SLADays
    low: SLADays
    unimportant: SLADays
    unknown: SLADays


class SSVCSLA(_Strict):
    """Days to fix per SSVC outcome; every outcome must be listed (``null`` = no deadline)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    act: SLADays
    attend: SLADays
    track_star: SLADays = Field(alias="track*")
    track: SLADays


class SLAPolicy(_Strict):
    """Days to fix, from first seen, by severity and by SSVC outcome."""

    severity: SeveritySLA
    ssvc: SSVCSLA

    def days_for_severity(self, severity: Severity) -> int | None:
        """SLA days for a severity (``None`` = no deadline)."""
        value: int | None = getattr(self.severity, severity.value)
        return value

    def days_for_ssvc(self, outcome: SSVCOutcome) -> int | None:
        """SLA days for an SSVC outcome (``None`` = no deadline)."""
        field = "track_star" if outcome is SSVCOutcome.TRACK_STAR else outcome.value
        value: int | None = getattr(self.ssvc, field)
        return value


class KEVPolicy(_Strict):
    """Handling of CISA KEV-listed CVEs."""

    minimum_ssvc: SSVCOutcome = SSVCOutcome.ATTEND
    due_date_is_hard_bound: bool = True
    ransomware_bonus: float = Field(default=10.0, ge=0, le=50)


class Policy(_Strict):
    """The whole policy file."""

    risk: RiskPolicy = Field(default_factory=RiskPolicy)
    sla_days: SLAPolicy
    kev: KEVPolicy = Field(default_factory=KEVPolicy)


def load_policy(path: Path) -> Policy:
    """Load and validate a policy file.

    Raises:
        ConfigError: missing file, bad YAML, or an invalid value (file, key and reason given).
    """
    data = read_yaml_mapping(path)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        key, reason = format_validation_error(exc)
        raise ConfigError(reason, file=str(path), key=key) from exc
