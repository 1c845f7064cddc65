"""Reporting agent: a short human summary of a patch run, deterministic or LLM-written.

The deterministic core (:func:`summary_text`) always works; with an LLM configured the
``run_summary`` prompt may phrase it from the run document (fenced as data). The LLM text is
used only if it names no host that is not in the run, and the run records which one was used.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.prompts import as_json, fence, load_prompt
from patchpilot.tools.llm import LLMClient, LLMFallback, try_complete

__all__ = ["RunSummary", "summarize_run", "summary_text"]


class RunSummary(BaseModel):
    """What the ``run_summary`` prompt returns."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(max_length=2000)
    next_steps: list[str] = Field(max_length=5)


def summary_text(document: dict[str, Any]) -> str:
    """The deterministic summary of a run document (``patchpilot.run/v1``)."""
    plan = document.get("plan") or {}
    items = plan.get("items", [])
    counts = Counter(d["status"] for d in document.get("deployments", []))
    parts = [f"Run {document['run_id']} {document['status']}"]
    if items:
        hosts = sorted({i["host"] for i in items})
        packages = sorted({f"{i['package']} {i['to']}" for i in items})
        parts.append(
            f"plan {plan['plan_id']}: {', '.join(packages)} on {len(hosts)} host(s) "
            f"({', '.join(hosts)})"
        )
        parts.append(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    else:
        parts.append("nothing planned")
    failed = [
        d for d in document.get("deployments", []) if d["status"] in ("failed", "rolled_back")
    ]
    for d in failed[:3]:
        parts.append(f"{d['host']} {d['package']} {d['to']} {d['status']}: {d['reason']}")
    if document.get("reason"):
        parts.append(str(document["reason"]))
    return "; ".join(parts) + "."


def summarize_run(document: dict[str, Any], client: LLMClient | None) -> tuple[str, dict[str, Any]]:
    """The summary and a record of how it was written (``{"by": "core"|"llm", ...}``)."""
    core = summary_text(document)
    if client is None:
        return core, {"by": "core", "reason": "no LLM configured"}
    prompt = load_prompt("run_summary")
    compact = {k: document.get(k) for k in ("run_id", "status", "reason", "rings", "deployments")}
    compact["plan"] = {
        "items": [
            {k: i[k] for k in ("host", "package", "from", "to")}
            for i in (document.get("plan") or {}).get("items", [])
        ]
    }
    messages = prompt.messages(run=fence("run document", as_json(compact)))
    result = try_complete(client, "run_summary", prompt.version, messages, RunSummary)
    if isinstance(result, LLMFallback):
        return core, {"by": "core", "reason": result.reason}
    text = result.value.summary
    known = {d["host"] for d in document.get("deployments", [])} | set(document.get("hosts", []))
    named = {w.strip(".,;:()") for w in text.split()} & _host_like(text)
    strangers = sorted(named - known)
    if strangers:
        return core, {"by": "core", "reason": f"the LLM summary named unknown hosts {strangers}"}
    if result.value.next_steps:
        text += " Next: " + " ".join(result.value.next_steps)
    return text, {
        "by": "llm",
        "model": result.model,
        "prompt": f"run_summary v{prompt.version}",
        "tokens": result.usage.total_tokens,
        "cached": result.cached,
    }


def _host_like(text: str) -> set[str]:
    """Words shaped like the lab's host names (``name-N``)."""
    import re

    return {m.group(0) for m in re.finditer(r"\b[a-z][a-z0-9]*-\d+\b", text)}
