"""The chat-intake benchmark's two halves (benchmarks/intents.py, benchmarks/intents/*.yaml).

Both halves run through the deterministic parser as the chat calls it; CI keeps the floors:
0 unsafe misses in either half, at least 90 % exact on each (the held-back half is the one that
measures phrasings the grammar was not tuned on), and the data files stay valid and disjoint.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from patchpilot.core.intents import Intent, StatusTopic

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark() -> ModuleType:
    path = REPO / "benchmarks" / "intents.py"
    spec = importlib.util.spec_from_file_location("benchmark_intents", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_intents", module)
    spec.loader.exec_module(module)
    return module


BENCH = _load_benchmark()
HALVES = BENCH.load_all()


def test_at_least_300_cases_split_in_two_disjoint_halves() -> None:
    dev, held = HALVES["dev"], HALVES["heldout"]
    assert len(dev) + len(held) >= 300
    assert len(held) >= 150
    assert not {c.message for c in dev} & {c.message for c in held}


@pytest.mark.parametrize("half", ["dev", "heldout"])
def test_every_family_is_covered(half: str) -> None:
    cases = HALVES[half]
    intents = {c.intent for c in cases}
    assert intents == set(Intent)
    topics = {c.status_topic for c in cases if c.status_topic is not None}
    for topic in (
        StatusTopic.PENDING,
        StatusTopic.FINDINGS,
        StatusTopic.REBOOT,
        StatusTopic.HOLDS,
        StatusTopic.COMPLIANCE,
        StatusTopic.APPROVALS,
        StatusTopic.RUNS,
        StatusTopic.FEEDS,
    ):
        assert topic in topics, topic
    assert any(c.security_only for c in cases)
    assert any(c.overdue for c in cases)
    assert any(c.fix_state is not None for c in cases)
    assert any(c.clarify for c in cases)


@pytest.mark.parametrize("half", ["dev", "heldout"])
def test_half_has_no_unsafe_miss_and_meets_the_floor(half: str) -> None:
    result = BENCH.evaluate(BENCH.grammar(), HALVES[half])
    assert result.unsafe == (), "\n".join(result.unsafe)
    assert result.accuracy >= BENCH.ACCURACY_TARGET, f"{half}: {result.accuracy:.1%}"


def test_the_requests_quoted_in_issue_14_are_in_dev_and_exact() -> None:
    quoted = {
        "what security updates are pending on db-1?",
        "whats pending on the prod boxes",
        "show me everything that's overdue",
        "which hosts need a reboot?",
        "any KEV stuff on the fleet?",
        "why wasn't db-1 upgraded to acme-web 1.1.0?",
        "please apply the zlib security fix on all staging hosts",
        "upgrade acme-web to 1.1.0 on web-1 tonight",
    }
    cases = [c for c in HALVES["dev"] if c.text in quoted]
    assert {c.text for c in cases} == quoted
    result = BENCH.evaluate(BENCH.grammar(), cases)
    assert result.correct == len(quoted), "\n".join(result.safe + result.unsafe)


def test_main_reports_both_halves(capsys: pytest.CaptureFixture[str]) -> None:
    assert BENCH.main(["--summary"]) == 0
    out = capsys.readouterr().out
    for half in ("dev", "heldout"):
        assert f"== deterministic parser, {half}:" in out
    assert out.count("UNSAFE (would act wrongly): 0") == 2
    assert out.rstrip().endswith("PASS")


def test_invalid_data_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {
        "not a list": "text: x\n",
        "unknown key": "- {text: x, intent: unknown, colour: red}\n",
        "bad package": "- {text: x, intent: patch, packages: ['Foo$'], hosts: [web-1]}\n",
        "status without topic": "- {text: x, intent: status}\n",
        "topic without status": "- {text: x, intent: exposure, status_topic: runs}\n",
        "duplicate": "- {text: x, intent: unknown}\n- {text: x, intent: unknown}\n",
        "lower-case CVE": "- {text: x, intent: exposure, cves: [cve-2024-6387]}\n",
    }
    monkeypatch.setattr(BENCH, "DATA", tmp_path)
    for label, body in bad.items():
        (tmp_path / "dev.yaml").write_text(body)
        with pytest.raises(BENCH.BenchmarkDataError):
            BENCH.load_cases("dev")
        assert label
    with pytest.raises(BENCH.BenchmarkDataError):
        BENCH.load_cases("train")
    assert BENCH.main(["--half", "dev"]) == 2
