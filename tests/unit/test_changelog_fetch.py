"""patchpilot.tools.changelog.fetch: the remote command, error mapping, cache, locking,
cves_for_many.

Remote results come from ``tests/fixtures/changelog/results/*.json``: the real outcome of the
fetch command on a Debian 12 machine (success, a symlinked doc directory, a superseded version,
unknown version/package, connection refused, DNS failure and HTTP 404 through a local proxy).
A small recording :class:`FakeTransport` replays them; the script itself is also run for real
against ``.deb`` files built here with ``dpkg-deb`` and a stand-in ``apt-get`` (no network).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.errors import (
    CommandTimeoutError,
    HostConnectError,
    InvalidVersionError,
    UnsafeArgumentError,
)
from patchpilot.core.models import CommandResult, Ecosystem, InstalledPackage, PendingUpdate
from patchpilot.tools.changelog import (
    ChangelogError,
    ChangelogFetcher,
    ChangelogFetchError,
    ChangelogNotShipped,
    ChangelogParseError,
    ChangelogUnavailable,
    DebianChangelogFact,
    classify_failure,
    parse_changelog,
)
from patchpilot.tools.changelog import fetch as fetch_module
from patchpilot.tools.changelog.fetch import FETCH_SCRIPT
from patchpilot.tools.transport.local import SAFE_PATH, LocalTransport
from tests.fakes import ScriptedTransport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "changelog"
RESULTS = FIXTURES / "results"


def recorded(case: str, host: str = "web-1") -> CommandResult:
    """A recorded fetch result, as the transport would return it."""
    doc = json.loads((RESULTS / f"{case}.json").read_text())
    fact = DebianChangelogFact(doc["package"], doc["version"])
    return CommandResult(
        host=host,
        argv=tuple(fact.command()),
        exit_code=doc["exit_code"],
        stdout=doc["stdout"],
        stderr=doc["stderr"],
    )


def ok_result(text: str, member: str = "/usr/share/doc/x/changelog.Debian.gz") -> CommandResult:
    """A successful fetch result carrying ``text`` (gzip + base64, as the script prints it)."""
    payload = base64.encodebytes(gzip.compress(text.encode())).decode()
    return CommandResult(
        host="h", argv=("sh",), exit_code=0, stdout=f"{member}\n{payload}", stderr=""
    )


def changelog_text(source: str, *entries: tuple[str, tuple[str, ...]]) -> str:
    """A well-formed changelog with one block per ``(version, cves)``, newest first."""
    blocks = []
    for version, cves in entries:
        lines = "".join(f"  * Fix {cve}.\n" for cve in cves) or "  * No CVE.\n"
        blocks.append(
            f"{source} ({version}) bookworm-security; urgency=medium\n\n{lines}\n"
            " -- A Maintainer <a@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n"
        )
    return "\n".join(blocks)


class FakeTransport(ScriptedTransport):
    """A non-root scripted host; :attr:`specs` are the ``PKG=VERSION`` specs it was asked for."""

    def __init__(
        self,
        respond: Callable[[tuple[str, ...]], CommandResult],
        name: str = "web-1",
        delay: float = 0.0,
    ) -> None:
        super().__init__(respond, name, root=False, delay=delay)

    @property
    def specs(self) -> list[str]:
        return [argv[4] for argv in self.calls]


def by_spec(table: dict[str, CommandResult | BaseException]) -> Callable[[tuple[str, ...]], Any]:
    def respond(argv: tuple[str, ...]) -> CommandResult:
        answer = table[argv[4]]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return respond


# --------------------------------------------------------------------------- the command


def test_command_passes_the_spec_as_a_positional_parameter() -> None:
    argv = DebianChangelogFact("libssl3", "3.0.22-1~deb12u2").command()
    assert argv == ["sh", "-c", FETCH_SCRIPT, "sh", "libssl3=3.0.22-1~deb12u2"]
    other = DebianChangelogFact("openssh-client", "1:9.2p1-2+deb12u10").command()
    assert other[2] is FETCH_SCRIPT  # the script never depends on the input
    assert "libssl3" not in FETCH_SCRIPT


@pytest.mark.parametrize(
    ("package", "version"),
    [
        ("libssl3; reboot", "1.0-1"),
        ("$(reboot)", "1.0-1"),
        ("-oAPT::Foo=1", "1.0-1"),
        ("libssl3", "1.0-1; reboot"),
        ("libssl3", "$(id)"),
        ("libssl3", "-1"),
        ("libssl3", "1.0 -1"),
        ("libssl3", "not-a-version"),
        ("Libssl3", "1.0-1"),
        ("libssl3", ""),
    ],
)
def test_unsafe_specs_are_refused_before_anything_runs(package: str, version: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        DebianChangelogFact(package, version)


def test_script_is_valid_posix_sh() -> None:
    sh = shutil.which("sh")
    assert sh is not None
    subprocess.run([sh, "-n", "-c", FETCH_SCRIPT], check=True)


# --------------------------------------------------------------------------- recorded results


def test_recorded_success_parses() -> None:
    fact = DebianChangelogFact("libexpat1", "2.5.0-1+deb12u5")
    fetched = fact.parse(recorded("ok_libexpat1"))
    assert fetched.member == "/usr/share/doc/libexpat1/changelog.Debian.gz"
    entries = parse_changelog(fetched.text)
    assert entries[0].version == "2.5.0-1+deb12u5"
    assert entries[3].version == "2.5.0-1+deb12u2"
    assert entries[3].cves == ("CVE-2023-52425", "CVE-2024-50602", "CVE-2024-8176")
    assert entries[4].version == "2.5.0-1+deb12u1"


def test_recorded_native_package_uses_changelog_gz() -> None:
    fetched = DebianChangelogFact("apt", "2.6.2").parse(recorded("ok_native_apt"))
    assert fetched.member == "/usr/share/doc/apt/changelog.gz"
    assert parse_changelog(fetched.text)[0].version == "2.6.2"


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("not_shipped_symlinked_doc", ChangelogNotShipped, "symlink"),
        ("superseded_version", ChangelogUnavailable, "apt-get update"),
        ("version_not_found", ChangelogUnavailable, "does not know this version"),
        ("unknown_package", ChangelogUnavailable, "no such package"),
        ("http_404", ChangelogUnavailable, "stale"),
        ("connection_refused", ChangelogFetchError, "network"),
        ("dns_failure", ChangelogFetchError, "network"),
    ],
)
def test_recorded_failures_map_to_actionable_errors(
    case: str, error: type[ChangelogError], words: str
) -> None:
    doc = json.loads((RESULTS / f"{case}.json").read_text())
    fact = DebianChangelogFact(doc["package"], doc["version"])
    with pytest.raises(error) as info:
        fact.parse(recorded(case))
    assert type(info.value) is error
    message = str(info.value)
    assert words in message
    assert message.startswith(f"web-1: {doc['package']}={doc['version']}: ")
    assert info.value.host == "web-1"


def test_transient_and_permanent_errors_use_the_right_builtins() -> None:
    assert issubclass(ChangelogFetchError, ConnectionError)
    assert issubclass(ChangelogUnavailable, LookupError)
    assert issubclass(ChangelogParseError, ValueError)


@pytest.mark.parametrize(
    ("exit_code", "stderr", "error", "words"),
    [
        (127, "sh: 1: apt-get: not found\n", ChangelogError, "Debian-family"),
        (5, "tar: This does not look like a tar archive\n", ChangelogError, "unpack"),
        (6, "patchpilot: too large\n", ChangelogError, "exceeds"),
        (100, "E: Failed to fetch http://x/y.deb  Hash Sum mismatch\n", ChangelogFetchError, ""),
        (100, "E: Something new\n", ChangelogError, "Something new"),
        (2, "", ChangelogError, "apt-get download libfoo=1.0-1"),
    ],
)
def test_classify_other_failures(
    exit_code: int, stderr: str, error: type[ChangelogError], words: str
) -> None:
    result = CommandResult(host="h", argv=("sh",), exit_code=exit_code, stdout="", stderr=stderr)
    exc = classify_failure(result, package="libfoo", version="1.0-1")
    assert type(exc) is error
    assert words in str(exc)


def test_malformed_output_is_refused() -> None:
    fact = DebianChangelogFact("libfoo", "1.0-1")
    good = ok_result(changelog_text("foo", ("1.0-1", ())))
    with pytest.raises(ChangelogParseError, match="truncated"):
        fact.parse(good.model_copy(update={"truncated": True}))
    with pytest.raises(ChangelogParseError, match="first output line"):
        fact.parse(good.model_copy(update={"stdout": "garbage\nAAAA"}))
    with pytest.raises(ChangelogParseError, match="base64"):
        fact.parse(good.model_copy(update={"stdout": "/usr/share/doc/x/changelog.gz\n!!!"}))
    not_gzip = base64.b64encode(b"plain text").decode()
    with pytest.raises(ChangelogParseError, match="gzip"):
        fact.parse(good.model_copy(update={"stdout": f"/usr/share/doc/x/changelog.gz\n{not_gzip}"}))
    cut = base64.b64encode(gzip.compress(b"x" * 1000)[:-12]).decode()
    with pytest.raises(ChangelogParseError, match="truncated"):
        fact.parse(good.model_copy(update={"stdout": f"/usr/share/doc/x/changelog.gz\n{cut}"}))


def test_gzip_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "MAX_CHANGELOG_TEXT_BYTES", 10_000)
    fact = DebianChangelogFact("libfoo", "1.0-1")
    with pytest.raises(ChangelogError, match="decompresses to more than"):
        fact.parse(ok_result("x" * 20_000))


# --------------------------------------------------------------------------- the script, for real


def _build_deb(tmp: Path, name: str, files: dict[str, bytes], links: dict[str, str]) -> Path:
    """Build ``name_1.0-1_all.deb`` holding ``files`` and ``links`` (paths relative to /)."""
    root = tmp / f"root-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: T <t@example.org>\nDescription: test\n"
    )
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for path, dest in links.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(dest)
    deb = tmp / "debs" / f"{name}_1.0-1_all.deb"
    deb.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@pytest.fixture
def fake_apt(tmp_path: Path) -> Callable[..., CommandResult]:
    """Run the real script with a stand-in apt-get that copies a prepared .deb into cwd."""
    if not shutil.which("dpkg-deb") or not shutil.which("tar"):
        pytest.skip("dpkg-deb and tar are needed to run the fetch script")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        "# apt-get download -q NAME=VERSION: copy $DEBS/NAME_*.deb here\n"
        "spec=$3; name=${spec%%=*}\n"
        'for f in "$DEBS/${name}"_*.deb; do [ -f "$f" ] && cp "$f" . && exit 0; done\n'
        'echo "E: Unable to locate package $name" >&2; exit 100\n'
    )
    apt.chmod(0o755)

    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def run(name: str, version: str = "1.0-1") -> CommandResult:
        fact = DebianChangelogFact(name, version)
        env = {
            "PATH": f"{bin_dir}:{SAFE_PATH}",
            "DEBS": str(tmp_path / "debs"),
            "LC_ALL": "C",
            "TMPDIR": str(scratch),  # mktemp -d works here; the script must leave it empty
        }
        with LocalTransport("fake-apt") as transport:
            result = transport.run(fact.command(), env=env, timeout=60)
        assert list(scratch.iterdir()) == []
        return result

    return run


def test_script_prefers_the_packages_own_changelog(
    tmp_path: Path, fake_apt: Callable[..., CommandResult]
) -> None:
    own = gzip.compress(changelog_text("foo", ("1.0-1", ("CVE-2024-1111",))).encode())
    other = gzip.compress(changelog_text("bar", ("9.0-1", ())).encode())
    _build_deb(
        tmp_path,
        "foo",
        {
            "usr/share/doc/aaa-other/changelog.Debian.gz": other,
            "usr/share/doc/foo/changelog.Debian.gz": own,
            "usr/share/doc/foo/changelog.gz": b"upstream",
        },
        {},
    )
    result = fake_apt("foo")
    fetched = DebianChangelogFact("foo", "1.0-1").parse(result)
    assert fetched.member == "/usr/share/doc/foo/changelog.Debian.gz"
    assert parse_changelog(fetched.text)[0].cves == ("CVE-2024-1111",)


def test_script_symlinked_doc_dir_exits_3(
    tmp_path: Path, fake_apt: Callable[..., CommandResult]
) -> None:
    _build_deb(
        tmp_path, "foo-dev", {"usr/lib/libfoo.so.1": b"\x7fELF"}, {"usr/share/doc/foo-dev": "foo"}
    )
    result = fake_apt("foo-dev")
    assert result.exit_code == 3
    with pytest.raises(ChangelogNotShipped):
        DebianChangelogFact("foo-dev", "1.0-1").parse(result)


def test_script_never_follows_a_symlinked_changelog(
    tmp_path: Path, fake_apt: Callable[..., CommandResult]
) -> None:
    # Would resolve to the machine's own installed file if followed.
    _build_deb(
        tmp_path,
        "foo",
        {"usr/share/doc/foo/copyright": b"c"},
        {"usr/share/doc/foo/changelog.Debian.gz": "/usr/share/doc/libc6/changelog.Debian.gz"},
    )
    assert fake_apt("foo").exit_code == 3


def test_script_falls_back_to_a_native_changelog(
    tmp_path: Path, fake_apt: Callable[..., CommandResult]
) -> None:
    native = gzip.compress(changelog_text("foo", ("1.0", ("CVE-2024-2222",))).encode())
    _build_deb(tmp_path, "foo", {"usr/share/doc/foo/changelog.gz": native}, {})
    fetched = DebianChangelogFact("foo", "1.0-1").parse(fake_apt("foo"))
    assert fetched.member == "/usr/share/doc/foo/changelog.gz"


def test_script_refuses_oversized_changelogs(
    tmp_path: Path, fake_apt: Callable[..., CommandResult]
) -> None:
    _build_deb(
        tmp_path,
        "foo",
        {"usr/share/doc/foo/changelog.Debian.gz": os.urandom(fetch_module.MAX_CHANGELOG_BYTES + 1)},
        {},
    )
    result = fake_apt("foo")
    assert result.exit_code == 6
    with pytest.raises(ChangelogError, match="exceeds"):
        DebianChangelogFact("foo", "1.0-1").parse(result)


def test_script_reports_apt_errors_and_leaves_no_temp_dir(
    fake_apt: Callable[..., CommandResult],
) -> None:
    result = fake_apt("missing")  # the fixture asserts the temporary folder is gone
    assert result.exit_code == 100
    with pytest.raises(ChangelogUnavailable):
        DebianChangelogFact("missing", "1.0-1").parse(result)


# --------------------------------------------------------------------------- cache


def _fetcher(tmp_path: Path) -> ChangelogFetcher:
    return ChangelogFetcher(tmp_path / "cache")


EXPAT_ARGS = {
    "binary": "libexpat1",
    "candidate_version": "2.5.0-1+deb12u5",
    "source": "expat",
    "installed_source_version": "2.5.0-1+deb12u1",
}


def test_second_call_makes_no_remote_command(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    first_host = FakeTransport(lambda argv: recorded("ok_libexpat1"))
    first = fetcher.cves_for(first_host, **EXPAT_ARGS)
    assert not first.from_cache
    assert first.source == "expat"
    assert first.source_version == "2.5.0-1+deb12u5"
    assert first.entries_considered == 4  # deb12u2 .. deb12u5
    assert "CVE-2024-50602" in first.cves
    assert first_host.specs == ["libexpat1=2.5.0-1+deb12u5"]
    assert first_host.envs == [{"LC_ALL": "C"}]

    second_host = FakeTransport(lambda argv: pytest.fail("no remote command expected"), "web-2")
    second = fetcher.cves_for(second_host, **EXPAT_ARGS)
    assert second.from_cache
    assert second.cves == first.cves
    assert second_host.calls == []

    # A new fetcher (another process) reads the same files.
    again = _fetcher(tmp_path).cves_for(second_host, **EXPAT_ARGS)
    assert again.from_cache
    assert again.cves == first.cves

    # Another installed version reuses the cached entries with its own range.
    older = fetcher.cves_for(
        second_host, **{**EXPAT_ARGS, "installed_source_version": "2.5.0-1+deb12u4"}
    )
    assert older.from_cache
    assert older.entries_considered == 1
    assert set(older.cves) < set(first.cves)


def test_cache_files_layout_and_names(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    text = changelog_text("openssh", ("1:9.2p1-2+deb12u10", ("CVE-2026-35386",)), ("1:9.2p1-2", ()))
    host = FakeTransport(lambda argv: ok_result(text))
    result = fetcher.cves_for(
        host,
        binary="openssh-client",
        candidate_version="1:9.2p1-2+deb12u10",
        source="openssh",
        installed_source_version="1:9.2p1-2",
    )
    assert result.cves == ("CVE-2026-35386",)
    folder = tmp_path / "cache" / "changelogs" / "openssh"
    assert sorted(p.name for p in folder.iterdir()) == ["1%3A9.2p1-2+deb12u10.json", "index.json"]
    index = json.loads((folder / "index.json").read_text())
    assert index["binaries"] == {"openssh-client=1:9.2p1-2+deb12u10": "1:9.2p1-2+deb12u10"}
    cached = json.loads((folder / "1%3A9.2p1-2+deb12u10.json").read_text())
    assert cached["source_version"] == "1:9.2p1-2+deb12u10"
    assert [e["version"] for e in cached["entries"]] == ["1:9.2p1-2+deb12u10", "1:9.2p1-2"]

    # Known candidate source version: served from <source>/<version>.json, another binary too.
    other = FakeTransport(lambda argv: pytest.fail("no remote command expected"))
    hit = fetcher.cves_for(
        other,
        binary="openssh-server",
        candidate_version="1:9.2p1-2+deb12u10",
        source="openssh",
        installed_source_version="1:9.2p1-2",
        candidate_source_version="1:9.2p1-2+deb12u10",
    )
    assert hit.from_cache
    assert hit.cves == ("CVE-2026-35386",)


def test_binnmu_candidate_maps_to_its_source_version(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    text = changelog_text("bash", ("5.2.15-2", ()), ("5.2.15-1", ("CVE-2022-0001",)))
    host = FakeTransport(lambda argv: ok_result(text))
    result = fetcher.cves_for(
        host,
        binary="bash",
        candidate_version="5.2.15-2+b13",
        source="bash",
        installed_source_version="5.2.15-2",
    )
    assert result.source_version == "5.2.15-2"
    assert result.cves == ()
    assert result.entries_considered == 0


def test_other_binaries_of_a_cached_source_version_hit_the_cache(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    text = changelog_text("bash", ("5.2.15-2", ("CVE-2022-0002",)), ("5.2.15-1", ()))
    fetcher.cves_for(
        FakeTransport(lambda argv: ok_result(text)),
        binary="bash",
        candidate_version="5.2.15-2",
        source="bash",
        installed_source_version="5.2.15-1",
    )
    quiet = FakeTransport(lambda argv: pytest.fail("no remote command expected"))
    for binary, version in (("bash-static", "5.2.15-2"), ("bash", "5.2.15-2+b13")):
        hit = fetcher.cves_for(
            quiet,
            binary=binary,
            candidate_version=version,
            source="bash",
            installed_source_version="5.2.15-1",
        )
        assert hit.from_cache
        assert hit.cves == ("CVE-2022-0002",)
        assert hit.source_version == "5.2.15-2"


def test_corrupt_cache_file_is_refetched(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(lambda argv: recorded("ok_libexpat1"))
    fetcher.cves_for(host, **EXPAT_ARGS)
    path = tmp_path / "cache" / "changelogs" / "expat" / "2.5.0-1+deb12u5.json"
    path.write_text("{not json")
    again = fetcher.cves_for(host, **EXPAT_ARGS)
    assert not again.from_cache
    assert len(host.calls) == 2
    assert json.loads(path.read_text())["source"] == "expat"
    # A corrupt index is ignored (the binary version equals the cached source version).
    (tmp_path / "cache" / "changelogs" / "expat" / "index.json").write_text("[]")
    assert fetcher.cves_for(host, **EXPAT_ARGS).from_cache
    assert len(host.calls) == 2


def test_unwritable_cache_still_answers(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the folder should be")
    fetcher = ChangelogFetcher(blocker)
    host = FakeTransport(lambda argv: recorded("ok_libexpat1"))
    assert "CVE-2024-50602" in fetcher.cves_for(host, **EXPAT_ARGS).cves


def test_errors_propagate_from_cves_for_and_nothing_is_cached(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(lambda argv: recorded("superseded_version"))
    with pytest.raises(ChangelogUnavailable):
        fetcher.cves_for(
            host,
            binary="libssl3",
            candidate_version="3.0.19-1~deb12u2",
            source="openssl",
            installed_source_version="3.0.19-1~deb12u1",
        )
    assert not (tmp_path / "cache" / "changelogs" / "openssl").exists()


def test_bad_inputs_fail_before_any_command(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(lambda argv: pytest.fail("nothing may run"))
    with pytest.raises(UnsafeArgumentError):
        fetcher.cves_for(host, **{**EXPAT_ARGS, "binary": "x;reboot"})
    with pytest.raises(UnsafeArgumentError):
        fetcher.cves_for(host, **{**EXPAT_ARGS, "source": "../../etc"})
    with pytest.raises(InvalidVersionError):
        fetcher.cves_for(host, **{**EXPAT_ARGS, "installed_source_version": "oops"})
    assert host.calls == []


# --------------------------------------------------------------------------- locking


def test_two_hosts_needing_the_same_changelog_fetch_it_once(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host_a = FakeTransport(lambda argv: recorded("ok_libexpat1"), "web-1", delay=0.3)
    host_b = FakeTransport(lambda argv: recorded("ok_libexpat1"), "web-2", delay=0.3)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def work(host: FakeTransport) -> None:
        barrier.wait()
        results[host.name] = fetcher.cves_for(host, **EXPAT_ARGS)

    threads = [threading.Thread(target=work, args=(h,)) for h in (host_a, host_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(host_a.calls) + len(host_b.calls) == 1
    assert fetcher.remote_fetches == 1
    assert sorted(r.from_cache for r in results.values()) == [False, True]
    assert results["web-1"].cves == results["web-2"].cves


def test_different_changelogs_are_fetched_in_parallel(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    texts = {
        "aaa=1.0-2": ok_result(changelog_text("aaa", ("1.0-2", ("CVE-2024-0001",)))),
        "bbb=1.0-2": ok_result(changelog_text("bbb", ("1.0-2", ("CVE-2024-0002",)))),
    }
    both_inside = threading.Barrier(2, timeout=10)

    def respond(argv: tuple[str, ...]) -> CommandResult:
        both_inside.wait()  # breaks (and fails the test) if one global lock serialised them
        return texts[argv[4]]

    host = FakeTransport(respond)
    results: dict[str, Any] = {}

    def work(name: str) -> None:
        results[name] = fetcher.cves_for(
            host,
            binary=name,
            candidate_version="1.0-2",
            source=name,
            installed_source_version="1.0-1",
        )

    threads = [threading.Thread(target=work, args=(name,)) for name in ("aaa", "bbb")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(host.specs) == ["aaa=1.0-2", "bbb=1.0-2"]
    assert results["aaa"].cves == ("CVE-2024-0001",)
    assert results["bbb"].cves == ("CVE-2024-0002",)


# --------------------------------------------------------------------------- cves_for_many


def _pkg(
    name: str, version: str, source: str, source_version: str | None = None
) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        arch="amd64",
        source_name=source,
        source_version=source_version or version,
        ecosystem=Ecosystem.DEBIAN,
    )


def _update(name: str, installed: str | None, candidate: str) -> PendingUpdate:
    return PendingUpdate(
        name=name,
        arch="amd64",
        installed_version=installed,
        candidate_version=candidate,
        security=True,
    )


OPENSSL_TEXT = changelog_text(
    "openssl",
    ("3.0.22-1~deb12u2", ("CVE-2026-84782",)),
    ("3.0.22-1~deb12u1", ("CVE-2026-42767", "CVE-2026-54874")),
    ("3.0.19-1~deb12u2", ("CVE-2026-28387",)),
)


def test_many_fetches_one_changelog_per_source(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(
        by_spec(
            {
                "openssl=3.0.22-1~deb12u2": ok_result(OPENSSL_TEXT),
                "libexpat1=2.5.0-1+deb12u5": recorded("ok_libexpat1"),
            }
        )
    )
    updates = [
        _update("libssl3", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
        _update("libexpat1", "2.5.0-1+deb12u1", "2.5.0-1+deb12u5"),
        _update("openssl", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
        _update("libssl-dev", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
        _update("newpkg", None, "1.0-1"),
        _update("unknown-to-dpkg", "1.0-1", "1.0-2"),
    ]
    packages = [
        _pkg("libssl3", "3.0.19-1~deb12u2", "openssl"),
        _pkg("openssl", "3.0.19-1~deb12u2", "openssl"),
        _pkg("libssl-dev", "3.0.19-1~deb12u2", "openssl"),
        _pkg("libexpat1", "2.5.0-1+deb12u1", "expat"),
    ]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert warnings == []
    # The binary named like the source is asked first; one fetch per source.
    assert host.specs == ["openssl=3.0.22-1~deb12u2", "libexpat1=2.5.0-1+deb12u5"]
    assert [u.name for u in annotated] == [u.name for u in updates]
    want = ("CVE-2026-84782", "CVE-2026-42767", "CVE-2026-54874")
    for index in (0, 2, 3):
        assert annotated[index].cves == want
        assert annotated[index].source_name == "openssl"
        assert annotated[index].cves_from == "changelog"
    assert annotated[1].source_name == "expat"
    assert "CVE-2024-50602" in annotated[1].cves
    assert annotated[4] == updates[4]
    assert annotated[5] == updates[5]

    # Second host: everything from the cache.
    other = FakeTransport(lambda argv: pytest.fail("no remote command expected"), "web-2")
    again, warnings = fetcher.cves_for_many(other, updates, packages)
    assert warnings == []
    assert again == annotated


def test_many_tries_the_next_binary_when_a_deb_ships_no_changelog(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    text = changelog_text(
        "gnutls28", ("3.7.9-2+deb12u7", ("CVE-2026-1000",)), ("3.7.9-2+deb12u6", ())
    )
    host = FakeTransport(
        by_spec(
            {
                "libgnutlsxx30=3.7.9-2+deb12u7": recorded("not_shipped_symlinked_doc"),
                "libgnutls30=3.7.9-2+deb12u7": ok_result(text),
            }
        )
    )
    updates = [
        _update("libgnutlsxx30", "3.7.9-2+deb12u6", "3.7.9-2+deb12u7"),
        _update("libgnutls30", "3.7.9-2+deb12u6", "3.7.9-2+deb12u7"),
    ]
    packages = [
        _pkg("libgnutlsxx30", "3.7.9-2+deb12u6", "gnutls28"),
        _pkg("libgnutls30", "3.7.9-2+deb12u6", "gnutls28"),
    ]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert warnings == []
    assert host.specs == ["libgnutlsxx30=3.7.9-2+deb12u7", "libgnutls30=3.7.9-2+deb12u7"]
    assert [u.cves for u in annotated] == [("CVE-2026-1000",), ("CVE-2026-1000",)]


def test_many_reports_failures_per_source_and_never_raises(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(
        by_spec(
            {
                "openssl=3.0.22-1~deb12u2": recorded("superseded_version"),
                "libssl3=3.0.22-1~deb12u2": recorded("superseded_version"),
                "weird=1.0-2": RuntimeError("boom"),
                "libexpat1=2.5.0-1+deb12u5": recorded("ok_libexpat1"),
            }
        )
    )
    updates = [
        _update("libssl3", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
        _update("openssl", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
        _update("weird", "1.0-1", "1.0-2"),
        _update("libexpat1", "2.5.0-1+deb12u1", "2.5.0-1+deb12u5"),
    ]
    packages = [
        _pkg("libssl3", "3.0.19-1~deb12u2", "openssl"),
        _pkg("openssl", "3.0.19-1~deb12u2", "openssl"),
        _pkg("weird", "1.0-1", "weird"),
        _pkg("libexpat1", "2.5.0-1+deb12u1", "expat"),
    ]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert len(warnings) == 2
    assert warnings[0].startswith("openssl: ")
    assert "tried 2 binaries: libssl3, openssl" in warnings[0]
    assert warnings[1] == "weird: boom"
    assert annotated[:3] == updates[:3]
    assert annotated[3].cves_from == "changelog"


def test_many_stops_early_when_the_mirror_is_unreachable(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(lambda argv: recorded("connection_refused"))
    updates = [_update(f"pkg{i}", "1.0-1", "1.0-2") for i in range(4)]
    packages = [_pkg(f"pkg{i}", "1.0-1", f"src{i}") for i in range(4)]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert len(host.calls) == 1
    assert len(warnings) == 4
    assert all(w.startswith(f"src{i}: ") for i, w in enumerate(warnings))
    assert "cannot reach its mirror" in warnings[1]
    assert annotated == updates


@pytest.mark.parametrize(
    ("failure", "calls"),
    [
        (HostConnectError("web-1", "connection lost"), 1),
        (CommandTimeoutError("web-1", "did not finish within 120s"), 2),
    ],
)
def test_many_stops_after_host_failures(tmp_path: Path, failure: Exception, calls: int) -> None:
    fetcher = _fetcher(tmp_path)

    def respond(argv: tuple[str, ...]) -> CommandResult:
        raise failure

    host = FakeTransport(respond)
    updates = [_update(f"pkg{i}", "1.0-1", "1.0-2") for i in range(4)]
    packages = [_pkg(f"pkg{i}", "1.0-1", f"src{i}") for i in range(4)]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert len(host.calls) == calls
    assert len(warnings) == 4
    assert annotated == updates


def test_many_uses_each_binarys_own_installed_source_version(tmp_path: Path) -> None:
    fetcher = _fetcher(tmp_path)
    host = FakeTransport(by_spec({"openssl=3.0.22-1~deb12u2": ok_result(OPENSSL_TEXT)}))
    updates = [
        _update("openssl", "3.0.22-1~deb12u1", "3.0.22-1~deb12u2"),
        _update("libssl3", "3.0.19-1~deb12u2", "3.0.22-1~deb12u2"),
    ]
    packages = [
        _pkg("openssl", "3.0.22-1~deb12u1", "openssl"),
        _pkg("libssl3", "3.0.19-1~deb12u2", "openssl"),
    ]
    annotated, warnings = fetcher.cves_for_many(host, updates, packages)
    assert warnings == []
    assert annotated[0].cves == ("CVE-2026-84782",)
    assert annotated[1].cves == ("CVE-2026-84782", "CVE-2026-42767", "CVE-2026-54874")
