"""Package URLs (purl) of installed packages and of the source packages findings are about.

One place builds every purl patchpilot emits (the ``purl`` of each finding in the report, the
components of the CycloneDX export, the SARIF results), with `packageurl-python`_, which does
the percent-encoding (a Debian version ``1:2.4.47-2+b1`` becomes ``1:2.4.47-2%2Bb1``).

Per ecosystem, as the purl type definitions say:

- Debian and derivatives: ``pkg:deb/<os id>/<name>@<version>?arch=<arch>&distro=<distro>``;
  the namespace is the vendor (``debian``, ``ubuntu``: the ``ID`` of ``/etc/os-release``), the
  version is the full Debian version with its epoch, a source package has ``arch=source``.
- RPM: ``pkg:rpm/<os id>/<name>@<version>-<release>?arch=<arch>&epoch=<epoch>&distro=...``;
  the epoch is a qualifier, never part of the version; a source package has ``arch=src``.
- Alpine: ``pkg:apk/<os id>/<name>@<version>?arch=<arch>&distro=...``; a source package (an
  APK origin) has no arch qualifier.
- PyPI: ``pkg:pypi/<name>@<version>`` (packageurl normalises the name).

``distro`` is ``<os id>-<VERSION_ID>`` (``debian-12``, ``ubuntu-22.04``, ``rhel-9.4``, as Syft
and Trivy write it), or the codename when the release has no version (Debian testing).

.. _packageurl-python: https://github.com/package-url/packageurl-python
"""

from __future__ import annotations

from typing import Final

from packageurl import PackageURL

from patchpilot.core.models import Ecosystem, InstalledPackage, OSInfo

__all__ = ["PURL_TYPES", "distro_qualifier", "package_purl", "source_purl"]

PURL_TYPES: Final[dict[Ecosystem, str]] = {
    Ecosystem.DEBIAN: "deb",
    Ecosystem.RPM: "rpm",
    Ecosystem.ALPINE: "apk",
    Ecosystem.PYPI: "pypi",
}
"""The purl type of each ecosystem."""

_SOURCE_ARCH: Final[dict[Ecosystem, str]] = {Ecosystem.DEBIAN: "source", Ecosystem.RPM: "src"}
"""The ``arch`` qualifier of a source package, where the ecosystem has one."""


def distro_qualifier(os: OSInfo) -> str | None:
    """The ``distro`` qualifier of a host's release: ``debian-12``, or ``trixie`` without one."""
    vendor = os.id.lower()
    if os.version_id:
        return f"{vendor}-{os.version_id}"
    return os.version_codename or None


def _purl(
    ecosystem: Ecosystem,
    name: str,
    version: str | None,
    *,
    os: OSInfo | None,
    arch: str | None,
    epoch: int | None = None,
) -> str | None:
    """The purl, or None when the parts cannot make one (an empty name, no vendor)."""
    purl_type = PURL_TYPES[ecosystem]
    qualifiers: dict[str, str] = {}
    namespace: str | None = None
    if ecosystem is not Ecosystem.PYPI:
        if os is None or not os.id:
            return None  # the vendor is required for deb, rpm and apk
        namespace = os.id.lower()
        if arch:
            qualifiers["arch"] = arch
        if ecosystem is Ecosystem.RPM:
            version, epoch = _split_rpm_epoch(version, epoch)
            if epoch:
                qualifiers["epoch"] = str(epoch)
        distro = distro_qualifier(os)
        if distro:
            qualifiers["distro"] = distro
    try:
        return PackageURL(
            type=purl_type,
            namespace=namespace,
            name=name,
            version=version or None,
            qualifiers=qualifiers or None,
        ).to_string()
    except ValueError:
        return None


def _split_rpm_epoch(version: str | None, epoch: int | None) -> tuple[str | None, int | None]:
    """``[epoch:]version-release`` -> (``version-release``, epoch); the qualifier carries it."""
    if version and ":" in version:
        head, _, rest = version.partition(":")
        if head.isdigit():
            return rest, epoch if epoch is not None else int(head)
    return version, epoch


def package_purl(package: InstalledPackage, os: OSInfo | None) -> str | None:
    """The purl of an installed (binary) package of a host running ``os``.

    Returns:
        e.g. ``pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12``; None
        when it cannot be built (no OS vendor for an OS package, an empty name).
    """
    return _purl(
        package.ecosystem,
        package.name,
        package.version,
        os=os,
        arch=package.arch or None,
        epoch=package.epoch,
    )


def source_purl(
    ecosystem: Ecosystem, name: str, version: str | None, os: OSInfo | None
) -> str | None:
    """The purl of a source package (what a finding is about): ``arch=source`` for Debian.

    Returns:
        e.g. ``pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=source&distro=debian-12``; None
        when it cannot be built.
    """
    return _purl(ecosystem, name, version, os=os, arch=_SOURCE_ARCH.get(ecosystem))
