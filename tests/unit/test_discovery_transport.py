"""Discovery opens hosts through the transport factory it is given (the graphs pass theirs)."""

from __future__ import annotations

from pathlib import Path

from patchpilot.agents.discovery import discover
from patchpilot.core.errors import HostConnectError
from patchpilot.core.models import Host
from patchpilot.core.settings import Settings
from patchpilot.tools.transport import Transport


def test_discover_uses_the_given_transport_factory(tmp_path: Path) -> None:
    opened: list[str] = []

    def factory(host: Host, settings: Settings) -> Transport:
        opened.append(host.name)
        raise HostConnectError(host.name, "scripted: no route")

    hosts = [Host(name="a", address="127.0.0.1"), Host(name="b", address="127.0.0.1")]
    outcomes = discover(
        hosts, Settings(home=tmp_path), pending=True, refresh=True, transport_factory=factory
    )
    assert sorted(opened) == ["a", "b"]
    assert [o.host for o in outcomes] == ["a", "b"]
    assert all(not o.ok and "scripted: no route" in (o.error or "") for o in outcomes)
