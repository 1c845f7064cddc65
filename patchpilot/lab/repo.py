"""The lab's local apt repository: the acme packages, built with ``dpkg-deb``, indexed in Python.

A flat repository (``deb [trusted=yes] file:/srv/acme-repo ./``) holding every version of:

* ``acme-web`` 1.0.0, 1.1.0 (fixes the lab's made-up CVE-2024-99901), 1.2.0 (installs fine
  but ``/health`` answers 503: a failed DB migration) and 1.3.0 (``/health`` answers 200, but
  its main endpoint ``/`` is several times slower, 150-250 ms, and fails every 25th request
  with 500: a regression only post-patch analysis catches), a python3 ``http.server`` with an
  init script, started at host boot through ``/etc/lab-autostart/acme-web``; it depends on
  ``python3 (>= 3.11)``, so it installs on bookworm (3.11) and trixie (3.13) alike;
* ``acme-agent`` 1.0.0 and 2.0.0 and ``acme-plugin-legacy`` 1.0.0 (``Depends: acme-agent
  (<< 2.0)``): a dist-upgrade to acme-agent 2.0.0 removes the plugin.

Every package is ``Architecture: all`` and the repository is flat (no suite), so the same
repository serves the bookworm and the trixie hosts.

Builds are reproducible (``SOURCE_DATE_EPOCH``, fixed mtimes, gzip without timestamps), so a
rebuild gives byte-identical files and index hashes. No dpkg-dev is needed: ``Packages``,
``Packages.gz`` and ``Release`` are written here, every version listed (multiversion).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import structlog

from patchpilot.core.errors import LabError
from patchpilot.lab.system import run

__all__ = [
    "DEGRADED_WEB_VERSION",
    "MAINTAINER",
    "WEB_VERSIONS",
    "ChangelogEntry",
    "PackageSpec",
    "acme_packages",
    "build_deb",
    "build_repo",
    "changelog_text",
    "packages_stanza",
    "repo_stamp",
    "web_server_source",
    "write_index",
]

log = structlog.get_logger(__name__, agent="lab")  # lazy: bound after configure_logging()

MAINTAINER = "patchpilot lab <lab@patchpilot.invalid>"
#: Fixed timestamp of every file in the packages (2024-10-01T00:00:00Z): reproducible builds.
SOURCE_DATE_EPOCH = 1727740800
_STAMP = ".lab-repo-stamp"


@dataclass(frozen=True)
class ChangelogEntry:
    """One entry of a Debian changelog."""

    version: str
    date: datetime
    changes: tuple[str, ...]
    urgency: str = "medium"
    distribution: str = "bookworm"


@dataclass(frozen=True)
class PackageSpec:
    """Everything needed to build one binary package."""

    name: str
    version: str
    summary: str
    description: str
    changelog: tuple[ChangelogEntry, ...]  # newest first, this version's entry included
    depends: tuple[str, ...] = ()
    section: str = "misc"
    priority: str = "optional"
    files: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # path -> (text, mode)
    symlinks: Mapping[str, str] = field(default_factory=dict)  # path -> target
    scripts: Mapping[str, str] = field(default_factory=dict)  # postinst/prerm -> text
    conffiles: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The .deb file name (``NAME_VERSION_all.deb``)."""
        return f"{self.name}_{self.version}_all.deb"


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


_WEB_CHANGES = (
    ChangelogEntry(
        "1.3.0",
        _date("2024-09-23T11:00:00"),
        (
            "Fix database migration 0042 failing at start-up.",
            "New: the order page is rendered through the new template engine.",
        ),
    ),
    ChangelogEntry(
        "1.2.0",
        _date("2024-09-02T09:30:00"),
        (
            "New: database schema migration 0042 (orders table), run at start-up.",
            "The /health endpoint now reports the state of the database migration.",
        ),
    ),
    ChangelogEntry(
        "1.1.0",
        _date("2024-06-03T10:00:00"),
        (
            "SECURITY: fix path traversal in the static page handler (CVE-2024-99901).",
            "Note: CVE-2024-99901 is a made-up identifier of the patchpilot lab,",
            "not a real vulnerability.",
        ),
        urgency="high",
    ),
    ChangelogEntry(
        "1.0.0",
        _date("2024-03-04T08:00:00"),
        ("Initial release of acme-web, the patchpilot lab demo service.",),
    ),
)
_AGENT_CHANGES = (
    ChangelogEntry(
        "2.0.0",
        _date("2024-08-05T12:00:00"),
        ("New plugin API 2; plugins written for acme-agent 1.x no longer load.",),
    ),
    ChangelogEntry(
        "1.0.0",
        _date("2024-02-05T12:00:00"),
        ("Initial release of acme-agent, the patchpilot lab demo agent.",),
    ),
)
_PLUGIN_CHANGES = (
    ChangelogEntry(
        "1.0.0",
        _date("2024-02-06T12:00:00"),
        ("Initial release: the legacy (1.x API) plugin of acme-agent.",),
    ),
)


def changelog_text(source: str, entries: Sequence[ChangelogEntry]) -> str:
    """A Debian changelog (``debian/changelog`` format) for ``entries``, newest first."""
    blocks = []
    for entry in entries:
        lines = [f"{source} ({entry.version}) {entry.distribution}; urgency={entry.urgency}", ""]
        bullet = True
        for change in entry.changes:
            # A line starting lower-case or with "not" continues the previous bullet.
            prefix = "  * " if bullet else "    "
            lines.append(prefix + change)
            bullet = change.endswith((".", ":"))
        stamp = entry.date.strftime("%a, %d %b %Y %H:%M:%S +0000")
        lines += ["", f" -- {MAINTAINER}  {stamp}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _asset(name: str) -> str:
    return resources.files("patchpilot.lab").joinpath("assets", name).read_text(encoding="utf-8")


def _entries_up_to(entries: Sequence[ChangelogEntry], version: str) -> tuple[ChangelogEntry, ...]:
    index = next(i for i, e in enumerate(entries) if e.version == version)
    return tuple(entries[index:])


#: acme-web versions of the repository, oldest first.
WEB_VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "1.3.0")
#: The release whose ``/`` is slow and fails now and then (``/health`` stays 200).
DEGRADED_WEB_VERSION = "1.3.0"
_PAGE_SEND = '            self._send(200, page, "text/html; charset=utf-8")\n'
_CLASS_LINE = "class Handler(BaseHTTPRequestHandler):\n"


def _degraded(server: str) -> str:
    """``server`` with the 1.3.0 regression (``assets/acme-web/degraded.py.in``) spliced in.

    The other releases keep the template's text byte for byte (their packages do not change).
    """
    if server.count(_PAGE_SEND) != 1 or server.count(_CLASS_LINE) != 1:
        raise LabError("acme-web/server.py.in changed: cannot splice in the 1.3.0 regression")
    server = server.replace(
        _PAGE_SEND, "            if not degrade(self):\n    " + _PAGE_SEND.lstrip("\n")
    )
    return server.replace(_CLASS_LINE, _asset("acme-web/degraded.py.in") + _CLASS_LINE)


def web_server_source(version: str) -> str:
    """``/usr/lib/acme-web/server.py`` of an acme-web release."""
    server = _asset("acme-web/server.py.in").replace("@VERSION@", version)
    server = server.replace("@BROKEN@", "True" if version == "1.2.0" else "False")
    return _degraded(server) if version == DEGRADED_WEB_VERSION else server


def acme_packages() -> list[PackageSpec]:
    """The specs of every package of the lab repository."""
    specs: list[PackageSpec] = []
    init_script = _asset("acme-web/acme-web.init")
    for version in WEB_VERSIONS:
        server = web_server_source(version)
        specs.append(
            PackageSpec(
                name="acme-web",
                version=version,
                summary="acme web service (patchpilot lab demo)",
                description=(
                    "A tiny HTTP service used by the patchpilot lab to exercise upgrades,\n"
                    "health checks and rollbacks. Not a real product."
                ),
                changelog=_entries_up_to(_WEB_CHANGES, version),
                # Any release's python3 (bookworm 3.11, trixie 3.13): the init script runs it.
                depends=("python3 (>= 3.11)",),
                section="web",
                files={
                    "usr/lib/acme-web/server.py": (server, 0o644),
                    "etc/init.d/acme-web": (init_script, 0o755),
                },
                symlinks={"etc/lab-autostart/acme-web": "../init.d/acme-web"},
                scripts={
                    "postinst": _asset("acme-web/postinst"),
                    "prerm": _asset("acme-web/prerm"),
                },
                conffiles=("/etc/init.d/acme-web",),
            )
        )
    for version in ("1.0.0", "2.0.0"):
        specs.append(
            PackageSpec(
                name="acme-agent",
                version=version,
                summary="acme monitoring agent (patchpilot lab demo)",
                description="A trivial agent package of the patchpilot lab. Not a real product.",
                changelog=_entries_up_to(_AGENT_CHANGES, version),
                section="admin",
                files={
                    "usr/bin/acme-agent": (
                        f"#!/bin/sh\necho 'acme-agent {version} (patchpilot lab)'\n",
                        0o755,
                    ),
                },
            )
        )
    specs.append(
        PackageSpec(
            name="acme-plugin-legacy",
            version="1.0.0",
            summary="legacy plugin for acme-agent 1.x (patchpilot lab demo)",
            description=(
                "Works with the acme-agent 1.x plugin API only: upgrading acme-agent to\n"
                "2.0 removes it. Not a real product."
            ),
            changelog=_PLUGIN_CHANGES,
            depends=("acme-agent (<< 2.0)",),
            section="admin",
            files={"usr/lib/acme-agent/plugins/legacy.conf": ("api = 1\n", 0o644)},
        )
    )
    return specs


def _control(spec: PackageSpec, installed_kib: int) -> str:
    fields = [
        ("Package", spec.name),
        ("Version", spec.version),
        ("Architecture", "all"),
        ("Maintainer", MAINTAINER),
        ("Installed-Size", str(installed_kib)),
    ]
    if spec.depends:
        fields.append(("Depends", ", ".join(spec.depends)))
    fields += [("Section", spec.section), ("Priority", spec.priority)]
    body = "\n".join(f"{k}: {v}" for k, v in fields)
    long = "\n".join(
        " " + (line if line.strip() else ".") for line in spec.description.splitlines()
    )
    return f"{body}\nDescription: {spec.summary}\n{long}\n"


def _gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def build_deb(spec: PackageSpec, out_dir: Path) -> Path:
    """Build ``spec`` into ``out_dir/NAME_VERSION_all.deb`` with ``dpkg-deb``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"lab-{spec.name}-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        files: dict[str, tuple[bytes, int]] = {
            path: (text.encode("utf-8"), mode) for path, (text, mode) in spec.files.items()
        }
        doc = f"usr/share/doc/{spec.name}"
        files[f"{doc}/changelog.Debian.gz"] = (
            _gzip_bytes(changelog_text(spec.name, spec.changelog).encode("utf-8")),
            0o644,
        )
        files[f"{doc}/copyright"] = (
            b"This package is part of the patchpilot lab (Apache-2.0). Not a real product.\n",
            0o644,
        )
        installed = 0
        for rel, (data, mode) in files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
            installed += -(-len(data) // 1024)
        for rel, link in spec.symlinks.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(link)
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(_control(spec, max(installed, 1)), encoding="utf-8")
        for name, text in spec.scripts.items():
            (debian / name).write_text(text, encoding="utf-8")
            (debian / name).chmod(0o755)
        if spec.conffiles:
            (debian / "conffiles").write_text("\n".join(spec.conffiles) + "\n", encoding="utf-8")
        # GOTCHA: mkdtemp roots are 0700, which would become the .deb's "./" entry.
        for dirpath, dirnames, filenames in os.walk(root):
            os.chmod(dirpath, 0o755)  # noqa: S103 -- package directories are 755
            for name in (*dirnames, *filenames):
                os.utime(
                    os.path.join(dirpath, name),
                    (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH),
                    follow_symlinks=False,
                )
            os.utime(dirpath, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
        deb = out_dir / spec.filename
        partial = out_dir / f".{spec.filename}.tmp"
        run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(partial)],
            env={**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)},
            what=f"dpkg-deb --build {spec.filename}",
        )
        partial.chmod(0o644)
        partial.replace(deb)
    return deb


def _digests(data: bytes) -> dict[str, str]:
    return {
        "MD5sum": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "SHA1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        "SHA256": hashlib.sha256(data).hexdigest(),
    }


def packages_stanza(control: str, filename: str, data: bytes) -> str:
    """The ``Packages`` stanza of a .deb: its control fields plus Filename, Size and hashes.

    Fields are ordered as ``dpkg-scanpackages`` orders them (Filename…SHA256 after the
    dependency fields, Description last).
    """
    lines = control.rstrip("\n").splitlines()
    head: list[str] = []
    tail: list[str] = []
    current = head
    for line in lines:
        if not line.startswith((" ", "\t")):
            key = line.split(":", 1)[0]
            current = tail if key in ("Section", "Priority", "Description") else head
        current.append(line)
    digests = _digests(data)
    extra = [
        f"Filename: ./{filename}",
        f"Size: {len(data)}",
        f"MD5sum: {digests['MD5sum']}",
        f"SHA1: {digests['SHA1']}",
        f"SHA256: {digests['SHA256']}",
    ]
    return "\n".join([*head, *extra, *tail]) + "\n"


def _read_control(deb: Path) -> str:
    return run(["dpkg-deb", "--field", str(deb)], what=f"dpkg-deb --field {deb.name}").stdout


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(data)
    partial.chmod(0o644)
    partial.replace(path)


def write_index(repo_dir: Path, debs: Sequence[Path]) -> None:
    """Write ``Packages``, ``Packages.gz`` and ``Release`` of a flat repo holding ``debs``."""
    stanzas = []
    for deb in sorted(debs, key=lambda p: p.name):
        stanzas.append(packages_stanza(_read_control(deb), deb.name, deb.read_bytes()))
    packages = "\n".join(stanzas).encode("utf-8")
    packages_gz = _gzip_bytes(packages)
    _write_atomic(repo_dir / "Packages", packages)
    _write_atomic(repo_dir / "Packages.gz", packages_gz)
    date = datetime.fromtimestamp(SOURCE_DATE_EPOCH, UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    release = [
        "Origin: patchpilot-lab",
        "Label: patchpilot-lab",
        "Suite: lab",
        "Codename: lab",
        f"Date: {date}",
        "Description: patchpilot lab packages (acme-*; not real products)",
    ]
    files = {"Packages": packages, "Packages.gz": packages_gz}
    for title, key in (("MD5Sum", "MD5sum"), ("SHA1", "SHA1"), ("SHA256", "SHA256")):
        release.append(f"{title}:")
        for name, data in files.items():
            release.append(f" {_digests(data)[key]} {len(data):>16} {name}")
    _write_atomic(repo_dir / "Release", ("\n".join(release) + "\n").encode("utf-8"))


def _spec_fingerprint(specs: Sequence[PackageSpec]) -> str:
    payload = [
        {
            "name": s.name,
            "version": s.version,
            "summary": s.summary,
            "description": s.description,
            "depends": s.depends,
            "section": s.section,
            "priority": s.priority,
            "files": {k: list(v) for k, v in sorted(s.files.items())},
            "symlinks": dict(sorted(s.symlinks.items())),
            "scripts": dict(sorted(s.scripts.items())),
            "conffiles": s.conffiles,
            "changelog": changelog_text(s.name, s.changelog),
        }
        for s in specs
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def repo_stamp(repo_dir: Path) -> str | None:
    """The fingerprint of the packages ``repo_dir`` was last built with (None: never built)."""
    try:
        return (repo_dir / _STAMP).read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def build_repo(repo_dir: Path, *, force: bool = False) -> list[Path]:
    """Build every acme package and the index into ``repo_dir`` (world-readable).

    Skipped when the repo already holds exactly these packages (same spec fingerprint). Files
    are replaced atomically, so hosts that bind-mount the directory see whole files only.
    """
    specs = acme_packages()
    fingerprint = _spec_fingerprint(specs)
    stamp = repo_dir / _STAMP
    debs = [repo_dir / s.filename for s in specs]
    if (
        not force
        and stamp.is_file()
        and stamp.read_text(encoding="ascii").strip() == fingerprint
        and all(d.is_file() for d in debs)
        and (repo_dir / "Packages").is_file()
    ):
        return debs
    repo_dir.mkdir(parents=True, exist_ok=True)
    repo_dir.chmod(0o755)
    wanted = {s.filename for s in specs}
    for old in repo_dir.glob("*.deb"):
        if old.name not in wanted:
            old.unlink()
    for spec in specs:
        build_deb(spec, repo_dir)
    write_index(repo_dir, debs)
    _write_atomic(stamp, (fingerprint + "\n").encode("ascii"))
    log.info("lab.repo_built", repo=str(repo_dir), packages=len(debs))
    return debs
