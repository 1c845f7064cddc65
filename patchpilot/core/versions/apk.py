"""Alpine (apk-tools) version ordering: ``digit{.digit}...{letter}{_suf{#}}...{~hash}{-r#}``.

A port of apk-tools v3 ``src/version.c`` (``token_first``/``token_next``/``token_cmp``,
``apk_version_validate``, ``apk_version_compare`` and ``apk_version_match``):

* the first token is a number (``TOKEN_INITIAL_DIGIT``) compared numerically;
* further ``.digits`` tokens compare numerically, unless either starts with ``0``, in which
  case they compare as strings (Gentoo rule: ``1.01 < 1.1``, ``8.2.0 < 8.2.001``);
* one lowercase letter may follow a digit token;
* suffixes ``_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p``, each with
  an optional number;
* ``~hex`` is a commit hash (lowercase hex, compared as a string) and ``-rN`` the revision.

Numbers are unsigned 64-bit in apk and wrap around the same way here. When two versions agree
on all common tokens, the one that continues is newer, except when it continues with a
pre-release suffix (``1.0_rc1 < 1.0``).

:func:`compare` is ``apk_version_compare()`` for *any* string, as apk orders what
``apk_version_validate()`` refuses: token by token up to the first invalid token, where the
comparison stops (``1.0a1`` and ``1.0a2`` are equal, both lower than ``1.0a``; ``23_foo`` is
``23`` followed by an invalid token). Only the class no ecosystem orders (see :mod:`._common`:
empty, control characters, over-long...) raises
:class:`~patchpilot.core.errors.UnparseableVersionError`. :func:`compare_unchecked` is the same
comparison without even that check; :func:`validate` is ``apk_version_validate()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, TypeAlias

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.versions._common import check_common

__all__ = [
    "ECOSYSTEM",
    "ApkKey",
    "check",
    "compare",
    "compare_unchecked",
    "is_valid",
    "match",
    "sort_key",
    "validate",
]

ECOSYSTEM: Final = "alpine"

# enum PARTS, in apk's order (the order is the semantics).
TOKEN_INITIAL_DIGIT: Final = 0
TOKEN_DIGIT: Final = 1
TOKEN_LETTER: Final = 2
TOKEN_SUFFIX: Final = 3
TOKEN_SUFFIX_NO: Final = 4
TOKEN_COMMIT_HASH: Final = 5
TOKEN_REVISION_NO: Final = 6
TOKEN_END: Final = 7
TOKEN_INVALID: Final = 8

SUFFIX_INVALID: Final = 0
SUFFIX_NONE: Final = 5
_SUFFIXES: Final = {
    "alpha": 1,
    "beta": 2,
    "pre": 3,
    "rc": 4,
    "cvs": 6,
    "svn": 7,
    "git": 8,
    "hg": 9,
    "p": 10,
}

# apk_version.h result bits.
VERSION_EQUAL: Final = 1
VERSION_LESS: Final = 2
VERSION_GREATER: Final = 4
VERSION_FUZZY: Final = 8
_DEPMASK_ANY: Final = VERSION_EQUAL | VERSION_LESS | VERSION_GREATER

_DIGITS: Final = frozenset("0123456789")
_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")  # APK_CTYPE_VERSION_SUFFIX
_HEX: Final = frozenset("0123456789abcdef")  # APK_CTYPE_HEXDIGIT (lowercase only)
_U64: Final = 1 << 64
_VALID: Final = re.compile(
    r"[0-9]+(?:\.[0-9]+)*[a-z]?"
    r"(?:_(?:alpha|beta|pre|rc|cvs|svn|git|hg|p)[0-9]*)*"
    r"(?:~[0-9a-f]+)?(?:-r[0-9]+)?"
)

_Element: TypeAlias = tuple[int, int, str]
ApkKey: TypeAlias = tuple[_Element, ...]
"""The sort key of an Alpine version: one ``(rank, number, text)`` per token, then the end."""


@dataclass(slots=True)
class _Token:
    """``struct token_state``: the current token and the position just after it."""

    token: int = TOKEN_INITIAL_DIGIT
    suffix: int = SUFFIX_INVALID
    number: int = 0
    value: str = ""
    pos: int = 0


def _uint64(digits: str) -> int:
    """``apk_blob_pull_uint(b, 10)``: the decimal value modulo 2**64 (no int() size limit)."""
    value = 0
    for start in range(0, len(digits), 1000):
        chunk = digits[start : start + 1000]
        value = (value * 10 ** len(chunk) + int(chunk)) % _U64
    return value


def _span(s: str, start: int, allowed: frozenset[str]) -> int:
    """``apk_blob_spn()``: the end of the run of ``allowed`` characters from ``start``."""
    end = start
    while end < len(s) and s[end] in allowed:
        end += 1
    return end


def _parse_digits(t: _Token, s: str) -> None:
    start = t.pos
    end = _span(s, start, _DIGITS)
    t.value = s[start:end]
    t.number = _uint64(t.value) if t.value else 0
    t.pos = end
    if not t.value:
        t.token = TOKEN_INVALID


def _token_first(s: str) -> _Token:
    t = _Token()
    _parse_digits(t, s)
    return t


def _suffix_value(suffix: str) -> int:
    return _SUFFIXES.get(suffix, SUFFIX_INVALID)


def _next_digits(t: _Token, s: str, c: str) -> None:
    if c == ".":
        if t.token > TOKEN_DIGIT:
            t.token = TOKEN_INVALID
            return
        t.pos += 1
    if t.token in (TOKEN_INITIAL_DIGIT, TOKEN_DIGIT):
        t.token = TOKEN_DIGIT
    elif t.token == TOKEN_SUFFIX:
        t.token = TOKEN_SUFFIX_NO
    else:
        t.token = TOKEN_INVALID
        return
    _parse_digits(t, s)


def _next_suffix(t: _Token, s: str) -> None:
    if t.token > TOKEN_SUFFIX_NO:
        t.token = TOKEN_INVALID
        return
    end = _span(s, t.pos + 1, _LOWER)
    t.value = s[t.pos + 1 : end]
    t.pos = end
    t.suffix = _suffix_value(t.value)
    t.token = TOKEN_INVALID if t.suffix == SUFFIX_INVALID else TOKEN_SUFFIX


def _next_hash(t: _Token, s: str) -> None:
    if t.token >= TOKEN_COMMIT_HASH:
        t.token = TOKEN_INVALID
        return
    end = _span(s, t.pos + 1, _HEX)
    t.value = s[t.pos + 1 : end]
    t.pos = end
    t.token = TOKEN_COMMIT_HASH if t.value else TOKEN_INVALID


def _next_revision(t: _Token, s: str) -> None:
    if t.token >= TOKEN_REVISION_NO or not s.startswith("-r", t.pos):
        t.token = TOKEN_INVALID
        return
    t.pos += 2
    t.token = TOKEN_REVISION_NO
    _parse_digits(t, s)


def _token_next(t: _Token, s: str) -> None:
    """``token_next()``: the token type comes from the first character; each type may only
    follow certain others."""
    if t.pos >= len(s):
        t.token = TOKEN_END
        return
    c = s[t.pos]
    if c in _LOWER:
        if t.token > TOKEN_DIGIT:
            t.token = TOKEN_INVALID
            return
        t.value = c
        t.token = TOKEN_LETTER
        t.pos += 1
    elif c == "." or c in _DIGITS:
        _next_digits(t, s, c)
    elif c == "_":
        _next_suffix(t, s)
    elif c == "~":
        _next_hash(t, s)
    elif c == "-":
        _next_revision(t, s)
    else:
        t.token = TOKEN_INVALID


def _token_cmp(ta: _Token, tb: _Token) -> int:
    """``token_cmp()``: both tokens have the same type."""
    kind = ta.token
    if kind == TOKEN_DIGIT and (ta.value[0] == "0" or tb.value[0] == "0"):
        # Either has a leading zero: raw string comparison, as in the Gentoo spec.
        a_text, b_text = ta.value, tb.value
        if a_text == b_text:
            return VERSION_EQUAL
        return VERSION_LESS if a_text < b_text else VERSION_GREATER
    if kind in (TOKEN_DIGIT, TOKEN_INITIAL_DIGIT, TOKEN_SUFFIX_NO, TOKEN_REVISION_NO):
        a, b = ta.number, tb.number
    elif kind == TOKEN_LETTER:
        a, b = ord(ta.value), ord(tb.value)
    elif kind == TOKEN_SUFFIX:
        a, b = ta.suffix, tb.suffix
    else:
        a_text, b_text = ta.value, tb.value
        if a_text == b_text:
            return VERSION_EQUAL
        return VERSION_LESS if a_text < b_text else VERSION_GREATER
    if a < b:
        return VERSION_LESS
    if a > b:
        return VERSION_GREATER
    return VERSION_EQUAL


def _compare_mask(a: str, b: str, *, fuzzy: bool) -> int:
    """``apk_version_compare_fuzzy()``: one of the VERSION_* bits."""
    ta, tb = _token_first(a), _token_first(b)
    while ta.token == tb.token and ta.token < TOKEN_END:
        r = _token_cmp(ta, tb)
        if r != VERSION_EQUAL:
            return r
        _token_next(ta, a)
        _token_next(tb, b)

    # Both have TOKEN_END or TOKEN_INVALID next? Or fuzzy matching the prefix.
    if ta.token == tb.token:
        return VERSION_EQUAL
    if tb.token == TOKEN_END and fuzzy:
        return VERSION_EQUAL

    # The leading components are equal: the non-terminating version is greater unless it
    # continues with a pre-release suffix.
    if ta.token == TOKEN_SUFFIX and ta.suffix < SUFFIX_NONE:
        return VERSION_LESS
    if tb.token == TOKEN_SUFFIX and tb.suffix < SUFFIX_NONE:
        return VERSION_GREATER
    if ta.token > tb.token:
        return VERSION_LESS
    if tb.token > ta.token:
        return VERSION_GREATER
    return VERSION_EQUAL


_RESULT: Final = {VERSION_LESS: -1, VERSION_EQUAL: 0, VERSION_GREATER: 1}


def compare_unchecked(a: str, b: str) -> int:
    """Compare like ``apk_version_compare()``, without validating (defined for any string).

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1.
    """
    return _RESULT[_compare_mask(a, b, fuzzy=False)]


def _result_mask(op: str) -> int:
    """``apk_version_result_mask_blob()``: 0 for an unknown operator."""
    mask = 0
    for c in op:
        if c == "<":
            mask |= VERSION_LESS
        elif c == ">":
            mask |= VERSION_GREATER
        elif c == "=":
            mask |= VERSION_EQUAL
        elif c == "~":
            mask |= VERSION_FUZZY | VERSION_EQUAL
        else:
            return 0
    return mask


def match(a: str, op: str, b: str) -> bool:
    """Tell whether ``a op b`` holds, as ``apk_version_match()`` (apk's dependency operators).

    ``op`` is one of ``<``, ``<=``, ``=``, ``>=``, ``>``, ``~`` (fuzzy: ``a`` starts with the
    tokens of ``b``, e.g. ``3.6.9 ~ 3.6``), ``<~`` or ``>~``; a leading ``!`` negates the result
    (as the conflict marker and apk's test data do). Versions are not validated, as in apk.

    Args:
        a: The candidate version.
        op: The operator.
        b: The version in the constraint.

    Returns:
        True if the relation holds.

    Raises:
        ValueError: If ``op`` is not an apk version operator.
    """
    negate = op.startswith("!")
    mask = _result_mask(op[1:] if negate else op)
    if mask == 0:
        raise ValueError(f"not an apk version operator: {op!r}")
    ok = (mask & _DEPMASK_ANY) == _DEPMASK_ANY or bool(
        _compare_mask(a, b, fuzzy=bool(mask & VERSION_FUZZY)) & mask
    )
    return ok != negate


def _tokens(version: str) -> tuple[list[_Token], int]:
    """All tokens up to (excluding) the first END or INVALID, and that final token type."""
    out: list[_Token] = []
    t = _token_first(version)
    while t.token < TOKEN_END:
        out.append(_Token(t.token, t.suffix, t.number, t.value, t.pos))
        _token_next(t, version)
    return out, t.token


def _why_invalid(version: str) -> str:
    out, _ = _tokens(version)
    pos = out[-1].pos if out else 0
    return f"unexpected {version[pos:]!r} at offset {pos}"


def validate(version: str) -> str:
    """Return ``version`` unchanged if ``apk_version_validate()`` accepts it.

    Args:
        version: The version, e.g. ``"1.2.3_rc1-r0"``.

    Returns:
        The same string.

    Raises:
        InvalidVersionError: If apk would reject it.
    """
    check_common(ECOSYSTEM, version)
    if not _is_valid_str(version):
        raise InvalidVersionError(ECOSYSTEM, version, _why_invalid(version))
    return version


@lru_cache(maxsize=4096)
def _is_valid_str(version: str) -> bool:
    # _VALID is apk_version_validate()'s token grammar as one regex (much faster than the
    # tokenizer); the property tests check both agree on arbitrary strings.
    return _VALID.fullmatch(version) is not None


def _is_valid_by_tokens(version: str) -> bool:
    """``apk_version_validate()`` itself: tokenize until the end or an invalid token."""
    return bool(version) and _tokens(version)[1] == TOKEN_END


def is_valid(version: str) -> bool:
    """Tell whether :func:`validate` accepts ``version``.

    Args:
        version: The version string.

    Returns:
        True if valid.
    """
    try:
        validate(version)
    except InvalidVersionError:
        return False
    return True


def check(version: str) -> str:
    """Return ``version`` unchanged if apk can order it (any string but the unparseable class).

    Args:
        version: The version string.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: If it is blank, over-long, not a string, or contains a
            control character or an unpaired surrogate.
    """
    return check_common(ECOSYSTEM, version)


def compare(a: str, b: str) -> int:
    """Compare two Alpine versions exactly as ``apk_version_compare()`` does, valid or not.

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        UnparseableVersionError: If either version is in the unparseable class (see
            :func:`check`).
    """
    check_common(ECOSYSTEM, a)
    check_common(ECOSYSTEM, b)
    return _RESULT[_compare_mask(a, b, fuzzy=False)]


# Where two versions first differ in token *type*, apk orders them: a pre-release suffix lowest,
# then the higher token type is the older version (so an invalid token sorts below the end of
# the string). Rank encodes that; within one type the (number, text) pair orders as
# token_cmp() does.
_RANK_PRE_SUFFIX: Final = 0
_RANK: Final = {
    TOKEN_INVALID: 1,
    TOKEN_END: 2,
    TOKEN_REVISION_NO: 3,
    TOKEN_COMMIT_HASH: 4,
    TOKEN_SUFFIX_NO: 5,
    TOKEN_SUFFIX: 6,  # post-release suffixes
    TOKEN_LETTER: 7,
    # TOKEN_DIGIT: 8 (leading zero, string order) or 9 (numeric order), see sort_key()
    TOKEN_INITIAL_DIGIT: 10,
}


def sort_key(version: str) -> ApkKey:
    """A key whose ordering is exactly :func:`compare`'s (equal keys <=> compare() == 0).

    Args:
        version: A version apk can order (see :func:`check`).

    Returns:
        One ``(rank, number, text)`` element per token, then the end (or the invalid token
        where apk stops comparing).

    Raises:
        UnparseableVersionError: If the version is in the unparseable class.
    """
    check_common(ECOSYSTEM, version)
    return _sort_key(version)


@lru_cache(maxsize=4096)
def _sort_key(version: str) -> ApkKey:
    tokens, last = _tokens(version)
    key: list[_Element] = []
    for t in tokens:
        if t.token == TOKEN_DIGIT:
            # A leading zero means string order, and every such string sorts below every
            # number without one ("0..." < "1"...), so two ranks keep the order total.
            if t.value[0] == "0":
                key.append((8, 0, t.value))
            else:
                key.append((9, t.number, ""))
        elif t.token == TOKEN_SUFFIX:
            rank = _RANK_PRE_SUFFIX if t.suffix < SUFFIX_NONE else _RANK[TOKEN_SUFFIX]
            key.append((rank, t.suffix, ""))
        elif t.token == TOKEN_LETTER:
            key.append((_RANK[TOKEN_LETTER], ord(t.value), ""))
        elif t.token == TOKEN_COMMIT_HASH:
            key.append((_RANK[TOKEN_COMMIT_HASH], 0, t.value))
        else:
            key.append((_RANK[t.token], t.number, ""))
    key.append((_RANK[last], 0, ""))
    return tuple(key)
