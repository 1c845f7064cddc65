"""apt sources and candidate policy, their classification, and apt holds (fixtures also run in
test_facts_fixtures)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import CommandFailedError, FactParseError, UnsafeArgumentError
from patchpilot.core.models import AptSource, CommandResult, PendingUpdate, UpdateOrigin
from patchpilot.tools.facts import (
    AptCandidatePolicy,
    AptHolds,
    AptPolicy,
    PackagePolicy,
    apt_release_string,
    classify_source,
    classify_update,
    classify_updates,
    parse_inst_line,
)
from patchpilot.tools.facts.apt_sources import parse_index_description, parse_release_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts"


def _fixture(fact: str, case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / fact / f"{case}.json").read_text("utf-8"))
    return data


def _result(argv: list[str], stdout: str, exit_code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(
        host="t", argv=tuple(argv), exit_code=exit_code, stdout=stdout, stderr=stderr
    )


def _sources(case: str) -> list[AptSource]:
    return AptPolicy().parse(
        _result(["apt-cache", "policy"], _fixture("AptPolicy", case)["stdout"])
    )


def _policies(case: str) -> dict[str, PackagePolicy]:
    data = _fixture("AptCandidatePolicy", case)
    fact = AptCandidatePolicy(data["fact_args"]["packages"])
    return fact.parse(_result(fact.command(), data["stdout"]))


# --------------------------------------------------------------------------- AptPolicy


def test_apt_policy_command_is_read_only() -> None:
    assert AptPolicy().command() == ["apt-cache", "policy"]
    assert AptPolicy.sudo is False


def test_real_debian_sources_are_classified() -> None:
    sources = _sources("debian12_bookworm")
    assert [(s.dist, s.kind) for s in sources] == [
        ("bookworm-security", UpdateOrigin.SECURITY),
        ("bookworm-updates", UpdateOrigin.POINT_RELEASE),
        ("bookworm", UpdateOrigin.POINT_RELEASE),
    ]
    assert all(s.site == "deb.debian.org" and s.arch == "amd64" for s in sources)
    # the dpkg status file is not a repository
    assert all(s.uri != "/var/lib/dpkg/status" for s in sources)


def test_real_local_repositories_have_no_site_and_flat_has_no_component() -> None:
    by_uri = {s.uri: s for s in _sources("debian12_with_local_repos")}
    flat = by_uri["file:/tmp/pprepo/flat"]
    assert (flat.dist, flat.component, flat.arch, flat.site) == ("./", None, None, None)
    assert flat.kind is UpdateOrigin.LOCAL
    assert flat.origin is flat.label is flat.archive is None  # "release c=" only
    acme = by_uri["file:/tmp/pprepo/acme"]
    assert (acme.priority, acme.archive, acme.codename, acme.label) == (700, "stable", "acme", None)
    assert acme.kind is UpdateOrigin.LOCAL


def test_synthetic_third_party_and_local_kinds() -> None:
    kinds = {s.uri: s.kind for s in _sources("synthetic_docker_internal_and_local_repos")}
    assert kinds["https://download.docker.com/linux/debian"] is UpdateOrigin.THIRD_PARTY
    assert kinds["http://apt.internal.example/acme"] is UpdateOrigin.THIRD_PARTY
    assert kinds["file:/srv/acme-repo"] is UpdateOrigin.LOCAL
    # a local mirror of the security suite is still security
    assert kinds["copy:/mnt/mirror/debian-security"] is UpdateOrigin.SECURITY
    cdrom = next(uri for uri in kinds if uri.startswith("cdrom:"))
    assert " " in cdrom
    assert kinds[cdrom] is UpdateOrigin.POINT_RELEASE


def test_old_security_backports_and_proposed() -> None:
    kinds = {(s.uri, s.dist): s for s in _sources("synthetic_debian10_backports_proposed_pins")}
    old_security = kinds[("http://security.debian.org", "buster/updates")]
    assert old_security.component == "main"
    assert old_security.kind is UpdateOrigin.SECURITY
    backports = kinds[("http://deb.debian.org/debian", "buster-backports")]
    assert backports.kind is UpdateOrigin.THIRD_PARTY
    assert backports.origin == "Debian Backports"
    proposed = kinds[("http://deb.debian.org/debian", "oldoldstable-proposed-updates")]
    assert proposed.kind is UpdateOrigin.THIRD_PARTY
    assert kinds[("http://deb.debian.org/debian", "buster-updates")].priority == -10


def test_ubuntu_ppa_esm_and_backports() -> None:
    sources = _sources("synthetic_ubuntu_jammy_ppa_esm")
    ppa = next(s for s in sources if "launchpadcontent" in s.uri)
    assert ppa.label == "New Python Versions"
    assert ppa.kind is UpdateOrigin.THIRD_PARTY
    esm = next(s for s in sources if "esm.ubuntu.com" in s.uri)
    assert esm.priority == 510
    assert esm.kind is UpdateOrigin.SECURITY
    backports = next(s for s in sources if s.dist == "jammy-backports")
    assert backports.kind is UpdateOrigin.THIRD_PARTY
    assert {s.arch for s in sources} == {"amd64", "i386"}


@pytest.mark.parametrize(
    "stdout",
    [
        "Package files:\n     release a=now\n",  # release before any index
        "Package files:\n 500 http://x.example/d bookworm/main amd64 Packages\n"
        "     release q=1,v=2\n",  # unknown release key
        "Package files:\n 500 http://x.example/d bookworm/main amd64 Packages\n"
        "     release a=x\n     release a=y\n",
        "Package files:\n 500 http://x.example/d bookworm/main amd64 Packages\n"
        "     origin a\n     origin b\n",
        "Package files:\n 500 http://x.example/d bookworm/main amd64 Sources\n",
    ],
)
def test_apt_policy_refuses_malformed_sections(stdout: str) -> None:
    with pytest.raises(FactParseError):
        AptPolicy().parse(_result(["apt-cache", "policy"], stdout))


def test_apt_policy_with_only_the_status_file_is_an_empty_list() -> None:
    stdout = "Package files:\n 100 /var/lib/dpkg/status\n     release a=now\nPinned packages:\n"
    assert AptPolicy().parse(_result(["apt-cache", "policy"], stdout)) == []


def test_apt_policy_failure_carries_stderr() -> None:
    with pytest.raises(CommandFailedError, match="could not be read"):
        AptPolicy().parse(
            _result(["apt-cache", "policy"], "", 100, "E: The list of sources could not be read.")
        )


@pytest.mark.parametrize(
    ("description", "parts"),
    [
        (
            "http://deb.debian.org/debian bookworm/main amd64 Packages",
            ("http://deb.debian.org/debian", "bookworm", "main", "amd64"),
        ),
        (
            "http://security.debian.org buster/updates/main amd64 Packages",
            ("http://security.debian.org", "buster/updates", "main", "amd64"),
        ),
        ("file:/srv/acme-repo ./ Packages", ("file:/srv/acme-repo", "./", None, None)),
        (
            "http://r.example/flat sub/dir/ Packages",
            ("http://r.example/flat", "sub/dir/", None, None),
        ),
        (
            "cdrom://[Debian GNU/Linux 12 DVD] bookworm/contrib all Packages",
            ("cdrom://[Debian GNU/Linux 12 DVD]", "bookworm", "contrib", "all"),
        ),
    ],
)
def test_parse_index_description(description: str, parts: tuple[str, ...]) -> None:
    assert parse_index_description(description) == parts


@pytest.mark.parametrize(
    "description",
    ["/var/lib/dpkg/status", "http://x bookworm amd64 Packages", "a  b/c d Packages", "x Packages"],
)
def test_parse_index_description_refuses(description: str) -> None:
    with pytest.raises(FactParseError):
        parse_index_description(description)


def test_parse_release_line_keeps_commas_and_empty_values() -> None:
    assert parse_release_line("o=Acme, Inc.,a=stable,l=Acme Tools,c=") == {
        "o": "Acme, Inc.",
        "a": "stable",
        "l": "Acme Tools",
        "c": "",
    }
    assert parse_release_line("") == {}


# --------------------------------------------------------------------------- classify_source


def _src(**fields: Any) -> AptSource:
    base: dict[str, Any] = {"priority": 500, "uri": "http://deb.example/debian", "dist": "stable"}
    return AptSource(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"uri": "file:/srv/repo", "dist": "./"}, UpdateOrigin.LOCAL),
        ({"uri": "copy:/mnt/repo", "dist": "./"}, UpdateOrigin.LOCAL),
        ({"uri": "cdrom://[x]", "dist": "bookworm", "component": "main"}, UpdateOrigin.LOCAL),
        ({"uri": "file:/srv/repo", "dist": "./", "origin": "Acme"}, UpdateOrigin.LOCAL),
        ({"archive": "oldstable-security", "label": "Debian-Security"}, UpdateOrigin.SECURITY),
        ({"archive": "oldoldstable", "label": "Debian-Security"}, UpdateOrigin.SECURITY),
        ({"dist": "noble-security"}, UpdateOrigin.SECURITY),  # no Release archive
        (
            {"archive": "jammy-security", "origin": "Ubuntu", "label": "Ubuntu"},
            UpdateOrigin.SECURITY,
        ),
        ({"archive": "stable", "origin": "Debian", "label": "Debian"}, UpdateOrigin.POINT_RELEASE),
        ({"archive": "stable-updates", "origin": "Debian"}, UpdateOrigin.POINT_RELEASE),
        ({"archive": "jammy-updates", "origin": "Ubuntu"}, UpdateOrigin.POINT_RELEASE),
        ({"archive": "jammy", "label": "Ubuntu"}, UpdateOrigin.POINT_RELEASE),  # label fallback
        ({"archive": "jammy-proposed", "origin": "Ubuntu"}, UpdateOrigin.THIRD_PARTY),
        ({"archive": "jammy-backports", "origin": "Ubuntu"}, UpdateOrigin.THIRD_PARTY),
        ({"archive": "stable-backports", "origin": "Debian Backports"}, UpdateOrigin.THIRD_PARTY),
        (
            {"archive": "bookworm", "origin": "Docker", "label": "Docker CE"},
            UpdateOrigin.THIRD_PARTY,
        ),
        ({"archive": "jammy", "origin": "LP-PPA-x", "label": "Ubuntu"}, UpdateOrigin.THIRD_PARTY),
        ({}, UpdateOrigin.THIRD_PARTY),  # a network repository without Release information
        ({"archive": "security-tools", "origin": "Acme"}, UpdateOrigin.THIRD_PARTY),
    ],
)
def test_classify_source(fields: dict[str, Any], kind: UpdateOrigin) -> None:
    assert classify_source(_src(**fields)) is kind


def test_classify_source_accepts_other_distribution_origins() -> None:
    raspbian = _src(archive="bookworm", origin="Raspbian")
    assert classify_source(raspbian) is UpdateOrigin.THIRD_PARTY
    assert (
        classify_source(raspbian, distribution_origins=frozenset({"Raspbian"}))
        is UpdateOrigin.POINT_RELEASE
    )


@pytest.mark.parametrize(
    ("fields", "relstr"),
    [
        (
            {"label": "Debian-Security", "version": "12", "archive": "oldstable-security"},
            "Debian-Security:12/oldstable-security",
        ),
        ({"archive": "stable"}, "stable"),
        ({"label": "Docker CE", "archive": "bookworm"}, "Docker CE:bookworm"),
        ({"uri": "file:/srv/repo", "dist": "./"}, "localhost"),
        ({"site": "repo.example"}, "repo.example"),
    ],
)
def test_apt_release_string(fields: dict[str, Any], relstr: str) -> None:
    assert apt_release_string(_src(**fields)) == relstr


def test_apt_release_string_matches_real_apt_get_simulation() -> None:
    """The origins apt-get -s printed on this machine for the local repositories (recorded)."""
    by_uri = {s.uri: s for s in _sources("debian12_with_local_repos")}
    assert apt_release_string(by_uri["file:/tmp/pprepo/flat"]) == "localhost"
    assert apt_release_string(by_uri["file:/tmp/pprepo/acme"]) == "stable"
    security = next(s for s in by_uri.values() if s.dist == "bookworm-security")
    assert apt_release_string(security) == "Debian-Security:12/oldstable-security"


# --------------------------------------------------------------------------- AptCandidatePolicy


def test_candidate_policy_command_validates_names_and_uses_double_dash() -> None:
    fact = AptCandidatePolicy(["openssl", "libc6:i386", "openssl"])
    assert fact.command() == ["apt-cache", "policy", "--", "openssl", "libc6:i386"]
    for bad in (["-o", "x"], ["bash; rm -rf /"], ["$(id)"], ["Bash"], ["a"]):
        with pytest.raises(UnsafeArgumentError):
            AptCandidatePolicy(bad)
    with pytest.raises(UnsafeArgumentError):
        AptCandidatePolicy([])
    with pytest.raises(UnsafeArgumentError):
        AptCandidatePolicy("bash")


def test_real_candidate_policy() -> None:
    policies = _policies("debian12_openssl_libssl3_bash")
    assert list(policies) == ["openssl", "libssl3", "bash"]
    openssl = policies["openssl"]
    assert (openssl.installed, openssl.candidate) == ("3.0.19-1~deb12u2", "3.0.22-1~deb12u2")
    assert [v.version for v in openssl.versions if v.installed] == ["3.0.19-1~deb12u2"]
    installed_row = next(v for v in openssl.versions if v.installed)
    assert installed_row.priority == 100
    assert installed_row.sources == ()
    (security,) = openssl.sources_of("3.0.22-1~deb12u2")
    assert (security.uri, security.dist) == (
        "http://deb.debian.org/debian-security",
        "bookworm-security",
    )
    assert openssl.sources_of("0.0") == ()


def test_candidate_policy_local_virtual_and_missing() -> None:
    policies = _policies("debian12_local_repos_virtual_and_missing")
    assert "no-such-package" not in policies
    assert policies["mail-transport-agent"] == PackagePolicy(installed=None, candidate=None)
    agent = policies["acme-agent"]
    assert agent.installed is None
    assert agent.candidate == "2.4.1-1"
    assert agent.versions[0].priority == 1001  # the version pin, not the index priority
    (flat,) = agent.sources_of("2.4.1-1")
    assert (flat.uri, flat.dist, flat.component, flat.priority) == (
        "file:/tmp/pprepo/flat",
        "./",
        None,
        500,
    )


def test_candidate_policy_empty_output_is_an_empty_dict() -> None:
    fact = AptCandidatePolicy(["no-such-package"])
    assert fact.parse(_result(fact.command(), "")) == {}


def test_candidate_policy_refuses_a_version_line_outside_the_table() -> None:
    fact = AptCandidatePolicy(["bash"])
    stdout = "bash:\n  Installed: 1.0\n     1.0 100\n  Candidate: 1.0\n  Version table:\n"
    with pytest.raises(FactParseError):
        fact.parse(_result(fact.command(), stdout))


# --------------------------------------------------------------------------- classify_update


def _update(line: str) -> PendingUpdate:
    return parse_inst_line(line)


def test_classify_update_real_debian_security_and_point_release() -> None:
    sources = _sources("debian12_bookworm")
    policies = _policies("debian12_openssl_libssl3_bash")
    libssl = _update(
        "Inst libssl3 [3.0.19-1~deb12u2] "
        "(3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])"
    )
    bash = _update("Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])")
    assert classify_update(libssl, policies["libssl3"], sources).origin is UpdateOrigin.SECURITY
    classified = classify_update(bash, policies["bash"], sources)
    assert classified.origin is UpdateOrigin.POINT_RELEASE
    assert classified.model_dump(exclude={"origin"}) == bash.model_dump(exclude={"origin"})


def test_classify_update_real_local_repositories() -> None:
    """Inst lines apt-get -s printed on this machine for the recorded local repositories."""
    sources = _sources("debian12_with_local_repos")
    policies = _policies("debian12_local_repos_virtual_and_missing")
    agent = _update("Inst acme-agent (2.4.1-1 localhost [amd64])")
    tools = _update("Inst acme-tools (1.0.3 stable [amd64])")
    for update in (agent, tools):
        policy = policies[update.name]
        assert classify_update(update, policy, sources).origin is UpdateOrigin.LOCAL
        # without the per-package policy, the origin strings are matched against the sources
        assert classify_update(update, None, sources).origin is UpdateOrigin.LOCAL
    # nothing at all but apt's "localhost": a flat repository without Release
    assert classify_update(agent, None, []).origin is UpdateOrigin.LOCAL
    assert classify_update(tools, None, []).origin is UpdateOrigin.UNKNOWN


def test_classify_update_security_wins_when_several_suites_offer_the_candidate() -> None:
    sources = _sources("synthetic_ubuntu_jammy_ppa_esm")
    policies = _policies("synthetic_ubuntu_security_and_updates")
    update = PendingUpdate(
        name="openssl",
        arch="amd64",
        installed_version="3.0.2-0ubuntu1.15",
        candidate_version="3.0.2-0ubuntu1.18",
        origins=("Ubuntu:22.04/jammy-updates",),  # as if apt printed only one of them
        security=False,
    )
    assert classify_update(update, policies["openssl"], sources).origin is UpdateOrigin.SECURITY
    assert classify_update(update, None, sources).origin is UpdateOrigin.POINT_RELEASE


def test_classify_update_security_flag_always_wins() -> None:
    update = PendingUpdate(name="x1", candidate_version="2", installed_version="1", security=True)
    local_only = PackagePolicy(installed="1", candidate="2")
    assert classify_update(update, local_only, []).origin is UpdateOrigin.SECURITY


def test_classify_update_unknown_without_any_information() -> None:
    update = PendingUpdate(name="x1", candidate_version="2", installed_version="1", security=False)
    assert classify_update(update, None, []).origin is UpdateOrigin.UNKNOWN


def test_classify_update_index_missing_from_sources_uses_the_line_itself() -> None:
    policies = _policies("synthetic_ubuntu_security_and_updates")
    update = PendingUpdate(
        name="openssl",
        installed_version="3.0.2-0ubuntu1.15",
        candidate_version="3.0.2-0ubuntu1.18",
        security=False,
    )
    assert classify_update(update, policies["openssl"], []).origin is UpdateOrigin.SECURITY


def test_classify_updates_finds_foreign_arch_policies() -> None:
    sources = _sources("synthetic_ubuntu_jammy_ppa_esm")
    policies = _policies("synthetic_ubuntu_security_and_updates")
    updates = [
        PendingUpdate(
            name="libc6",
            arch="i386",
            installed_version=None,
            candidate_version="2.35-0ubuntu3.8",
            security=False,
        ),
        PendingUpdate(
            name="python3.12",
            arch="amd64",
            installed_version="3.12.6-1+jammy1",
            candidate_version="3.12.7-1+jammy1",
            security=False,
        ),
    ]
    assert [u.origin for u in classify_updates(updates, policies, sources)] == [
        UpdateOrigin.POINT_RELEASE,
        UpdateOrigin.THIRD_PARTY,
    ]


# --------------------------------------------------------------------------- AptHolds


def test_apt_holds() -> None:
    fact = AptHolds()
    assert fact.command()[:2] == ["dpkg-query", "-W"]
    assert fact.parse(_result(fact.command(), "")) == []
    out = "hold\tb-pkg\ninstall\tc-pkg\nhold\ta-pkg\nhold\tb-pkg\n"
    assert fact.parse(_result(fact.command(), out)) == ["a-pkg", "b-pkg"]
    with pytest.raises(FactParseError):
        fact.parse(_result(fact.command(), "hold\t-o\n"))
    with pytest.raises(FactParseError):
        fact.parse(_result(fact.command(), "b-pkg\n"))


# --------------------------------------------------------------------------- properties

_TEXT = st.text(alphabet=st.sampled_from(list(" \n\t:/*.,=-abcPRckgfil0123456789()")), max_size=300)
_POLICY_LINES = st.lists(
    st.sampled_from(
        [
            "Package files:",
            " 100 /var/lib/dpkg/status",
            "     release a=now",
            " 500 http://deb.debian.org/debian bookworm/main amd64 Packages",
            "     release v=12,o=Debian,a=stable,n=bookworm,l=Debian,c=main,b=amd64",
            "     origin deb.debian.org",
            " 500 file:/srv/r ./ Packages",
            "     release c=",
            "Pinned packages:",
            "bash:",
            "  Installed: 1.0",
            "  Candidate: (none)",
            "  Version table:",
            " *** 1.0 100",
            "     2.0 500",
            "        100 /var/lib/dpkg/status",
            "        500 http://deb.debian.org/debian bookworm/main amd64 Packages",
            "garbage",
        ]
    ),
    max_size=25,
).map("\n".join)


@given(stdout=st.one_of(_TEXT, _POLICY_LINES))
def test_apt_policy_parsers_raise_only_fact_parse_error(stdout: str) -> None:
    for fact in (AptPolicy(), AptCandidatePolicy(["bash"]), AptHolds()):
        with contextlib.suppress(FactParseError):
            fact.parse(_result(fact.command(), stdout))


@given(stdout=_POLICY_LINES)
def test_every_parsed_source_has_a_kind(stdout: str) -> None:
    try:
        sources = AptPolicy().parse(_result(["apt-cache", "policy"], stdout))
    except FactParseError:
        return
    assert all(s.kind is not UpdateOrigin.UNKNOWN for s in sources)
    assert all(s.uri != "/var/lib/dpkg/status" for s in sources)


_RELEASE_VALUES = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters=","), max_size=12
)


@given(
    values=st.lists(_RELEASE_VALUES, min_size=7, max_size=7),
    keep=st.lists(st.booleans(), min_size=7, max_size=7),
)
def test_parse_release_line_round_trips_apt_relstr(values: list[str], keep: list[bool]) -> None:
    fields = {k: v for k, v, kept in zip("voanlcb", values, keep, strict=True) if kept}
    line = ",".join(f"{k}={v}" for k, v in fields.items())
    assert parse_release_line(line) == fields


def test_candidate_policy_drops_apt_regex_matches() -> None:
    """apt-cache takes a non-existent name with '.' as a regex (recorded on this machine)."""
    data = _fixture("AptCandidatePolicy", "debian12_regex_fallback_filtered")
    assert "bash-completion:" in data["stdout"]
    policies = _policies("debian12_regex_fallback_filtered")
    assert list(policies) == ["bash"]


def test_candidate_policy_keeps_the_native_name_apt_prints_for_name_arch() -> None:
    fact = AptCandidatePolicy(["libssl3:amd64"])
    stdout = "libssl3:\n  Installed: 3.0.19-1~deb12u2\n  Candidate: 3.0.19-1~deb12u2\n"
    stdout += "  Version table:\n *** 3.0.19-1~deb12u2 100\n        100 /var/lib/dpkg/status\n"
    assert list(fact.parse(_result(fact.command(), stdout))) == ["libssl3"]
