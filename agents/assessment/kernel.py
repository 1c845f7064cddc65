"""Kernels: only the running kernel counts.

Which source packages are kernels (:func:`is_kernel_source`), their canonical names
(:func:`canonical_kernel_source`), which binaries belong to the running release
(:func:`running_kernel_binaries`), and the host's inventory grouped by source package, with
every installed kernel source but the running one pruned.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress, repeat
from operator import attrgetter, eq, is_, itemgetter
from typing import Final

from patchpilot.agents.assessment.verdicts import _FLOAT_RE, _SourceKey
from patchpilot.core.models import (
    Ecosystem,
    HostFacts,
    InstalledPackage,
)

__all__ = ["canonical_kernel_source", "is_kernel_source", "running_kernel_binaries"]

_DEBIAN_KERNEL_RENAMES: Final = (
    ("linux-signed", "linux"),
    ("linux-latest", "linux"),
    ("-amd64", ""),
    ("-arm64", ""),
    ("-i386", ""),
)
_UBUNTU_KERNEL_RENAMES: Final = (("linux-signed", "linux"), ("linux-meta", "linux"))


# Ubuntu kernel flavours (Vuls models.IsKernelSourcePackage, from ubuntu-cve-tracker cve_lib.py).
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UBUNTU_FLAVOURS: Final = _words(
    """armadaxp mako manta flo goldfish joule raspi raspi2 snapdragon allwinner aws azure
    bluefield dell300x gcp gke gkeop ibm iot laptop lowlatency kvm nvidia oem oracle euclid
    hwe riscv starfive realtime mtk"""
)
# linux-<flavour>-<word or float>: the accepted words, and whether a float (5.15) is accepted.
_UBUNTU_FLAVOUR_SUFFIX: Final[Mapping[str, tuple[frozenset[str], bool]]] = {
    "ti": (frozenset({"omap4"}), False),
    "raspi": (frozenset(), True),
    "raspi2": (frozenset(), True),
    "allwinner": (frozenset(), True),
    "gke": (frozenset(), True),
    "gkeop": (frozenset(), True),
    "ibm": (frozenset(), True),
    "oracle": (frozenset(), True),
    "riscv": (frozenset(), True),
    "starfive": (frozenset(), True),
    "aws": (frozenset({"hwe", "edge"}), True),
    "azure": (frozenset({"cvm", "fde", "edge"}), True),
    "gcp": (frozenset({"edge"}), True),
    "intel": (frozenset({"iotg", "opt"}), True),
    "oem": (frozenset({"osp1"}), True),
    "lts": (frozenset({"utopic", "vivid", "wily", "xenial"}), False),
    "hwe": (frozenset({"edge"}), True),
    "xilinx": (frozenset({"zynqmp"}), False),
    "nvidia": (frozenset({"tegra"}), True),
}
# linux-<flavour>-<word>-<float or word>.
_UBUNTU_FLAVOUR_4: Final[Mapping[str, tuple[str, frozenset[str]]]] = {
    "azure": ("fde", frozenset()),
    "intel": ("iotg", frozenset()),
    "lowlatency": ("hwe", frozenset()),
    "nvidia": ("tegra", frozenset({"igx"})),
}

_RPM_KERNEL_SOURCES: Final = frozenset({"kernel", "kernel-rt", "kernel-uek", "kernel-alt"})
_KERNEL_NAME_PREFIXES: Final = ("linux", "kernel")  # cheap pre-filter for is_kernel_source

# Binary name prefixes that carry the kernel release: PREFIX + `uname -r` (Vuls' list).
_KERNEL_BINARY_PREFIXES: Final = (
    "linux-image-",
    "linux-image-unsigned-",
    "linux-signed-image-",
    "linux-image-uc-",
    "linux-buildinfo-",
    "linux-cloud-tools-",
    "linux-headers-",
    "linux-lib-rust-",
    "linux-modules-",
    "linux-modules-extra-",
    "linux-modules-ipu6-",
    "linux-modules-ivsc-",
    "linux-modules-iwlwifi-",
    "linux-tools-",
)
_KERNEL_IMAGE_PREFIXES: Final = (
    "linux-image-",
    "linux-image-unsigned-",
    "linux-signed-image-",
    "linux-image-uc-",
)


def _is_ubuntu(facts: HostFacts) -> bool:
    return facts.os.id == "ubuntu" or "ubuntu" in facts.os.id_like


def canonical_kernel_source(name: str, *, ubuntu: bool = False) -> str:
    """Normalise a kernel source package name to the name advisories use (Vuls' renames).

    Debian: ``linux-signed*`` and ``linux-latest*`` become ``linux*`` and ``-amd64``/``-arm64``/
    ``-i386`` are stripped (``linux-signed-amd64`` -> ``linux``, ``linux-signed-5.10-amd64`` ->
    ``linux-5.10``). Ubuntu: ``linux-signed*``/``linux-meta*`` become ``linux*``
    (``linux-signed-hwe-6.5`` -> ``linux-hwe-6.5``). Other names are returned unchanged.

    Args:
        name: a source package name.
        ubuntu: apply Ubuntu's rules instead of Debian's.

    Returns:
        The canonical name.
    """
    if not name.startswith("linux-"):
        return name
    for old, new in _UBUNTU_KERNEL_RENAMES if ubuntu else _DEBIAN_KERNEL_RENAMES:
        name = name.replace(old, new)
    return name


@lru_cache(maxsize=65536)
def is_kernel_source(
    name: str, *, ubuntu: bool = False, ecosystem: Ecosystem | None = None
) -> bool:
    """Whether a source package builds the kernel (so only the running one counts).

    Debian (Vuls' rule, after :func:`canonical_kernel_source`): ``linux``, ``linux-grsec`` and
    ``linux-<float>`` (``linux-5.10``, ``linux-6.1``). Ubuntu: ``linux``, ``linux-<float>`` and the
    flavours of ubuntu-cve-tracker (``linux-aws``, ``linux-hwe-6.5``, ``linux-azure-fde-5.15``,
    ``linux-lowlatency-hwe-5.15``...). Not kernels: ``linux-base``, ``linux-firmware``,
    ``linux-atm``, ``linux-tools-common``'s source... RPM: ``kernel``, ``kernel-rt``,
    ``kernel-uek``, ``kernel-alt``. Alpine kernels are not pruned (one kernel per flavour).

    Args:
        name: the source package name.
        ubuntu: use Ubuntu's flavour list.
        ecosystem: the package ecosystem (default Debian).

    Returns:
        True for a kernel source package.
    """
    if ecosystem is Ecosystem.RPM:
        return name in _RPM_KERNEL_SOURCES
    if ecosystem not in (None, Ecosystem.DEBIAN):
        return False
    parts = canonical_kernel_source(name, ubuntu=ubuntu).split("-")
    if parts[0] != "linux":
        return False
    if len(parts) == 1:
        return True
    if not ubuntu:
        return len(parts) == 2 and (parts[1] == "grsec" or bool(_FLOAT_RE.match(parts[1])))
    flavour = parts[1]
    if len(parts) == 2:
        return flavour in _UBUNTU_FLAVOURS or bool(_FLOAT_RE.match(flavour))
    if len(parts) == 3:
        rule = _UBUNTU_FLAVOUR_SUFFIX.get(flavour)
        if rule is None:
            return False
        words, float_ok = rule
        return parts[2] in words or (float_ok and bool(_FLOAT_RE.match(parts[2])))
    if len(parts) == 4:
        rule4 = _UBUNTU_FLAVOUR_4.get(flavour)
        if rule4 is None or parts[2] != rule4[0]:
            return False
        return parts[3] in rule4[1] or bool(_FLOAT_RE.match(parts[3]))
    return False


def running_kernel_binaries(kernel_release: str) -> frozenset[str]:
    """Binary package names that belong to a running kernel release (Debian/Ubuntu).

    ``linux-image-<rel>``, ``linux-image-unsigned-<rel>``, ``linux-signed-image-<rel>``,
    ``linux-headers-<rel>``, ``linux-modules(-extra)-<rel>``, ``linux-tools-<rel>``,
    ``linux-buildinfo-<rel>``, ``linux-cloud-tools-<rel>`` ... plus Debian's
    ``linux-image-<rel>-unsigned`` and ``-dbg``. (``linux-modules-nvidia-*-<rel>`` is matched by
    :func:`_is_running_kernel_binary`.)

    Args:
        kernel_release: ``uname -r``, e.g. ``6.1.0-18-amd64``.

    Returns:
        The set of names.
    """
    names = {prefix + kernel_release for prefix in _KERNEL_BINARY_PREFIXES}
    names.update({f"linux-image-{kernel_release}-unsigned", f"linux-image-{kernel_release}-dbg"})
    return frozenset(names)


def _is_running_kernel_binary(name: str, release: str, names: frozenset[str]) -> bool:
    return name in names or (
        name.startswith("linux-modules-nvidia-") and name.endswith("-" + release)
    )


def _is_running_rpm_kernel(package: InstalledPackage, release: str) -> bool:
    version = package.version.partition(":")[2] if package.epoch else package.version
    return release in (version, f"{version}.{package.arch}") or release.startswith(
        f"{version}.{package.arch}+"
    )


@dataclass(slots=True)
class _SourceGroup:
    name: str
    version: str
    binaries: list[InstalledPackage]
    kernel: bool = False


def _source_columns(
    packages: Sequence[InstalledPackage], ecosystem: Ecosystem
) -> tuple[Sequence[InstalledPackage], Sequence[str], Sequence[str]]:
    """The packages of ``ecosystem``, their source names and their source versions.

    Reading a package's three fields together visits each package record once (in a fleet the
    records are scattered in memory: visiting them, not the work, is the cost).
    """
    try:
        rows = list(map(_ECOSYSTEM_SOURCE, packages))
    except AttributeError:  # an incomplete record: read as before, for the same error
        rows = None
    if rows is not None and all(map(is_, map(itemgetter(0), rows), repeat(ecosystem))):
        if not rows:
            return packages, (), ()
        _, names, versions = zip(*rows, strict=True)
        return packages, names, versions
    if not all(map(is_, map(_ECOSYSTEM_OF, packages), repeat(ecosystem))):
        packages = [p for p in packages if p.ecosystem is ecosystem]
    return packages, list(map(_SOURCE_NAME, packages)), list(map(_SOURCE_VERSION, packages))


class _Inventory:
    """A host's installed packages grouped by (source name, source version), lazily.

    Only the distinct keys are needed for verdicts; binaries only for the few groups with
    findings (and kernels), so groups are built on demand from parallel lists, without a key
    object per package.
    """

    __slots__ = ("by_key", "by_name", "names", "packages", "versions")

    def __init__(self, packages: Sequence[InstalledPackage], ecosystem: Ecosystem) -> None:
        """Group the packages of ``ecosystem`` (others are ignored)."""
        self.packages, self.names, self.versions = _source_columns(packages, ecosystem)
        by_name = dict(zip(self.names, self.versions, strict=True))
        # One installed version per source (the usual case): the name -> version mapping is
        # the key set; otherwise (multi-arch skew) keys are (name, version) pairs.
        self.by_name: dict[str, str] | None = None
        self.by_key: dict[_SourceKey, None] | None = None
        if all(map(eq, map(by_name.__getitem__, self.names), self.versions)):
            self.by_name = by_name
        else:
            self.by_key = dict.fromkeys(zip(self.names, self.versions, strict=True))

    def keys(self) -> Iterable[_SourceKey]:
        """The distinct (source, version) keys, in first-seen package order."""
        if self.by_name is not None:
            return self.by_name.items()
        assert self.by_key is not None
        return self.by_key.keys()

    def names_in_order(self) -> Iterable[str]:
        """The source name of each key of :meth:`keys`, in the same order."""
        if self.by_name is not None:
            return self.by_name
        assert self.by_key is not None
        return map(itemgetter(0), self.by_key)

    def __len__(self) -> int:
        return len(self.by_name if self.by_name is not None else self.by_key or ())

    def starting_with(self, prefixes: tuple[str, ...]) -> list[_SourceKey]:
        """The keys whose source name starts with one of ``prefixes``."""
        if self.by_name is not None:
            names: Iterable[str] = self.by_name
        else:
            assert self.by_key is not None
            names = map(itemgetter(0), self.by_key)
        return list(compress(self.keys(), map(str.startswith, names, repeat(prefixes))))

    def remove(self, key: _SourceKey) -> None:
        """Forget one key."""
        if self.by_name is not None:
            del self.by_name[key[0]]
        else:
            assert self.by_key is not None
            del self.by_key[key]

    def binaries(self, wanted: Collection[_SourceKey]) -> dict[_SourceKey, list[InstalledPackage]]:
        """The binaries of the ``wanted`` groups, groups in first-seen package order."""
        wanted_names = {name for name, _ in wanted}
        flags = list(map(wanted_names.__contains__, self.names))
        groups: dict[_SourceKey, list[InstalledPackage]] = {}
        for name, version, package in zip(
            compress(self.names, flags),
            compress(self.versions, flags),
            compress(self.packages, flags),
            strict=True,
        ):
            key = (name, version)
            group = groups.get(key)
            if group is not None:
                group.append(package)
            elif key in wanted:
                groups[key] = [package]
        return groups


def _select_kernels(
    groups: dict[tuple[str, str], list[InstalledPackage]],
    facts: HostFacts,
    ecosystem: Ecosystem,
) -> tuple[list[_SourceGroup], int]:
    """Split off kernel sources: return the running kernel's group(s) and the pruned count.

    Kernel groups are removed from ``groups`` in place.
    """
    ubuntu = _is_ubuntu(facts)
    kernel_keys = [
        key
        for key in groups
        if key[0].startswith(_KERNEL_NAME_PREFIXES)
        and is_kernel_source(key[0], ubuntu=ubuntu, ecosystem=ecosystem)
    ]
    release = facts.kernel
    names = running_kernel_binaries(release)
    merged: dict[str, tuple[list[InstalledPackage], list[InstalledPackage]]] = {}
    pruned = 0
    for key in kernel_keys:
        binaries = groups.pop(key)
        if ecosystem is Ecosystem.RPM:
            running = [p for p in binaries if _is_running_rpm_kernel(p, release)]
        else:
            running = [p for p in binaries if _is_running_kernel_binary(p.name, release, names)]
        if not running:
            pruned += 1
            continue
        canonical = (
            key[0] if ecosystem is Ecosystem.RPM else canonical_kernel_source(key[0], ubuntu=ubuntu)
        )
        images = [p for p in running if p.name.startswith(_KERNEL_IMAGE_PREFIXES)]
        kept, kept_images = merged.setdefault(canonical, ([], []))
        kept.extend(running)
        kept_images.extend(images)
    selected: list[_SourceGroup] = []
    for canonical, (binaries, images) in sorted(merged.items()):
        if ecosystem is Ecosystem.RPM:
            version = binaries[0].source_version
        else:
            # The running image's binary version is the kernel source version (Debian's
            # signed template builds carry their own "6.1.76+1" source version).
            reference = min(images or binaries, key=lambda p: p.name)
            version = reference.version
        selected.append(_SourceGroup(canonical, version, binaries, kernel=True))
    return selected, pruned


_ECOSYSTEM_SOURCE: Final = attrgetter("ecosystem", "source_name", "source_version")
_SOURCE_NAME: Final = attrgetter("source_name")
_SOURCE_VERSION: Final = attrgetter("source_version")
_ECOSYSTEM_OF: Final = attrgetter("ecosystem")
