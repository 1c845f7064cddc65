"""``GET /api/v1/compliance`` through FastAPI's TestClient on a real SQLite store: the same
``patchpilot.compliance/v1`` document as ``patchpilot compliance --format json``, its filters,
hosts of the inventory never scanned, and who may read it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from patchpilot.api import create_app
from patchpilot.app import compliance, users
from patchpilot.app.documents import validate_compliance
from patchpilot.core.models import utcnow
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from tests.unit.test_compliance_history import fill_fleet

REPO = Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True)
        self.settings: Settings = load_settings(None, home=str(home))
        self.policy = REPO / "configs" / "policy.yaml"
        self.inventory = home / "inventory.yaml"
        names = ("web-1", "canary-1", "db-1", "spare-1")
        self.inventory.write_text(
            yaml.safe_dump({"hosts": {n: {"address": "127.0.0.1"} for n in names}})
        )
        self.store = Store(self.settings.store_path)
        self.runs = fill_fleet(self.store, utcnow())
        self.token = users.add_user(self.store, "vera", "viewer", actor="admin")
        app = create_app(
            self.settings, inventory=self.inventory, policy=self.policy, store=self.store
        )
        self.client = TestClient(app, raise_server_exceptions=False)

    def get(self, **params: Any) -> dict[str, Any]:
        response = self.client.get(
            "/api/v1/compliance",
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        validate_compliance(document)
        return document


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    s = Service(tmp_path / "home")
    try:
        yield s
    finally:
        s.client.close()
        s.store.close()


def _stable(document: dict[str, Any]) -> dict[str, Any]:
    """The document without what moves with the clock between two reads."""
    drop = {"generated_at", "items", "due_soon", "survival"}
    return {k: v for k, v in document.items() if k not in drop} | {
        "items": [{k: v for k, v in i.items() if k != "days_open"} for i in document["items"]]
    }


def test_the_document_equals_the_cli_s(service: Service) -> None:
    served = service.get()
    direct = compliance.compliance_document(
        service.store,
        load_policy(service.policy),
        inventory_hosts=["web-1", "canary-1", "db-1", "spare-1"],
    )
    assert _stable(served) == _stable(direct)
    states = {h["name"]: h["state"] for h in served["hosts"]}
    assert states == {
        "canary-1": "compliant",
        "db-1": "non_compliant",
        "spare-1": "unknown",
        "web-1": "overdue",
    }
    assert all(h["host"] == h["name"] for h in served["hosts"])  # the field older clients read
    [canary] = [i for i in served["items"] if i["host"] == "canary-1"]
    assert canary["fixed_by"] == service.runs["patch"]
    assert served["sla"]["mttr_days"] == 2.0


def test_filters_and_access(service: Service) -> None:
    only = service.get(host="web-1")
    assert [h["name"] for h in only["hosts"]] == ["web-1"]
    overdue = service.get(overdue="true")
    assert [i["host"] for i in overdue["items"]] == ["web-1"]
    assert service.get(overdue_only="true")["items"] == overdue["items"]
    assert sorted(i["host"] for i in service.get(due_within=5)["items"]) == ["db-1", "web-1"]
    bad = service.client.get(
        "/api/v1/compliance",
        params={"due_within": -1},
        headers={"Authorization": f"Bearer {service.token}"},
    )
    assert bad.status_code == 422
    assert service.client.get("/api/v1/compliance").status_code == 401
