"""CLI of the chat orchestrator and the memory: ``ask``, ``chat``, ``memory search``.

The orchestrator (:mod:`patchpilot.app.chat`), the run graph, the memory (chromadb) and the LLM
client (openai) load only when one of these commands runs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from patchpilot.cli.app import (
    Context,
    InventoryOpt,
    OutputFormat,
    emit_json,
    err,
    inventory_for,
    out,
    safe,
)

if TYPE_CHECKING:  # chromadb, openai and the orchestrator load only for these commands
    from patchpilot.app.chat import ChatAnswer, Orchestrator
    from patchpilot.core.policy import Policy
    from patchpilot.core.store import Store
    from patchpilot.graphs.run import RunContext

__all__ = ["ask_cmd", "chat_cmd", "memory_app"]

PolicyOpt = Annotated[
    Path | None, typer.Option("--policy", help="Policy YAML (default: the settings' policy).")
]


@contextmanager
def _session(
    c: Context, inventory: Path | None, policy_file: Path | None
) -> Iterator[Orchestrator]:
    from patchpilot.app.chat import Orchestrator, llm_hooks
    from patchpilot.app.contexts import run_context
    from patchpilot.core.policy import load_policy
    from patchpilot.graphs.scan import open_memory
    from patchpilot.tools.llm import make_client

    settings = c.settings
    inv = inventory_for(c, inventory, required=False)
    policy: Policy = load_policy(policy_file or settings.policy_path)
    memory = open_memory(settings)
    client = make_client(settings.llm, cache_dir=settings.cache_dir)
    with c.store() as store:
        understand, phrase = llm_hooks(client, store) if client is not None else (None, None)

        def make_context(frozen: Policy, store: Store = store) -> RunContext:
            return run_context(settings, store, frozen, actor=c.actor, memory=memory, llm=client)

        yield Orchestrator(
            settings=settings,
            store=store,
            inventory=inv,
            policy=policy,
            make_context=make_context,
            memory=memory,
            understand_llm=understand,
            phrase_llm=phrase,
            agent_llm=client,
        )


def _print_answer(answer: ChatAnswer) -> None:
    """The core's answer always; a model's phrasing only after it, marked as model-written."""
    out.print(safe(answer.text))
    if answer.llm_text:
        out.print("[dim]--- model-written summary (may be wrong; the facts are above) ---[/]")
        out.print(safe(answer.llm_text))
    how = f"understood by {answer.understood_by}, answered by {answer.answered_by}"
    notes = "; ".join(answer.llm_notes)
    err.print(f"[dim]({how}{'; ' + safe(notes) if notes else ''})[/]")


def _answer_json(answer: ChatAnswer) -> dict[str, Any]:
    return {"schema": "patchpilot.chat/v1", **answer.model_dump(mode="json")}


def _exit_code(answer: ChatAnswer) -> int:
    from patchpilot.graphs.run_document import RUN_EXIT

    if answer.run is not None:
        return RUN_EXIT.get(answer.run["status"], 1)
    return 0


def ask_cmd(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="A question or request, in plain words.")],
    inventory: InventoryOpt = None,
    policy_file: PolicyOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.TABLE
    ),
) -> None:
    """Ask one question or make one request ("which hosts are exposed to CVE-…?")."""
    c: Context = ctx.obj
    with _session(c, inventory, policy_file) as session:
        answer = session.handle(question)
    if fmt is OutputFormat.JSON:
        emit_json(_answer_json(answer))
    else:
        _print_answer(answer)
    raise typer.Exit(_exit_code(answer))


def chat_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    policy_file: PolicyOpt = None,
) -> None:
    """An interactive session: questions, requests, approvals; `help`, `history`, `exit`."""
    from patchpilot.agents.intake import MAX_TEXT_LENGTH

    c: Context = ctx.obj
    interactive = sys.stdin.isatty()
    with _session(c, inventory, policy_file) as session:
        if interactive:
            out.print(
                "patchpilot chat: ask about exposure, compliance or history, or request a "
                "change (it always waits for approval). `help`, `history`, `exit`."
            )
        while True:
            try:
                line = input("patchpilot> " if interactive else "")
            except EOFError:
                break
            text = line.strip()
            if not text:
                continue
            if len(text) > MAX_TEXT_LENGTH:  # bounded before it is echoed, wrapped or parsed
                err.print(
                    f"[red]that line has {len(text)} characters; at most {MAX_TEXT_LENGTH} "
                    "are read: send one short request[/]"
                )
                continue
            if text in {"exit", "quit", ":q"}:
                break
            if text == "history":
                for number, turn in enumerate(session.history, start=1):
                    out.print(f"{number}. {safe(turn.request.describe())}")
                continue
            if not interactive:
                out.print(f"> {safe(text)}")
            _print_answer(session.handle(text))


memory_app = typer.Typer(help="The vector memory of decisions, outcomes and incidents.")


@memory_app.command("search")
def memory_search_cmd(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100)] = 10,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = (
        OutputFormat.TABLE
    ),
) -> None:
    """Recall the decisions, outcomes and incidents closest to a query."""
    from patchpilot.tools.memory import VectorMemory

    memory = VectorMemory.open(ctx.obj.settings)
    items = memory.recall(query, k=limit)
    if fmt is OutputFormat.JSON:
        emit_json(
            {"schema": "patchpilot.memory/v1", "items": [i.model_dump(mode="json") for i in items]}
        )
        return
    table = Table(title=f"{len(items)} item(s) for {safe(repr(query))}", title_justify="left")
    for col in ("id", "kind", "distance", "text"):
        table.add_column(col, overflow="fold")
    for item in items:
        table.add_row(safe(item.id), item.kind, f"{item.distance:.3f}", safe(item.text))
    out.print(table)
