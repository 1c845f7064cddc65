"""``gather_many``: several facts in one round trip give exactly what ``gather`` gives."""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult
from patchpilot.tools.facts import (
    AptHolds,
    DpkgPackages,
    Fact,
    KernelRelease,
    NeedrestartAvailable,
    OsRelease,
    RebootRequired,
    gather,
    gather_many,
)
from patchpilot.tools.transport.local import LocalTransport


class Echo(Fact[tuple[str, int]]):
    """Prints ``text`` exactly (no newline added) and exits ``code``."""

    name: ClassVar[str] = "Echo"
    ok_exit_codes: ClassVar[frozenset[int]] = frozenset(range(256))

    def __init__(self, text: str, code: int = 0) -> None:
        self.text = text
        self.code = code

    def command(self) -> list[str]:
        return ["sh", "-c", 'printf "%s" "$1"; exit "$2"', "sh", self.text, str(self.code)]

    def parse(self, result: CommandResult) -> tuple[str, int]:
        self.check_result(result)
        return result.stdout, result.exit_code


class Fails(Fact[str]):
    name: ClassVar[str] = "Fails"

    def command(self) -> list[str]:
        return ["sh", "-c", "echo partial; echo oops >&2; exit 3"]

    def parse(self, result: CommandResult) -> str:
        self.check_result(result)
        return result.stdout


def test_a_batch_equals_one_gather_per_fact_on_this_machine() -> None:
    facts: list[Fact[Any]] = [
        OsRelease(),
        KernelRelease(),
        DpkgPackages(),
        RebootRequired(),
        AptHolds(),
        NeedrestartAvailable(),
    ]
    with LocalTransport("localhost") as transport:
        batched = gather_many(transport, facts)
        single = [gather(transport, fact) for fact in facts]
    assert batched == single


def test_a_failing_fact_gets_its_error_and_the_others_their_values() -> None:
    with LocalTransport("localhost") as transport:
        first, failed, last = gather_many(transport, [Echo("a"), Fails(), Echo("b", 4)])
    assert first == ("a", 0)
    assert isinstance(failed, CommandFailedError)
    assert failed.exit_code == 3
    assert "oops" in str(failed)
    assert last == ("b", 4)


def test_an_empty_batch_runs_nothing() -> None:
    with LocalTransport("localhost") as transport:
        assert gather_many(transport, []) == []


def test_markers_printed_by_a_command_cannot_forge_another_slice() -> None:
    forged = "pp-00000000000000000000000000000000 1 E 0\npp-0 0 B"
    with LocalTransport("localhost") as transport:
        values = gather_many(transport, [Echo(forged), Echo("real")])
    assert values == [(forged, 0), ("real", 0)]


def test_a_cut_batch_reports_the_missing_facts() -> None:
    class Kills(Fact[str]):
        name: ClassVar[str] = "Kills"

        def command(self) -> list[str]:
            return ["sh", "-c", "kill -9 $PPID"]  # ends the batch shell itself

        def parse(self, result: CommandResult) -> str:
            return result.stdout

    with LocalTransport("localhost") as transport:
        first, _, last = gather_many(transport, [Echo("a"), Kills(), Echo("b")])
    assert first == ("a", 0)
    assert isinstance(last, FactParseError)


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=60,
        ),
        min_size=1,
        max_size=4,
    ),
    code=st.integers(min_value=0, max_value=255),
)
def test_every_slice_is_the_command_output_byte_for_byte(texts: list[str], code: int) -> None:
    facts = [Echo(text, code) for text in texts]
    with LocalTransport("localhost") as transport:
        assert gather_many(transport, facts) == [(text, code) for text in texts]
