"""The lab's apt repository: .deb building with dpkg-deb and the index written in Python."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from debian.changelog import Changelog
from debian.deb822 import Packages, Release

from patchpilot.lab.repo import acme_packages, build_repo, changelog_text, packages_stanza

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo") / "repo"
    build_repo(path)
    return path


def _stanzas(repo: Path) -> list[Packages]:
    return list(
        Packages.iter_paragraphs((repo / "Packages").read_text(encoding="utf-8"), use_apt_pkg=False)
    )


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_index_lists_every_version(repo: Path) -> None:
    versions = sorted((p["Package"], p["Version"]) for p in _stanzas(repo))
    assert versions == [
        ("acme-agent", "1.0.0"),
        ("acme-agent", "2.0.0"),
        ("acme-plugin-legacy", "1.0.0"),
        ("acme-web", "1.0.0"),
        ("acme-web", "1.1.0"),
        ("acme-web", "1.2.0"),
        ("acme-web", "1.3.0"),
    ]


def test_index_fields_and_hashes_match_the_files(repo: Path) -> None:
    for stanza in _stanzas(repo):
        deb = repo / stanza["Filename"]
        data = deb.read_bytes()
        assert stanza["Filename"] == f"./{stanza['Package']}_{stanza['Version']}_all.deb"
        assert int(stanza["Size"]) == len(data)
        assert stanza["MD5sum"] == hashlib.md5(data).hexdigest()
        assert stanza["SHA1"] == hashlib.sha1(data).hexdigest()
        assert stanza["SHA256"] == hashlib.sha256(data).hexdigest()
        assert stanza["Architecture"] == "all"
        assert stanza["Maintainer"]
        assert int(stanza["Installed-Size"]) > 0
        assert stanza["Description"]
        assert deb.stat().st_mode & 0o777 == 0o644
    plugin = next(p for p in _stanzas(repo) if p["Package"] == "acme-plugin-legacy")
    assert plugin["Depends"] == "acme-agent (<< 2.0)"


def test_packages_gz_and_release(repo: Path) -> None:
    packages = (repo / "Packages").read_bytes()
    assert gzip.decompress((repo / "Packages.gz").read_bytes()) == packages
    release = Release((repo / "Release").read_text(encoding="utf-8"))
    files = {"Packages": packages, "Packages.gz": (repo / "Packages.gz").read_bytes()}
    for key, algo in (("MD5Sum", "md5"), ("SHA256", "sha256"), ("SHA1", "sha1")):
        entries = {e["name"]: e for e in release[key]}
        assert set(entries) == set(files)
        for name, data in files.items():
            assert (
                entries[name][key.lower() if key != "MD5Sum" else "md5sum"]
                == hashlib.new(algo, data).hexdigest()
            )
            assert int(entries[name]["size"]) == len(data)
    assert repo.stat().st_mode & 0o755 == 0o755


def test_debs_have_exact_versions_and_contents(repo: Path) -> None:
    for spec in acme_packages():
        deb = repo / spec.filename
        assert _dpkg_deb("--field", str(deb), "Version").strip() == spec.version
        assert _dpkg_deb("--field", str(deb), "Package").strip() == spec.name
    web = repo / "acme-web_1.2.0_all.deb"
    contents = _dpkg_deb("--contents", str(web))
    lines = contents.splitlines()
    assert lines[0].startswith("drwxr-xr-x root/root")  # "./" is not 0700
    assert "./etc/init.d/acme-web" in contents
    assert "./usr/lib/acme-web/server.py" in contents
    assert "./etc/lab-autostart/acme-web -> ../init.d/acme-web" in contents
    assert "./usr/share/doc/acme-web/changelog.Debian.gz" in contents
    info = _dpkg_deb("--info", str(web))
    assert "postinst" in info
    assert "prerm" in info
    assert "conffiles" in info


def test_server_versions_and_broken_flag(repo: Path, tmp_path: Path) -> None:
    for version, broken in (("1.0.0", False), ("1.1.0", False), ("1.2.0", True)):
        target = tmp_path / version
        subprocess.run(
            ["dpkg-deb", "-x", str(repo / f"acme-web_{version}_all.deb"), str(target)], check=True
        )
        server = (target / "usr/lib/acme-web/server.py").read_text(encoding="utf-8")
        assert f'VERSION = "{version}"' in server
        assert f"BROKEN = {broken}" in server
        compile(server, "server.py", "exec")
        changelog = Changelog(
            gzip.decompress(
                (target / "usr/share/doc/acme-web/changelog.Debian.gz").read_bytes()
            ).decode()
        )
        assert str(changelog.version) == version
        assert changelog.package == "acme-web"


def test_changelog_mentions_the_lab_cve_in_1_1_0() -> None:
    spec = next(s for s in acme_packages() if (s.name, s.version) == ("acme-web", "1.2.0"))
    changelog = Changelog(changelog_text(spec.name, spec.changelog))
    blocks = {str(b.version): "\n".join(b.changes()) for b in changelog}
    assert list(blocks) == ["1.2.0", "1.1.0", "1.0.0"]
    assert "CVE-2024-99901" in blocks["1.1.0"]
    assert "made-up" in blocks["1.1.0"]
    assert "migration" in blocks["1.2.0"]
    assert "CVE" not in blocks["1.0.0"]
    assert next(iter(changelog)).urgency == "medium"


def test_rebuild_is_reproducible_and_skipped_when_unchanged(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "again"
    build_repo(other)
    assert (other / "Packages").read_bytes() == (repo / "Packages").read_bytes()
    mtime = (other / "Packages").stat().st_mtime_ns
    build_repo(other)
    assert (other / "Packages").stat().st_mtime_ns == mtime


def test_packages_stanza_field_order() -> None:
    control = (
        "Package: p\nVersion: 1\nArchitecture: all\nDepends: q\nSection: misc\n"
        "Priority: optional\nDescription: short\n long\n"
    )
    stanza = packages_stanza(control, "p_1_all.deb", b"data")
    keys = [line.split(":")[0] for line in stanza.splitlines() if not line.startswith(" ")]
    assert keys == [
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Filename",
        "Size",
        "MD5sum",
        "SHA1",
        "SHA256",
        "Section",
        "Priority",
        "Description",
    ]
    assert stanza.endswith(" long\n")
