"""``/etc/os-release`` (falling back to ``/usr/lib/os-release``) as an :class:`OSInfo`."""

from __future__ import annotations

import re
from typing import ClassVar, Final

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult, OSFamily, OSInfo
from patchpilot.tools.facts.base import Fact

__all__ = ["OsRelease", "family_for", "parse_os_release"]

# os-release(5): /etc/os-release takes precedence; /usr/lib/os-release is the fallback.
_OS_RELEASE_SCRIPT: Final = (
    "if [ -r /etc/os-release ]; then cat /etc/os-release; else cat /usr/lib/os-release; fi"
)

_KEY_RE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")

# Characters a backslash escapes inside double quotes (shell rules, as os-release(5) requires).
_DQUOTE_ESCAPABLE: Final = frozenset('"\\`$')

DEBIAN_IDS: Final = frozenset(
    {
        "debian",
        "ubuntu",
        "raspbian",
        "linuxmint",
        "pop",
        "kali",
        "elementary",
        "zorin",
        "devuan",
        "neon",
        "pureos",
        "parrot",
    }
)
RHEL_IDS: Final = frozenset(
    {
        "rhel",
        "centos",
        "fedora",
        "rocky",
        "almalinux",
        "ol",
        "amzn",
        "scientific",
        "eurolinux",
        "circle",
        "navy",
        "cloudlinux",
        "virtuozzo",
    }
)
ALPINE_IDS: Final = frozenset({"alpine"})


def family_for(os_id: str, id_like: tuple[str, ...] = ()) -> OSFamily:
    """Map ``ID`` then each ``ID_LIKE`` entry (in order) to an :class:`OSFamily`.

    SUSE-family systems (``ID_LIKE="suse opensuse"``), Arch and others map to ``unknown``:
    their package managers and advisories are not supported.

    Args:
        os_id: the ``ID`` value.
        id_like: the ``ID_LIKE`` values, closest relative first.

    Returns:
        The family, ``OSFamily.UNKNOWN`` when none matches.
    """
    for candidate in (os_id, *id_like):
        key = candidate.lower()
        if key in DEBIAN_IDS:
            return OSFamily.DEBIAN
        if key in RHEL_IDS:
            return OSFamily.RHEL
        if key in ALPINE_IDS:
            return OSFamily.ALPINE
    return OSFamily.UNKNOWN


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end != -1 else len(text)]


def _parse_double_quoted(text: str, start: int, out: list[str], fact: str) -> int:
    """Append the content of the double-quoted string opening at ``start``; return its end."""
    n = len(text)
    i = start + 1
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _DQUOTE_ESCAPABLE:
                out.append(nxt)
            elif nxt != "\n":  # backslash-newline is a line continuation
                out.append("\\" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    raise FactParseError(fact, "unterminated double quote", line=_line_at(text, start))


def _parse_value(text: str, pos: int, fact: str) -> tuple[str, int]:
    """Parse one shell-style value starting at ``pos``; return it and the position after it.

    Follows systemd's env-file reader (what consumes os-release in practice): single quotes are
    literal; inside double quotes a backslash escapes ``" \\ ` $`` and a newline, and is kept
    before any other character; unquoted, a backslash escapes the next character; quoted and
    unquoted parts concatenate; trailing unquoted whitespace is dropped.
    """
    out: list[str] = []
    trailing_ws = 0  # unquoted whitespace at the end of ``out``, dropped at end of line
    n = len(text)
    i = pos
    while i < n:
        c = text[i]
        if c == "\n":
            i += 1
            break
        if c == "'":
            end = text.find("'", i + 1)
            if end == -1:
                raise FactParseError(fact, "unterminated single quote", line=_line_at(text, i))
            out.append(text[i + 1 : end])
            trailing_ws, i = 0, end + 1
        elif c == '"':
            trailing_ws, i = 0, _parse_double_quoted(text, i, out, fact)
        elif c == "\\":
            if i + 1 < n and text[i + 1] != "\n":
                out.append(text[i + 1])
                trailing_ws = 0
            i += 2
        else:
            trailing_ws = trailing_ws + 1 if c in " \t\r" else 0
            out.append(c)
            i += 1
    value = "".join(out)
    if trailing_ws:
        value = value[:-trailing_ws]
    return value, i


def parse_os_release(text: str, *, fact: str = "OsRelease") -> dict[str, str]:
    """Parse os-release(5) text into a ``KEY -> value`` mapping (later keys win).

    Args:
        text: the file's content.
        fact: fact name used in errors.

    Returns:
        The assignments, unquoted and unescaped.

    Raises:
        FactParseError: a non-comment line is not ``KEY=value`` or a quote is unterminated.
    """
    values: dict[str, str] = {}
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c in "#;":
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        match = _KEY_RE.match(text, i)
        if match is None:
            raise FactParseError(fact, "expected a KEY=value assignment", line=_line_at(text, i))
        value, i = _parse_value(text, match.end(), fact)
        values[match.group(1)] = value
    return values


class OsRelease(Fact[OSInfo]):
    """The host's operating system from ``/etc/os-release`` (``/usr/lib/os-release`` fallback).

    Returns:
        :class:`~patchpilot.core.models.OSInfo` with ``id``, ``id_like`` (tuple, from the
        space-separated ``ID_LIKE``), ``name``, ``pretty_name``, ``version_id`` and
        ``version_codename`` (``None`` when absent or empty) and ``family`` derived by
        :func:`family_for`. Example:
        ``OSInfo(id="rocky", id_like=("rhel", "centos", "fedora"), version_id="9.3",
        family=OSFamily.RHEL, ...)``.

    Raises:
        FactParseError: malformed lines, or no ``ID`` (empty or garbage output).
    """

    name: ClassVar[str] = "OsRelease"

    def command(self) -> list[str]:
        """Return ``sh -c`` with a constant script printing whichever os-release file exists."""
        return ["sh", "-c", _OS_RELEASE_SCRIPT]

    def parse(self, result: CommandResult) -> OSInfo:
        """Parse the os-release text; see the class docstring for the shape."""
        self.check_result(result)
        values = parse_os_release(result.stdout, fact=self.name)
        os_id = values.get("ID", "").strip()
        if not os_id:
            raise FactParseError(self.name, "no ID= in os-release output")
        id_like = tuple(values.get("ID_LIKE", "").split())
        return OSInfo(
            id=os_id,
            id_like=id_like,
            name=values.get("NAME", ""),
            pretty_name=values.get("PRETTY_NAME", ""),
            version_id=values.get("VERSION_ID") or None,
            version_codename=values.get("VERSION_CODENAME") or None,
            family=family_for(os_id, id_like),
        )
