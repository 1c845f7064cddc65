"""The deterministic chat-request parser (patchpilot.agents.intake) and the ChatRequest model."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from patchpilot.agents.intake import MAX_TEXT_LENGTH, help_text, parse_request
from patchpilot.core.intents import (
    ChatRequest,
    Intent,
    PackageSpec,
    Scope,
    StatusTopic,
    TagMatch,
    When,
)
from patchpilot.core.models import Ecosystem, FixStatus, Severity
from patchpilot.core.validate import validate_package_name, validate_version

REPO = Path(__file__).resolve().parents[2]


def _load_benchmark() -> ModuleType:
    """benchmarks/ is not a package: load benchmarks/intents.py from its path."""
    path = REPO / "benchmarks" / "intents.py"
    spec = importlib.util.spec_from_file_location("benchmark_intents", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_intents", module)
    spec.loader.exec_module(module)
    return module


BENCH = _load_benchmark()
DEV: tuple[object, ...] = BENCH.load_cases("dev")
HOSTS: tuple[str, ...] = BENCH.HOSTS
TAGS: tuple[str, ...] = BENCH.TAGS
PACKAGES: tuple[str, ...] = BENCH.PACKAGES
RUN = "20261127T101941Z-31b1dc"
# Cases the deterministic parser is known to miss (safely: it answers with help, never acts).
KNOWN_MISSES = {"kick off patching on staging", "hotfix openssl on db-2"}


def parse(text: str) -> ChatRequest:
    return parse_request(text, known_hosts=HOSTS, known_tags=TAGS, known_packages=PACKAGES)


def _assert_safe(req: ChatRequest) -> None:
    """Invariants of every parse, whatever the text."""
    for spec in req.packages:
        validate_package_name(spec.name, Ecosystem.DEBIAN)
        if spec.version is not None:
            validate_version(spec.version, Ecosystem.DEBIAN)
    if req.is_actionable:
        assert req.scope.is_explicit
        assert req.needs_clarification is None
        assert req.intent in {Intent.PATCH, Intent.ROLLBACK}
    if req.acts:
        assert req.needs_clarification is None
    assert 0.0 <= req.confidence <= 1.0


# --------------------------------------------------------------------------- benchmark cases


def test_benchmark_has_enough_cases() -> None:
    assert len(DEV) >= 70
    texts = [c.text for c in DEV]  # type: ignore[attr-defined]
    assert len(texts) == len(set(texts))
    for required in (
        "patch the critical ones on staging tonight",
        "upgrade acme-web to 1.1.0 on staging now",
        "roll back acme-web on web-2",
        "which hosts are exposed to CVE-2024-6387?",
        "which lab hosts are exposed to the newest openssl advisory?",
        "why is web-2 non-compliant?",
        "what happened the last time we upgraded openssl?",
        "show pending approvals",
        f"approve {RUN}",
        "patch everything",
        "asdf qwerty zxcv",
    ):
        assert required in texts


@pytest.mark.parametrize("case", DEV, ids=lambda c: c.text[:60])
def test_benchmark_case(case: object) -> None:
    req = BENCH.grammar()(  # as the chat calls it: with a clock, so times are read
        case.message,  # type: ignore[attr-defined]
        known_hosts=HOSTS,
        known_tags=TAGS,
        known_packages=PACKAGES,
    )
    _assert_safe(req)
    want = case.expected()  # type: ignore[attr-defined]
    got = {k: v for k, v in BENCH.actual(req).items() if k in want}
    if case.text in KNOWN_MISSES:  # type: ignore[attr-defined]
        assert got != want, "a known miss now passes: remove it from KNOWN_MISSES"
        assert not req.acts
        return
    assert got == want, req.describe()


def test_benchmark_accuracy_and_safety() -> None:
    result = BENCH.evaluate(BENCH.grammar(), DEV)
    assert result.accuracy >= BENCH.ACCURACY_TARGET
    assert result.unsafe == ()


def test_benchmark_main_passes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATCHPILOT_LLM__BASE_URL", raising=False)
    assert BENCH.main(["--llm"]) == 0
    out = capsys.readouterr().out
    assert "exact:" in out
    assert "UNSAFE (would act wrongly): 0" in out
    assert "== deterministic parser, dev:" in out
    assert "== deterministic parser, heldout:" in out
    assert "no endpoint configured" in out


def test_benchmark_llm_path_through_a_local_endpoint(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in "model" that answers with the grammar's own reading: the benchmark's LLM
    # path (prompt, strict schema, HTTP, validation against the known lists) is exercised end
    # to end, so its accuracy can only match the grammar's, and it must stay free of unsafe misses.
    import re

    from patchpilot.app import chat as orchestrator
    from tests.llm_server import LLMTestServer, answer

    def responder(body: dict[str, object]) -> object:
        content = str(body["messages"][1]["content"])  # type: ignore[index]
        text = re.search(r"\(untrusted[^\n]*\n(.*)\n<<<END chat request>>>", content, re.S)
        req = parse_request(
            text.group(1) if text else "",
            known_hosts=BENCH.HOSTS,
            known_tags=BENCH.TAGS,
            known_packages=BENCH.PACKAGES,
        )
        return answer(
            {
                "intent": req.intent.value,
                "hosts": list(req.scope.hosts),
                "tags": list(req.scope.tags),
                "tag_match": req.scope.tag_match.value,
                "groups": list(req.scope.groups),
                "all_hosts": req.scope.all_hosts,
                "packages": [{"name": p.name, "version": p.version} for p in req.packages],
                "cves": list(req.cves),
                "severity_at_least": req.severity_at_least.value if req.severity_at_least else None,
                "kev_only": req.kev_only,
                "when": req.when.value,
                "dry_run": req.dry_run,
                "run_id": req.run_id,
                "newest": req.newest,
                "needs_clarification": req.needs_clarification,
            }
        )

    with LLMTestServer(responder=responder) as server:
        monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path))
        monkeypatch.setenv("PATCHPILOT_LLM__BASE_URL", server.base_url)
        monkeypatch.setenv("PATCHPILOT_LLM__CACHE", "false")
        monkeypatch.setenv("PATCHPILOT_LLM__MAX_CALLS_PER_RUN", "1000")
        monkeypatch.setattr(orchestrator, "_BENCH_CLIENT", [])
        status = BENCH.main(["--llm", "--half", "dev"])
    out = capsys.readouterr().out
    assert "== LLM parser, dev:" in out
    llm_part = out.split("== LLM parser, dev:", 1)[1]
    assert re.search(r"LLM accuracy \d+\.\d%, unsafe misses \d+", llm_part), llm_part[-2000:]
    # KNOWN GAP (patchpilot/app/chat.py, not this module): the LLM intake's schema (LLMIntake)
    # has no ``security_only`` and its reading gets no ``not_before`` from read_when yet, so a
    # "security updates" or "at 10pm" change read by the model ALONE differs from what was
    # meant. These are the only unsafe misses tolerated here, until the chat carries the
    # fields (in the chat the grammar, certain about these, is used and the model is not
    # asked). Anything else fails.
    gaps = {"security_only: want True got False", "not_before: want True got False"}
    unsafe = re.findall(r"\[UNSAFE\] .*\n.*\n\s+(.*)", llm_part)
    assert all(diff in gaps for diff in unsafe), unsafe
    gap_cases = [
        c
        for c in DEV
        if c.intent in {Intent.PATCH, Intent.ROLLBACK}  # type: ignore[attr-defined]
        and (c.security_only or c.not_before)  # type: ignore[attr-defined]
    ]
    assert len(unsafe) <= len(gap_cases)
    assert status == (1 if unsafe else 0)


# --------------------------------------------------------------------------- specific behaviour


def test_examples_from_the_brief() -> None:
    req = parse("patch the critical ones on staging tonight")
    assert req.is_actionable
    assert req.intent is Intent.PATCH
    assert req.scope == Scope(tags=("staging",))
    assert req.severity_at_least is Severity.CRITICAL
    assert req.when is When.TONIGHT

    req = parse("upgrade acme-web to 1.1.0 on staging now")
    assert req.packages == (PackageSpec(name="acme-web", version="1.1.0"),)
    assert req.when is When.NOW

    req = parse("which lab hosts are exposed to the newest openssl advisory?")
    assert req.intent is Intent.EXPOSURE
    assert req.newest
    assert "lab" in req.unparsed
    assert not req.acts

    req = parse(f"reject {RUN} because the canary failed")
    assert req.intent is Intent.REJECT
    assert req.is_decision
    assert req.comment == "the canary failed"
    assert parse(f"reject {RUN}, reason: flaky canary").comment == "flaky canary"
    assert parse(f"deny run {RUN}: too risky").comment == "too risky"
    assert parse(f"approve {RUN} please").comment is None


def test_run_id_normalised_and_status_topics() -> None:
    assert parse(f"approve {RUN.lower()}").run_id == RUN
    assert parse("show pending approvals").status_topic is StatusTopic.APPROVALS
    assert parse("list recent runs").status_topic is StatusTopic.RUNS
    assert parse("give me a compliance summary for prod").status_topic is StatusTopic.COMPLIANCE
    assert parse("how many critical findings do we have?").status_topic is StatusTopic.FINDINGS


def test_tag_match() -> None:
    assert parse("patch the prod web servers").scope.tag_match is TagMatch.ALL
    assert parse("patch staging and canary").scope.tag_match is TagMatch.ANY


def test_fuzzy_never_changes_digits() -> None:
    req = parse("patch web-3")
    assert req.scope.hosts == ()
    assert req.needs_clarification is not None
    assert "web-3" in req.needs_clarification
    req = parse("upgrade libssl on web-1")
    assert req.packages == ()
    assert not req.is_actionable
    assert parse("patch web1").scope.hosts == ("web-1",)


def test_fuzzy_lowers_confidence() -> None:
    exact = parse("upgrade openssl on web-1")
    typo = parse("upgrdae opensl on web1")
    assert typo.packages == exact.packages
    assert typo.scope == exact.scope
    assert typo.confidence < exact.confidence


def test_shell_metacharacters_never_trimmed_into_names() -> None:
    for text in (
        "patch web-*",
        "upgrade acme-web=1.1.0;reboot on web-1",
        "upgrade `id` on web-1",
        "upgrade acme-web=$(reboot) on web-1",
        "upgrade acme-web|sh on web-1",
    ):
        req = parse(text)
        assert not req.acts, text
        _assert_safe(req)


def test_without_known_lists() -> None:
    req = parse_request("upgrade nginx to 1.24.0-1 on bastion-3 tonight")
    assert req.is_actionable
    assert req.packages == (PackageSpec(name="nginx", version="1.24.0-1"),)
    assert req.scope.hosts == ("bastion-3",)
    # A word that is not a valid Debian name never becomes a package.
    req = parse_request("upgrade Nginx_Plus on web-1")
    assert req.packages == ()
    assert not req.is_actionable
    # Default tags still work.
    assert parse_request("patch staging now").scope.tags == ("staging",)


def test_too_long_and_non_text() -> None:
    req = parse("patch web-1 " * (MAX_TEXT_LENGTH // 5))
    assert req.intent is Intent.UNKNOWN
    assert req.needs_clarification is not None
    assert not req.acts
    req = parse_request(None)  # type: ignore[arg-type]
    assert req.intent is Intent.UNKNOWN


def test_describe_is_one_line() -> None:
    for case in DEV:
        line = parse(case.message).describe()  # type: ignore[attr-defined]
        assert line
        assert "\n" not in line


def test_help_text_examples_are_understood() -> None:
    text = help_text()
    assert "approve" in text
    examples = [
        "patch the critical ones on staging tonight",
        "upgrade acme-web to 1.1.0 on staging now",
        "roll back acme-web on web-2",
        "which hosts are exposed to CVE-2024-6387?",
        "why is web-2 non-compliant?",
        "what happened the last time we upgraded openssl?",
        "show pending approvals",
        f"approve {RUN}",
    ]
    for example in examples:
        assert example in text
        assert parse(example).intent is not Intent.UNKNOWN


# --------------------------------------------------------------------------- the model


def test_model_validates_packages_cves_and_run_ids() -> None:
    with pytest.raises(ValidationError):
        PackageSpec(name="Bad Name")
    with pytest.raises(ValidationError):
        PackageSpec(name="openssl", version="1.0;reboot")
    with pytest.raises(ValidationError):
        ChatRequest(intent=Intent.EXPOSURE, cves=("CVE-24-1",))
    with pytest.raises(ValidationError):
        ChatRequest(intent=Intent.APPROVE, run_id="yesterday")
    with pytest.raises(ValidationError):
        ChatRequest(intent=Intent.PATCH, extra_field=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Scope(hosts=("web 1",))
    req = ChatRequest(intent=Intent.EXPOSURE, cves=("cve-2024-6387", "CVE-2024-6387"))
    assert req.cves == ("CVE-2024-6387",)
    with pytest.raises(ValidationError):
        req.intent = Intent.PATCH  # type: ignore[misc]


def test_model_is_actionable_defence_in_depth() -> None:
    """An LLM-built request without scope (or a rollback without package) never acts."""
    assert not ChatRequest(intent=Intent.PATCH).is_actionable
    assert ChatRequest(intent=Intent.PATCH, scope=Scope(all_hosts=True)).is_actionable
    assert not ChatRequest(intent=Intent.ROLLBACK, scope=Scope(hosts=("web-1",))).is_actionable
    assert not ChatRequest(
        intent=Intent.PATCH, scope=Scope(hosts=("web-1",)), needs_clarification="which?"
    ).is_actionable
    assert not ChatRequest(intent=Intent.EXPOSURE, scope=Scope(all_hosts=True)).is_actionable
    assert not ChatRequest(intent=Intent.APPROVE).is_decision
    assert ChatRequest(intent=Intent.APPROVE, run_id=RUN).is_decision


# --------------------------------------------------------------------------- properties

_VOCAB = [
    "patch", "upgrade", "roll", "back", "rollback", "approve", "reject", "why", "which",
    "hosts", "all", "everything", "everywhere", "fleet", "on", "and", "to", "now", "tonight",
    "dry", "run", "critical", "high", "kev", "not", "except", "show", "pending", "what",
    "happened", "last", "time", "exposed", "CVE-2024-6387", "cve", "2024", RUN, "1.1.0",
    "=", "acme-web=1.1.0", "openssl", "web-1", "web-3", "db", "staging", "prod", "group",
    "dmz", "$(reboot)", "`id`", "web-*", "1.0;rm", "-rf", "'", "\"", "?", "upgrdae",
    "stagging", "v1.2", "version", "package", "nginx", "Foo$", "..", "::", "~", "ıstanbul",
    "\u0435", "\x00", "\n", "\u202e",
]  # fmt: skip
_vocab_text = st.lists(st.sampled_from(_VOCAB), max_size=25).map(" ".join)
_any_text = st.one_of(st.text(max_size=400), _vocab_text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_text)
def test_arbitrary_text_is_safe(text: str) -> None:
    for req in (parse(text), parse_request(text)):
        _assert_safe(req)
    assert parse(text) == parse(text)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=MAX_TEXT_LENGTH + 1, max_size=MAX_TEXT_LENGTH + 50))
def test_overlong_text_never_acts(text: str) -> None:
    req = parse(text)
    assert req.intent is Intent.UNKNOWN
    assert req.needs_clarification is not None


_PATCH_VERBS = ["patch", "upgrade", "update", "install", "please upgrade", "could you patch"]
_WHEN_WORDS = {
    "": When.UNSPECIFIED,
    "now": When.NOW,
    "asap": When.NOW,
    "right away": When.NOW,
    "tonight": When.TONIGHT,
    "this evening": When.TONIGHT,
    "in the next maintenance window": When.NEXT_WINDOW,
}


@st.composite
def _patch_sentence(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    verb = draw(st.sampled_from(_PATCH_VERBS))
    pkgs = draw(st.lists(st.sampled_from(PACKAGES), max_size=2, unique=True))
    version = draw(st.sampled_from([None, "1.1.0", "2:3.0.15-1~deb12u1"])) if pkgs else None
    hosts = draw(st.lists(st.sampled_from(HOSTS), max_size=3, unique=True))
    tags = [] if hosts else draw(st.lists(st.sampled_from(TAGS), max_size=1))
    all_hosts = not hosts and not tags and draw(st.booleans())
    when = draw(st.sampled_from(sorted(_WHEN_WORDS)))
    dry = draw(st.booleans())
    parts = ["dry run:" if dry else "", verb]
    if pkgs:
        parts.append(
            " and ".join([*pkgs[:-1], f"{pkgs[-1]} to {version}" if version else pkgs[-1]])
        )
    if hosts:
        parts.append("on " + " and ".join(hosts))
    elif tags:
        parts.append("on " + tags[0])
    elif all_hosts:
        parts.append("on all hosts")
    parts.append(when)
    expected = {
        "packages": tuple(
            PackageSpec(name=p, version=version if i == len(pkgs) - 1 else None)
            for i, p in enumerate(pkgs)
        ),
        "scope": Scope(hosts=tuple(hosts), tags=tuple(tags), all_hosts=all_hosts),
        "when": _WHEN_WORDS[when],
        "dry_run": dry,
    }
    return " ".join(p for p in parts if p), expected


@settings(max_examples=300, deadline=None)
@given(_patch_sentence(), st.booleans())
def test_generated_patch_requests(sentence: tuple[str, dict[str, object]], upper: bool) -> None:
    text, expected = sentence
    if upper:  # keywords, hosts, tags and package names are case-insensitive; versions are not
        text = text.upper()
        pkgs: tuple[PackageSpec, ...] = expected["packages"]  # type: ignore[assignment]
        expected["packages"] = tuple(
            PackageSpec(name=p.name, version=p.version.upper() if p.version else None) for p in pkgs
        )
    req = parse(text)
    assert req.intent is Intent.PATCH, req.describe()
    for key, value in expected.items():
        assert getattr(req, key) == value, (text, key, req.describe())
    scope: Scope = expected["scope"]  # type: ignore[assignment]
    assert req.is_actionable == scope.is_explicit, req.describe()
    if not scope.is_explicit:
        assert req.needs_clarification is not None


# Words that change what a change request means; ignoring any of them could widen or reorder a
# change, so wherever one appears in a patch request, the request must not act.
_MEANING_CHANGERS = [
    "except", "but", "not", "never", "don't", "without", "unless", "other", "then", "first",
    "before", "after", "if", "from", "while", "some", "one", "reboot", "remove", "like",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_patch_sentence(), st.sampled_from(_MEANING_CHANGERS), st.integers(min_value=1))
def test_meaning_changing_words_block_action(
    sentence: tuple[str, dict[str, object]], word: str, where: int
) -> None:
    words = sentence[0].split()
    words.insert(where % (len(words) + 1), word)
    text = " ".join(words)
    req = parse(text)
    assert not req.acts, (text, req.describe())


# --------------------------------------------------------------------------- issue 14 grammar


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("what security updates are pending on db-1?", StatusTopic.PENDING),
        ("whats pending on the prod boxes", StatusTopic.PENDING),
        ("show pending approvals", StatusTopic.APPROVALS),
        ("which hosts need a reboot?", StatusTopic.REBOOT),
        ("pending reboots on staging", StatusTopic.REBOOT),
        ("list holds", StatusTopic.HOLDS),
        ("which vulns are held back on web-1", StatusTopic.FINDINGS),
        ("hosts breaching sla", StatusTopic.COMPLIANCE),
        ("show me everything that's overdue", StatusTopic.FINDINGS),
        ("any KEV stuff on the fleet?", StatusTopic.FINDINGS),
        ("when were the feeds last refreshed", StatusTopic.FEEDS),
        (f"what did {RUN} do?", StatusTopic.RUNS),
    ],
)
def test_status_topics_of_issue_14(text: str, topic: StatusTopic) -> None:
    req = parse(text)
    assert req.intent is Intent.STATUS, req.describe()
    assert req.status_topic is topic, req.describe()
    assert not req.acts


def test_question_filters() -> None:
    req = parse("show me everything that's overdue")
    assert req.overdue
    assert req.scope.all_hosts
    req = parse("what security updates are pending on db-1?")
    assert req.security_only
    assert req.scope.hosts == ("db-1",)
    assert parse("findings without a fix on canary-1").fix_state is FixStatus.NO_FIX_YET
    assert parse("which vulns are held back on web-1").fix_state is FixStatus.HELD
    assert parse("list vulnerabilities with a fix available").fix_state is FixStatus.FIXED
    req = parse("why wasn't db-1 upgraded to acme-web 1.1.0?")
    assert req.intent is Intent.EXPLAIN
    assert req.packages == (PackageSpec(name="acme-web", version="1.1.0"),)
    line = parse("overdue vulns on the web servers").describe()
    assert "overdue only" in line


def test_security_fix_request_is_a_narrow_change() -> None:
    req = parse("please apply the zlib security fix on all staging hosts")
    assert req.is_actionable
    assert req.security_only
    assert req.packages == (PackageSpec(name="zlib"),)
    assert req.scope == Scope(tags=("staging",))
    assert "security only" in req.describe()


@pytest.mark.parametrize(
    "text",
    [
        "reboot db-1",
        "restart nginx on web-1",
        "hold openssl on db-1",
        "patch web-1 and restart it",
        "patch the hosts that need a reboot",
        "upgrade openssl on db-1 and hold it",
        "patch overdue findings on web-1",
        "patch web-1 without a fix",
        "update the feeds on web-1",
        "upgrade openssl anywhere",
        "patch the broken hosts",
        "patch web-1 after the incident",
        "update everything",
    ],
)
def test_question_words_never_widen_a_change(text: str) -> None:
    req = parse(text)
    assert not req.acts, req.describe()
    _assert_safe(req)


def test_everything_and_anywhere_are_all_hosts_only_in_questions() -> None:
    assert parse("compliance for the whole fleet").scope.all_hosts
    assert parse("is openssl held on canary-1").scope.all_hosts is False
    assert not parse("upgrade sudo on everything").acts
    assert parse("simulate patching everything on web-1").scope == Scope(hosts=("web-1",))


def test_a_version_after_to_belongs_to_the_one_package() -> None:
    req = parse("revert openssl on web-1 to 3.0.11-1")
    assert req.is_actionable
    assert req.packages == (PackageSpec(name="openssl", version="3.0.11-1"),)
    # two packages: which one? asked back
    assert not parse("upgrade openssl and libssl3 on web-1 to 3.0.11-1").acts
    # a version not after "to" in a change stays a question
    assert not parse("upgrade openssl on web-1 3.0.11-1").acts


_NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def test_times_are_read_with_a_clock() -> None:
    req = parse_request(
        "upgrade acme-web to 1.1.0 on web-1 tonight",
        known_hosts=HOSTS,
        known_packages=PACKAGES,
        now=_NOW,
    )
    assert req.is_actionable
    assert req.when is When.TONIGHT
    assert req.not_before is not None
    assert req.not_before > _NOW
    req = parse_request("patch db-1 on saturday", known_hosts=HOSTS, now=_NOW)
    assert req.is_actionable
    assert req.when is When.SCHEDULED
    assert req.not_before == datetime(2026, 12, 12, tzinfo=UTC)
    for text in ("patch db-1 later", "patch db-1 at 9", "patch db-1 before 22:00"):
        req = parse_request(text, known_hosts=HOSTS, now=_NOW)
        assert not req.acts, text
        assert req.not_before is None
    # without a clock, only now / tonight / next window are understood (and no time is set)
    req = parse_request("patch db-1 on saturday", known_hosts=HOSTS)
    assert not req.acts
    assert parse_request("patch db-1 tonight", known_hosts=HOSTS).not_before is None
    # questions carry no time
    assert (
        parse_request("pending updates on db-1 tonight", known_hosts=HOSTS, now=_NOW).not_before
        is None
    )


@settings(max_examples=200, deadline=None)
@given(_patch_sentence(), st.sampled_from(_MEANING_CHANGERS), st.integers(min_value=1))
def test_meaning_changing_words_block_action_with_a_clock(
    sentence: tuple[str, dict[str, object]], word: str, where: int
) -> None:
    words = sentence[0].split()
    words.insert(where % (len(words) + 1), word)
    text = " ".join(words)
    req = parse_request(text, known_hosts=HOSTS, known_tags=TAGS, known_packages=PACKAGES, now=_NOW)
    assert not req.acts, (text, req.describe())
