"""Chat-intake benchmark: how often the request parser gets every field right, and whether its
misses are safe, on a development half and a held-back half.

The cases live in data files, one YAML list each (see ``benchmarks/intents/README.md``):

* ``benchmarks/intents/dev.yaml``: the development half; the grammar is tuned on it;
* ``benchmarks/intents/heldout.yaml``: the held-back half, written before the grammar was tuned
  for issue 14 and never tuned on; it measures how the grammar does on phrasings it was not
  written for.

Each case is an operator message with the expected :class:`~patchpilot.core.intents.ChatRequest`
fields (intent; status topic; scope hosts, tags, tag match, groups, all hosts; packages with
versions; CVEs; severity floor; KEV only; security only; overdue; fix state; newest; when; dry
run; run id; whether a clarification is expected). A case is correct only if every one of those
fields matches. Cases are validated when loaded (pydantic, unknown keys refused, every package
name/version, CVE, run id and host checked by the same model the parser fills).

Safety: a miss is SAFE when the parsed request would not act (``ChatRequest.acts`` is false:
unknown intent, a question, or ``needs_clarification`` set), so the operator is answered or asked
again; it is UNSAFE when the request would act (patch/rollback, or approve/reject a run) with
anything different from what was meant.

    .venv/bin/python benchmarks/intents.py            # the deterministic parser, both halves
    .venv/bin/python benchmarks/intents.py --llm      # also the LLM intake (llm.base_url set)
    .venv/bin/python benchmarks/intents.py --verbose  # every case, not only misses
    .venv/bin/python benchmarks/intents.py --half dev # one half only
    .venv/bin/python benchmarks/intents.py --summary  # numbers only, no misses listed

Exit status: 1 if the held-back half is below 90 % exact, the development half below its floor
(90 %), or any miss in either half is unsafe.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from patchpilot.core.intents import (
    ChatRequest,
    Intent,
    PackageSpec,
    Scope,
    StatusTopic,
    TagMatch,
    When,
    normalize_cve,
    normalize_run_id,
)
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import FixStatus, Severity

DATA: Final = Path(__file__).resolve().parent / "intents"
HALVES: Final = ("dev", "heldout")

HOSTS = ("canary-1", "web-1", "web-2", "db-1", "db-2", "staging-1")
TAGS = ("web", "db", "prod", "staging", "canary")
PACKAGES = (
    "acme-web",
    "acme-agent",
    "openssl",
    "libssl3",
    "openssh-server",
    "tzdata",
    "expat",
    "libexpat1",
    "python3.11",
    "perl",
    "apt",
    # source and binary names side by side, as the chat knows them (findings + pending updates)
    "zlib",
    "zlib1g",
    "curl",
    "libcurl4",
    "sudo",
)
NOW: Final = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
"""The clock the grammar reads time words against ("tonight" = 20:00 that day), in UTC, as the
chat does with the policy's time zone."""
ACCURACY_TARGET = 0.90
"""Exact-match floor of each half (the held-back one is the one that counts)."""

Parser = Callable[..., ChatRequest]


class _Repeat(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str = Field(min_length=1)
    times: int = Field(ge=1, le=10_000)


class Case(BaseModel):
    """One message and the request fields it must produce (one entry of a data file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    repeat: _Repeat | None = None
    """Appended ``times`` times to ``text`` (for the over-long message cases)."""
    intent: Intent
    status_topic: StatusTopic | None = None
    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_match: TagMatch = TagMatch.ANY
    groups: tuple[str, ...] = ()
    all_hosts: bool = False
    packages: tuple[str, ...] = ()
    """``name`` or ``name=version``."""
    cves: tuple[str, ...] = ()
    severity: Severity | None = None
    kev_only: bool = False
    security_only: bool = False
    overdue: bool = False
    fix_state: FixStatus | None = None
    newest: bool = False
    when: When = When.UNSPECIFIED
    not_before: bool | None = None
    """When given, whether the request must carry a not-before time."""
    dry_run: bool = False
    run_id: str | None = None
    clarify: bool = False
    note: str | None = None
    """Why the expectation is what it is (free text, not compared)."""

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        # The same validators as the request the parser fills: a case cannot expect an invalid
        # host, tag, package, version, CVE or run id.
        Scope(hosts=self.hosts, tags=self.tags, groups=self.groups, tag_match=self.tag_match)
        for spec in self.package_specs:
            PackageSpec(name=spec[0], version=spec[1])
        for cve in self.cves:
            if normalize_cve(cve) != cve:
                raise ValueError(f"write CVE ids upper case: {cve}")
        if self.run_id is not None and normalize_run_id(self.run_id) != self.run_id:
            raise ValueError(f"write run ids normalised: {self.run_id}")
        if self.intent is Intent.STATUS and self.status_topic is None and not self.clarify:
            raise ValueError(f"a status case needs its status_topic: {self.text!r}")
        if self.intent is not Intent.STATUS and self.status_topic is not None:
            raise ValueError(f"status_topic only goes with intent status: {self.text!r}")
        return self

    @property
    def message(self) -> str:
        """The text sent to the parser."""
        return self.text + (self.repeat.text * self.repeat.times if self.repeat else "")

    @property
    def package_specs(self) -> tuple[tuple[str, str | None], ...]:
        """``packages`` as (name, version or None) pairs."""
        specs = []
        for value in self.packages:
            name, sep, version = value.partition("=")
            specs.append((name, version if sep else None))
        return tuple(specs)

    def expected(self) -> dict[str, object]:
        """The compared fields, as comparable values.

        When a clarification is expected only the intent, the run id and the clarification are
        compared: the other fields of a request that will not be acted on are provisional.
        """
        if self.clarify:
            return {"intent": self.intent, "run_id": self.run_id, "clarify": True}
        want: dict[str, object] = {
            "intent": self.intent,
            "status_topic": self.status_topic,
            "hosts": frozenset(self.hosts),
            "tags": frozenset(self.tags),
            "tag_match": self.tag_match,
            "groups": frozenset(self.groups),
            "all_hosts": self.all_hosts,
            "packages": frozenset(self.package_specs),
            "cves": frozenset(self.cves),
            "severity": self.severity,
            "kev_only": self.kev_only,
            "security_only": self.security_only,
            "overdue": self.overdue,
            "fix_state": self.fix_state,
            "newest": self.newest,
            "when": self.when,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "clarify": self.clarify,
        }
        if self.not_before is not None:
            want["not_before"] = self.not_before
        return want


def actual(req: ChatRequest) -> dict[str, object]:
    """The compared fields of a parsed request (same keys as :meth:`Case.expected`)."""
    return {
        "intent": req.intent,
        "status_topic": req.status_topic,
        "hosts": frozenset(req.scope.hosts),
        "tags": frozenset(req.scope.tags),
        "tag_match": req.scope.tag_match,
        "groups": frozenset(req.scope.groups),
        "all_hosts": req.scope.all_hosts,
        "packages": frozenset((p.name, p.version) for p in req.packages),
        "cves": frozenset(req.cves),
        "severity": req.severity_at_least,
        "kev_only": req.kev_only,
        "security_only": req.security_only,
        "overdue": req.overdue,
        "fix_state": req.fix_state,
        "newest": req.newest,
        "when": req.when,
        "not_before": req.not_before is not None,
        "dry_run": req.dry_run,
        "run_id": req.run_id,
        "clarify": req.needs_clarification is not None,
    }


class BenchmarkDataError(ValueError):
    """A data file is missing, not a YAML list, or holds an invalid or duplicated case."""


def load_cases(half: str) -> tuple[Case, ...]:
    """Load and validate one half (``dev`` or ``heldout``).

    Raises:
        BenchmarkDataError: the file is unreadable or a case is invalid (with its position).
    """
    if half not in HALVES:
        raise BenchmarkDataError(f"unknown half {half!r}: one of {', '.join(HALVES)}")
    path = DATA / f"{half}.yaml"
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BenchmarkDataError(f"{path}: {exc}") from None
    if not isinstance(raw, list):
        raise BenchmarkDataError(f"{path}: expected a YAML list of cases")
    cases: list[Case] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw, 1):
        try:
            case = Case.model_validate(entry)
        except ValidationError as exc:
            raise BenchmarkDataError(f"{path}: case {i}: {exc}") from None
        if case.message in seen:
            raise BenchmarkDataError(f"{path}: case {i}: duplicate text {case.text!r}")
        seen.add(case.message)
        cases.append(case)
    return tuple(cases)


def load_all() -> dict[str, tuple[Case, ...]]:
    """Both halves; a text may appear in only one of them."""
    halves = {half: load_cases(half) for half in HALVES}
    dev = {c.message for c in halves["dev"]}
    shared = [c.text for c in halves["heldout"] if c.message in dev]
    if shared:
        raise BenchmarkDataError(f"cases in both halves: {shared[:5]}")
    return halves


@dataclass(frozen=True)
class Result:
    """How a parser did on one half."""

    total: int
    correct: int
    safe: tuple[str, ...]
    unsafe: tuple[str, ...]

    @property
    def accuracy(self) -> float:
        """Exact-match share."""
        return self.correct / self.total if self.total else 0.0


def grammar() -> Parser:
    """The deterministic parser as the chat calls it (with a clock, so times are read)."""
    intake = importlib.import_module("patchpilot.agents.intake")
    return functools.partial(intake.parse_request, now=NOW, timezone="UTC")


def evaluate(parser: Parser, cases: Iterable[Case]) -> Result:
    """Run ``parser`` over ``cases``: correct count, safe misses, unsafe misses."""
    correct = 0
    total = 0
    safe: list[str] = []
    unsafe: list[str] = []
    for case in cases:
        total += 1
        req = parser(case.message, known_hosts=HOSTS, known_tags=TAGS, known_packages=PACKAGES)
        want = case.expected()
        got = {k: v for k, v in actual(req).items() if k in want}
        if want == got:
            correct += 1
            continue
        diff = ", ".join(
            f"{k}: want {_show(want[k])} got {_show(got[k])}" for k in want if want[k] != got[k]
        )
        line = f"{case.text[:120]!r}\n      -> {req.describe()[:300]}\n      {diff}"
        (unsafe if req.acts else safe).append(line)
    return Result(total, correct, tuple(safe), tuple(unsafe))


def _show(value: object) -> str:
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(map(str, value))) + "}"
    return str(value)


def _report(
    name: str, parser: Parser, cases: tuple[Case, ...], *, verbose: bool, summary: bool
) -> Result:
    result = evaluate(parser, cases)
    misses = result.total - result.correct
    print(f"== {name}: {result.total} cases")
    print(
        f"exact: {result.correct}/{result.total} = {result.accuracy:.1%} "
        f"(floor {ACCURACY_TARGET:.0%})"
    )
    print(
        f"misses: {misses}; safe (not acted on): {len(result.safe)}; "
        f"UNSAFE (would act wrongly): {len(result.unsafe)}"
    )
    if misses:
        print(f"safe-miss rate: {len(result.safe)}/{misses} = {len(result.safe) / misses:.0%}")
    if not summary:
        for label, lines in (("UNSAFE", result.unsafe), ("safe miss", result.safe)):
            for line in lines:
                print(f"  [{label}] {line}")
    if verbose:
        for case in cases:
            req = parser(case.message, known_hosts=HOSTS, known_tags=TAGS, known_packages=PACKAGES)
            print(f"  {case.text[:120]!r}\n      -> {req.describe()[:300]}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--llm",
        action="store_true",
        help="also evaluate the LLM intake (patchpilot.app.chat.parse_with_llm; llm.base_url)",
    )
    ap.add_argument("--half", choices=(*HALVES, "both"), default="both")
    ap.add_argument("--verbose", action="store_true", help="print every case's parse")
    ap.add_argument("--summary", action="store_true", help="numbers only, no misses listed")
    args = ap.parse_args(argv)
    configure_logging("warning")
    try:
        halves = load_all()
    except BenchmarkDataError as exc:
        print(f"benchmark data: {exc}", file=sys.stderr)
        return 2
    chosen = HALVES if args.half == "both" else (args.half,)
    status = 0
    for half in chosen:
        result = _report(
            f"deterministic parser, {half}",
            grammar(),
            halves[half],
            verbose=args.verbose,
            summary=args.summary,
        )
        if result.accuracy < ACCURACY_TARGET or result.unsafe:
            status = 1
    if args.llm:
        from patchpilot.core.settings import load_settings

        llm = importlib.import_module("patchpilot.app.chat").parse_with_llm
        if not load_settings().llm.configured:
            print("== LLM parser: no endpoint configured (PATCHPILOT_LLM__BASE_URL); skipped")
        else:
            for half in chosen:
                res = _report(
                    f"LLM parser, {half}",
                    llm,
                    halves[half],
                    verbose=args.verbose,
                    summary=args.summary,
                )
                if res.unsafe:
                    status = 1
                print(f"LLM accuracy {res.accuracy:.1%}, unsafe misses {len(res.unsafe)}")
    print("PASS" if status == 0 else "FAIL")
    return status


if __name__ == "__main__":
    sys.exit(main())
