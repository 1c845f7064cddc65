"""The vector memory: hashing embeddings, Chroma persistence across processes, recall, filters.

Hermetic: an embedded Chroma under ``tmp_path``, the model-free hashing embedding, and (for the
OpenAI-compatible embedding and the server case) sockets on loopback only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ValidationError

from patchpilot.core.errors import ConfigError, PatchpilotError
from patchpilot.core.settings import LLMSettings, MemorySettings, Settings
from patchpilot.tools.memory import (
    DecisionMemory,
    EmbeddingMismatchError,
    HashingEmbeddingFunction,
    IncidentMemory,
    OpenAICompatEmbeddingFunction,
    OutcomeMemory,
    VectorMemory,
    VectorMemoryError,
    VectorMemoryUnavailable,
    embedding_function,
)
from patchpilot.tools.memory.embeddings import HASHING_NAME, OPENAI_NAME, features

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _rollback(run_id: str = "r1", **changes: Any) -> OutcomeMemory:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "host": "canary-1",
        "host_profile": "web, staging, canary; criticality 2",
        "package": "acme-web",
        "from_version": "1.1.0",
        "to_version": "1.2.0",
        "status": "rollback",
        "error": "health check failed: HTTP 503",
        "at": T0,
    }
    fields.update(changes)
    return OutcomeMemory(**fields)


def _incident_503() -> IncidentMemory:
    return IncidentMemory(
        run_id="r1",
        host="canary-1",
        package="acme-web",
        version="1.2.0",
        summary="health check failed with HTTP 503 after the upgrade; rolled back to 1.1.0",
        at=T0,
    )


def _successes() -> list[OutcomeMemory]:
    return [
        OutcomeMemory(
            run_id="r1",
            host="db-1",
            package="openssl",
            from_version="3.0.14",
            to_version="3.0.15",
            status="success",
            at=T0,
        ),
        OutcomeMemory(
            run_id="r1",
            host="db-1",
            package="tzdata",
            from_version="2024a",
            to_version="2024b",
            status="success",
            at=T0,
        ),
    ]


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[VectorMemory]:
    with VectorMemory(tmp_path / "memory") as mem:
        yield mem


@pytest.fixture
def stocked(memory: VectorMemory) -> VectorMemory:
    memory.remember_outcome(_rollback())
    memory.remember_incident(_incident_503())
    for outcome in _successes():
        memory.remember_outcome(outcome)
    memory.remember_decision(
        DecisionMemory(
            run_id="r1",
            kind="approval",
            subject="openssl",
            text="approve openssl 3.0.15 on every host tonight",
            rationale="fixes CVE-2024-5535, no incident on canaries",
            at=T0,
        )
    )
    return memory


def _run_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter (no registry, no Chroma cache) and parse its JSON."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONSTARTUP"}
    env["PYTHONPATH"] = str(REPO)
    prelude = (
        "from patchpilot.core.logging import configure_logging; configure_logging('warning')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- embeddings


def test_hashing_embedding_is_deterministic_and_normalised() -> None:
    texts = ["openssl 3.0.15 -> 3.0.16 on db-1: success", "ACME-web 1.2.0 rollback", ""]
    first = HashingEmbeddingFunction()(texts)
    again = HashingEmbeddingFunction()(texts)
    assert len(first) == 3
    for vec, same in zip(first, again, strict=True):
        assert vec.shape == (512,)
        assert vec.dtype == np.float32
        assert np.array_equal(vec, same)
        assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    # Case is ignored.
    [lower] = HashingEmbeddingFunction()(["acme-web 1.2.0 rollback"])
    assert np.allclose(first[1], lower)


def test_hashing_embedding_survives_its_config() -> None:
    from chromadb.utils.embedding_functions import known_embedding_functions

    ef = HashingEmbeddingFunction(dim=256)
    assert known_embedding_functions[HASHING_NAME] is HashingEmbeddingFunction
    assert known_embedding_functions[OPENAI_NAME] is OpenAICompatEmbeddingFunction
    assert ef.name() == HASHING_NAME
    assert not ef.is_legacy()
    config = json.loads(json.dumps(ef.get_config()))
    rebuilt = HashingEmbeddingFunction.build_from_config(config)
    assert rebuilt.get_config() == ef.get_config() == {"dim": 256, "version": 1}
    text = ["tzdata 2024b on db-1"]
    assert np.array_equal(ef(text)[0], rebuilt(text)[0])
    with pytest.raises(ValueError, match="version"):
        HashingEmbeddingFunction.build_from_config({"dim": 256, "version": 99})
    with pytest.raises(ValueError, match="dim"):
        ef.validate_config_update({"dim": 256}, {"dim": 512})
    with pytest.raises(ValueError, match="dim"):
        HashingEmbeddingFunction(dim=4)


def test_features_tokenise_package_names_versions_and_cves() -> None:
    feats = {name for name, _ in features("acme-web 1:2.36-9+deb12u7 fixes CVE-2024-3094")}
    assert {"w:acme-web", "p:acme", "p:web"} <= feats
    assert {"w:1:2.36-9+deb12u7", "v:1:2"} <= feats
    assert {"w:cve-2024-3094", "p:cve", "p:2024", "p:3094"} <= feats
    assert "b:acme-web|1:2.36-9+deb12u7" in feats
    assert {"c:^ac", "c:eb$"} <= feats
    assert "w:fixes" in feats
    assert "p:9" not in feats  # short numeric parts are noise
    assert not {name for name in feats if name.endswith((":the", ":a"))}
    assert "v:3.0" in {name for name, _ in features("openssl 3.0.15")}


def test_hashing_similarity_follows_shared_names() -> None:
    ef = HashingEmbeddingFunction()
    openssl, acme, query_openssl, query_acme, tzdata = ef(
        [
            "openssl 3.0.14 -> 3.0.15 on db-1: success",
            "acme-web 1.1.0 -> 1.2.0 on canary-1: rollback",
            "openssl",
            "acme-web",
            "tzdata 2024a -> 2024b on db-1: success",
        ]
    )
    assert _cosine(query_openssl, openssl) > _cosine(query_openssl, acme) + 0.3
    assert _cosine(query_openssl, openssl) > _cosine(query_openssl, tzdata) + 0.3
    assert _cosine(query_acme, acme) > _cosine(query_acme, openssl) + 0.3


def test_embedding_function_from_settings() -> None:
    assert isinstance(embedding_function(Settings()), HashingEmbeddingFunction)
    with pytest.raises(ConfigError, match="embeddings_model"):
        embedding_function(Settings(memory=MemorySettings(embedding="openai")))
    ef = embedding_function(
        Settings(
            memory=MemorySettings(embedding="openai"),
            llm=LLMSettings(
                base_url="http://127.0.0.1:9/v1",
                embeddings_model="nomic-embed-text",
                api_key_env="LOCAL_KEY",
            ),
        )
    )
    assert isinstance(ef, OpenAICompatEmbeddingFunction)
    config = ef.get_config()
    assert config["base_url"] == "http://127.0.0.1:9/v1"
    assert config["model"] == "nomic-embed-text"
    assert config["api_key_env"] == "LOCAL_KEY"
    assert OpenAICompatEmbeddingFunction.build_from_config(config).get_config() == config


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    """A fake ``POST /v1/embeddings``: vector = [len(text), 1, 0]."""

    seen: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.headers.get("Authorization", ""), body))
        payload = {
            "object": "list",
            "model": body["model"],
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 0.0]}
                for i, text in enumerate(body["input"])
            ],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def embeddings_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _EmbeddingsHandler.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_compatible_embedding_calls_the_endpoint(
    embeddings_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOCAL_KEY", raising=False)
    ef = OpenAICompatEmbeddingFunction(
        base_url=embeddings_server, model="tiny", api_key_env="LOCAL_KEY", max_retries=0
    )
    vectors = ef(["abc", "abcdef"])
    assert [len(v) for v in vectors] == [3, 3]
    assert vectors[0][0] < vectors[1][0]
    auth, body = _EmbeddingsHandler.seen[-1]
    assert auth == "Bearer local"  # a dummy key when the variable is unset
    assert body["model"] == "tiny"
    assert body["input"] == ["abc", "abcdef"]

    monkeypatch.setenv("LOCAL_KEY", "sk-test")
    OpenAICompatEmbeddingFunction(
        base_url=embeddings_server, model="tiny", api_key_env="LOCAL_KEY", max_retries=0
    )(["x"])
    assert _EmbeddingsHandler.seen[-1][0] == "Bearer sk-test"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_openai_compatible_embedding_unreachable_is_retryable() -> None:
    ef = OpenAICompatEmbeddingFunction(
        base_url=f"http://127.0.0.1:{_closed_port()}/v1", model="tiny", max_retries=0
    )
    with pytest.raises(VectorMemoryUnavailable, match="unreachable") as info:
        ef(["x"])
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value, PatchpilotError)


# --------------------------------------------------------------------------- records


def test_outcome_document_and_metadata() -> None:
    outcome = _rollback()
    assert outcome.document == (
        "acme-web 1.1.0 -> 1.2.0 on canary-1 (web, staging, canary; criticality 2): "
        "rollback — health check failed: HTTP 503"
    )
    assert outcome.memory_id == "outcome:r1:canary-1:acme-web:1.2.0"
    bare = OutcomeMemory(run_id="r1", host="h", package="p", to_version="2", status="success")
    assert bare.document == "p -> 2 on h: success"
    meta = bare.metadata()
    assert None not in meta.values()
    assert {"error", "from_version", "host_profile"}.isdisjoint(meta)
    assert isinstance(meta["at_ts"], float)
    assert isinstance(meta["at"], str)
    assert datetime.fromisoformat(meta["at"]).tzinfo is not None


def test_records_validate_their_fields() -> None:
    with pytest.raises(ValidationError):
        _rollback(status="exploded")
    with pytest.raises(ValidationError):
        _rollback(host=" ")
    with pytest.raises(ValidationError):
        _rollback(at=datetime(2025, 1, 1))  # naive
    with pytest.raises(ValidationError):
        _rollback(surprise="field")
    with pytest.raises(ValidationError):
        DecisionMemory(run_id="r1", kind="Not A Kind", subject="openssl", text="x")
    decision = DecisionMemory(run_id="r1", kind="deferral", subject="openssl", text="wait")
    assert decision.memory_id == "decision:r1:deferral:openssl"
    assert decision.metadata()["kind"] == "deferral"
    assert decision.document == "deferral for openssl: wait"
    incident = IncidentMemory(run_id="r1", host="h", package="p", summary="disk full")
    assert incident.memory_id == "incident:r1:h:p:*"
    with pytest.raises(ValidationError):
        incident.model_copy().__setattr__("summary", "changed")


# --------------------------------------------------------------------------- the store


def test_outcome_written_here_is_recalled_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "memory"
    with VectorMemory(path) as memory:
        written = memory.remember_outcome(_rollback())
        memory.remember_incident(_incident_503())
        for outcome in _successes():
            memory.remember_outcome(outcome)

    # Reopen through our API, with no embedding function passed: the default one matches.
    recalled = _run_python(
        "import json\n"
        "from patchpilot.tools.memory import VectorMemory\n"
        f"with VectorMemory({str(path)!r}) as m:\n"
        "    items = m.recall('acme-web rollback', kinds=('outcomes',), k=1)\n"
        "    print(json.dumps([i.model_dump() for i in items] + [m.count()]))\n"
    )
    [item, count] = recalled
    assert count == 4
    assert item["id"] == written
    assert item["kind"] == "outcomes"
    assert item["metadata"]["status"] == "rollback"
    assert item["metadata"]["error"] == "health check failed: HTTP 503"

    # Raw Chroma, no embedding function passed: it rebuilds ours from the persisted config,
    # provided our module was imported (it registers the name).
    raw = _run_python(
        "import json, chromadb\n"
        "from chromadb.config import Settings\n"
        "from patchpilot.tools.memory import embeddings\n"
        f"c = chromadb.PersistentClient(path={str(path)!r}, "
        "settings=Settings(anonymized_telemetry=False))\n"
        "col = c.get_collection('outcomes')\n"
        "r = col.query(query_texts=['acme-web 503'], n_results=1)\n"
        "ef = col.configuration_json['embedding_function']\n"
        "[v] = embeddings.HashingEmbeddingFunction()(['acme-web 1.2.0: HTTP 503'])\n"
        "print(json.dumps([r['ids'][0][0], ef['name'], ef['config'], [float(x) for x in v]]))\n"
    )
    assert raw[:3] == [written, HASHING_NAME, {"dim": 512, "version": 1}]
    # blake2b, not hash(): the same text embeds identically in every process.
    [here] = HashingEmbeddingFunction()(["acme-web 1.2.0: HTTP 503"])
    assert np.allclose(here, np.asarray(raw[3], dtype=np.float32))


def test_another_process_writes_and_this_one_reads(tmp_path: Path) -> None:
    path = tmp_path / "memory"
    written = _run_python(
        "import json\n"
        "from patchpilot.tools.memory import IncidentMemory, VectorMemory\n"
        f"with VectorMemory({str(path)!r}) as m:\n"
        "    i = IncidentMemory(run_id='r9', host='web-2', package='nginx', version='1.24.0',\n"
        "                       summary='worker processes crashed after reload')\n"
        "    print(json.dumps(m.remember_incident(i)))\n"
    )
    with VectorMemory(path) as memory:
        [item] = memory.recall("nginx crashed", k=1)
    assert item.id == written == "incident:r9:web-2:nginx:1.24.0"


def test_similar_incidents_rank_above_unrelated_ones(stocked: VectorMemory) -> None:
    items = stocked.recall("acme-web health check failed after upgrade", k=5)
    ids = [item.id for item in items]
    assert set(ids[:2]) == {
        "incident:r1:canary-1:acme-web:1.2.0",
        "outcome:r1:canary-1:acme-web:1.2.0",
    }
    assert [item.distance for item in items] == sorted(item.distance for item in items)
    unrelated = {item.id: item.distance for item in items if "acme-web" not in item.id}
    assert unrelated
    assert max(item.distance for item in items[:2]) < min(unrelated.values())

    [top] = stocked.recall("openssl", kinds=("outcomes",), k=1)
    assert top.id == "outcome:r1:db-1:openssl:3.0.15"
    [top] = stocked.recall("CVE-2024-5535", k=1)
    assert top.kind == "decisions"


def test_remember_is_an_idempotent_upsert(memory: VectorMemory) -> None:
    first = memory.remember_outcome(_rollback())
    again = memory.remember_outcome(_rollback())
    assert first == again == "outcome:r1:canary-1:acme-web:1.2.0"
    assert memory.count("outcomes") == 1

    # A resumed run re-records the outcome without an error: the old key must not linger
    # (Chroma's upsert would otherwise merge the old metadata in).
    memory.remember_outcome(_rollback(status="success", error=None, host_profile=None))
    assert memory.count() == 1
    stored = memory.get(first)
    assert stored is not None
    assert stored.metadata["status"] == "success"
    assert "error" not in stored.metadata
    assert "host_profile" not in stored.metadata
    assert stored.text == "acme-web 1.1.0 -> 1.2.0 on canary-1: success"

    assert memory.remember_outcome(_rollback(to_version="1.2.1")) != first
    assert memory.remember_outcome(_rollback(run_id="r2")) != first
    assert memory.count("outcomes") == 3
    assert memory.get("outcome:nope") is None
    with pytest.raises(VectorMemoryError, match="not a memory id"):
        memory.get("something-else")


def test_remember_many_writes_in_batches(memory: VectorMemory) -> None:
    records = [
        _rollback(),
        _incident_503(),
        *_successes(),
        _rollback(status="success", error=None),  # same id as the first: the last one wins
    ]
    ids = memory.remember_many(records)
    assert ids == [record.memory_id for record in records]
    assert ids[0] == ids[-1]
    assert memory.count() == 4
    assert memory.count("incidents") == 1
    stored = memory.get(ids[0])
    assert stored is not None
    assert stored.metadata["status"] == "success"
    assert memory.remember_many([]) == []


def test_recall_filters_and_limits(stocked: VectorMemory) -> None:
    query = "upgrade on db-1 or canary-1"
    rollbacks = stocked.recall(query, where={"status": "rollback"})
    assert [item.id for item in rollbacks] == ["outcome:r1:canary-1:acme-web:1.2.0"]

    both = stocked.recall(query, where={"host": "db-1", "status": "success"})
    assert {item.id for item in both} == {
        "outcome:r1:db-1:openssl:3.0.15",
        "outcome:r1:db-1:tzdata:2024b",
    }
    either = stocked.recall(
        query, kinds=("outcomes",), where={"$or": [{"package": "tzdata"}, {"package": "acme-web"}]}
    )
    assert {item.metadata["package"] for item in either} == {"tzdata", "acme-web"}
    incidents_only = stocked.recall(query, kinds=("incidents",), where={"package": "acme-web"})
    assert [item.kind for item in incidents_only] == ["incidents"]
    recent = stocked.recall(query, where={"at_ts": {"$gte": T0.timestamp()}})
    assert len(recent) == 5

    assert len(stocked.recall(query, k=2)) == 2
    assert len(stocked.recall(query)) == stocked.top_k == 5
    assert stocked.recall("   ") == []
    with pytest.raises(VectorMemoryError, match="k >= 1"):
        stocked.recall(query, k=0)
    with pytest.raises(VectorMemoryError, match="unknown memory kind"):
        stocked.recall(query, kinds=("lessons",))  # type: ignore[arg-type]
    with pytest.raises(VectorMemoryError, match="recalling"):
        stocked.recall(query, where={"status": {"$bogus": 1}})


def test_outcomes_for_filters_by_package_and_version(memory: VectorMemory) -> None:
    memory.remember_outcome(_rollback())
    memory.remember_outcome(_rollback(host="web-1", status="success", error=None, at=T0))
    newest = memory.remember_outcome(
        _rollback(
            run_id="r2", to_version="1.2.1", status="success", error=None, at=T0 + timedelta(1)
        )
    )
    for outcome in _successes():
        memory.remember_outcome(outcome)

    all_acme = memory.outcomes_for("acme-web")
    assert len(all_acme) == 3
    assert all_acme[0].id == newest
    assert {item.metadata["package"] for item in all_acme} == {"acme-web"}
    assert all(item.distance == 0.0 for item in all_acme)

    v120 = memory.outcomes_for("acme-web", "1.2.0")
    assert {item.metadata["host"] for item in v120} == {"canary-1", "web-1"}
    assert memory.outcomes_for("acme-web", "9.9") == []
    assert memory.outcomes_for("nothing") == []


def test_open_from_settings_uses_home_memory(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", memory=MemorySettings(top_k=2))
    with VectorMemory.open(settings) as memory:
        memory.remember_incident(_incident_503())
        assert memory.top_k == 2
        assert memory.location == str(settings.memory_dir)
        assert "patchpilot-hashing" in repr(memory)
    assert settings.memory_dir.is_dir()


def test_default_configuration_never_touches_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with VectorMemory.open(Settings(home=tmp_path)) as memory:
        memory.remember_outcome(_rollback())
        assert memory.recall("acme-web")
        assert memory.outcomes_for("acme-web")


def test_reopening_with_another_embedding_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "memory"
    with VectorMemory(path) as memory:
        memory.remember_outcome(_rollback())
    with pytest.raises(EmbeddingMismatchError, match="dim 512 != 256"):
        VectorMemory(path, embedding=HashingEmbeddingFunction(dim=256))
    other = OpenAICompatEmbeddingFunction(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(EmbeddingMismatchError, match="fresh memory") as info:
        VectorMemory(path, embedding=other)
    assert isinstance(info.value, ValueError)
    # Nothing was damaged: the original embedding still opens it.
    with VectorMemory(path) as memory:
        assert memory.count() == 1


def test_open_errors_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        VectorMemory()
    with pytest.raises(ConfigError, match="exactly one"):
        VectorMemory(tmp_path, url="http://127.0.0.1:8000")
    with pytest.raises(ConfigError, match="top_k"):
        VectorMemory(tmp_path / "m", top_k=0)
    with pytest.raises(ConfigError, match=r"http\(s\)://host"):
        VectorMemory(url="ftp://chroma.example")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(VectorMemoryError, match=re.escape(str(blocker))):
        VectorMemory(blocker / "memory")

    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(VectorMemoryUnavailable, match=r"start it, or unset memory\.url") as info:
        VectorMemory(url=url)
    assert info.value.location == url
    assert isinstance(info.value, ConnectionError)
