"""Turning a message into classified words: normalising, tokenising, phrases, fuzzy matches.

The per-inventory :class:`_Lexicon` (known hosts, tags, packages) is cached; each word becomes an
:class:`_Item` of one :class:`_Kind` (keyword, host, tag, package, version, CVE, run id...).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum, auto
from functools import lru_cache
from typing import Final

from patchpilot.agents.intake.lexicon import (
    _BENIGN_PARTS,
    _KEYWORDS,
    _MAX_PHRASE,
    _MIN_FUZZY_LENGTH,
    _PHRASE_PARTS,
    _PHRASES,
    _PKG_INTRO,
    _TAG_SYNONYMS,
    DEFAULT_TAGS,
    FUZZY_CUTOFF,
    MAX_TOKENS,
    _Cat,
)

_TOKEN_RE: Final = re.compile(r"[^\s,]+|,")
_CLEAN_RE: Final = re.compile(r"[a-z0-9][a-z0-9.+:~=_-]*")
# Only sentence punctuation is trimmed; shell metacharacters ($ ` * | ; inside a word...) make
# the word unrecognisable, so "web-*" or "1.1.0;reboot" are never read as "web" or "1.1.0".
_LEAD_STRIP: Final = "\"'([{<-"
_TRAIL_STRIP: Final = ".,;:!?\"')]}>"
_RUN_ID_RE: Final = re.compile(r"\d{8}t\d{6}z-[0-9a-f]{6}")
_CVE_TEXT_RE: Final = re.compile(r"\bcve[\s_-]?(\d{4})[\s_-]+(\d{4,7})\b", re.IGNORECASE)
_CVE_RE: Final = re.compile(r"cve-\d{4}-\d{4,7}")
_VERSION_RE: Final = re.compile(r"v?\d[a-z0-9.+:~_-]*")
_NUMBER_RE: Final = re.compile(r"\d+")
_CLOCK_RE: Final = re.compile(r"\d{1,2}(?::\d{2})?(?:am|pm|h)|\d{1,2}:\d{2}")
_HOST_SHAPE_RE: Final = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_]?\d+(?:\.[a-z0-9.-]+)?")
_DIGITS_RE: Final = re.compile(r"\d+")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _Kind(Enum):
    KW = auto()
    HOST = auto()
    TAG = auto()
    PKG = auto()
    PIN = auto()
    CVE = auto()
    RUNID = auto()
    VERSION = auto()
    NUMBER = auto()
    WORD = auto()
    WEIRD = auto()


@dataclass(frozen=True, slots=True)
class _Item:
    """One word (or merged phrase) of the message, classified."""

    kind: _Kind
    value: str
    raw: str
    start: int
    end: int
    cat: _Cat | None = None
    payload: str = ""
    fuzzy: bool = False
    version: str = ""


@dataclass(frozen=True, slots=True)
class _Word:
    low: str
    raw: str
    start: int
    end: int
    clean: bool
    fuzzy: bool = False


class _Lexicon:
    """The vocabulary of one call: keywords plus the caller's hosts, tags and packages."""

    def __init__(
        self, hosts: tuple[str, ...], tags: tuple[str, ...], packages: tuple[str, ...]
    ) -> None:
        self.has_hosts = bool(hosts)
        self.has_tags = bool(tags)
        self.has_packages = bool(packages)
        self.hosts: dict[str, str] = {h.lower(): h for h in hosts}
        shorts: dict[str, list[str]] = {}
        for host in hosts:
            short = host.split(".", 1)[0].lower()
            if short != host.lower():
                shorts.setdefault(short, []).append(host)
        for short, owners in shorts.items():
            if len(owners) == 1 and short not in self.hosts:
                self.hosts[short] = owners[0]
        self.tags: dict[str, str] = {t.lower(): t for t in (tags or DEFAULT_TAGS)}
        for alias, tag in _TAG_SYNONYMS.items():
            if tag in self.tags and alias not in self.tags:
                self.tags[alias] = self.tags[tag]
        self.packages: dict[str, str] = {p.lower(): p for p in packages}
        fuzzy_targets: dict[str, tuple[str, str]] = {}
        for word in (*_KEYWORDS, *_PHRASE_PARTS):
            if len(word) >= _MIN_FUZZY_LENGTH and _KEYWORDS.get(word, (None,))[0] is not _Cat.STOP:
                fuzzy_targets.setdefault(word, ("kw", word))
        entities: tuple[tuple[str, dict[str, str]], ...] = (
            ("host", self.hosts),
            ("tag", self.tags),
            ("pkg", self.packages),
        )
        for kind, names in entities:
            for name in names:
                fuzzy_targets.setdefault(name, (kind, name))
        self._by_initial: dict[str, list[str]] = {}
        for word in fuzzy_targets:
            self._by_initial.setdefault(word[0], []).append(word)
        self._cache: dict[str, str | None] = {}

    def known(self, low: str) -> bool:
        """True when ``low`` is a keyword, phrase part, host, tag or package as written."""
        return (
            low in _KEYWORDS
            or low in _PHRASE_PARTS
            or low in self.hosts
            or low in self.tags
            or low in self.packages
        )

    def correct(self, low: str) -> str | None:
        """The vocabulary word ``low`` is probably a typo of, or None (ambiguous or no match)."""
        if low in self._cache:
            return self._cache[low]
        result: str | None = None
        if len(low) >= _MIN_FUZZY_LENGTH and not low[0].isdigit():
            digits = _DIGITS_RE.findall(low)
            candidates = [
                w for w in self._by_initial.get(low[0], ()) if _DIGITS_RE.findall(w) == digits
            ]
            close = difflib.get_close_matches(low, candidates, n=2, cutoff=FUZZY_CUTOFF)
            if len(close) == 1:
                result = close[0]
            elif len(close) == 2:
                first, second = (difflib.SequenceMatcher(None, low, w).ratio() for w in close)
                result = close[0] if first - second > 0.02 else None
        if len(self._cache) < 4096:
            self._cache[low] = result
        return result


@lru_cache(maxsize=16)
def _lexicon(hosts: tuple[str, ...], tags: tuple[str, ...], packages: tuple[str, ...]) -> _Lexicon:
    return _Lexicon(hosts, tags, packages)


# --------------------------------------------------------------------------- tokenising


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    text = text.replace("\u201d", '"').replace("\u2013", "-").replace("\u2014", "-")
    text = _CONTROL_RE.sub(" ", text)
    return _CVE_TEXT_RE.sub(lambda m: f"CVE-{m.group(1)}-{m.group(2)}", text)


def _tokenise(text: str, lex: _Lexicon) -> list[_Word]:
    words: list[_Word] = []
    for match in _TOKEN_RE.finditer(text):
        if len(words) >= MAX_TOKENS:
            break
        raw = match.group().lstrip(_LEAD_STRIP).rstrip(_TRAIL_STRIP)
        if not raw:
            if match.group() in {"&", "=", ","}:
                raw = match.group()
            else:
                continue
        start = match.start() + (len(match.group()) - len(match.group().lstrip(_LEAD_STRIP)))
        low = raw.lower()
        if low.endswith("'s"):
            low = low[:-2]
        if "'" in low and low.replace("'", "").isalpha():
            low = low.replace("'", "")
        clean = bool(_CLEAN_RE.fullmatch(low)) or low in {"&", "=", "==", ","}
        fuzzy = False
        if clean and not lex.known(low) and not _VERSION_RE.fullmatch(low) and "=" not in low:
            corrected = lex.correct(low)
            if corrected is not None:
                low, fuzzy = corrected, True
        words.append(_Word(low, raw, start, start + len(raw), clean, fuzzy))
    return _merge_phrases(words)


def _merge_phrases(words: list[_Word]) -> list[_Word]:
    merged: list[_Word] = []
    i = 0
    while i < len(words):
        for size in range(min(_MAX_PHRASE, len(words) - i), 1, -1):
            key = tuple(w.low for w in words[i : i + size])
            if key in _PHRASES:
                part = words[i : i + size]
                merged.append(
                    _Word(
                        _PHRASES[key],
                        " ".join(w.raw for w in part),
                        part[0].start,
                        part[-1].end,
                        clean=True,
                        fuzzy=any(w.fuzzy for w in part),
                    )
                )
                i += size
                break
        else:
            merged.append(words[i])
            i += 1
    return merged


def _classify(word: _Word, lex: _Lexicon, previous: _Item | None) -> _Item:
    low, raw, start, end = word.low, word.raw, word.start, word.end
    if not word.clean:
        return _Item(_Kind.WEIRD, raw[:40], raw, start, end)
    if _RUN_ID_RE.fullmatch(low):
        return _Item(_Kind.RUNID, low, raw, start, end)
    if _CVE_RE.fullmatch(low):
        return _Item(_Kind.CVE, low.upper(), raw, start, end)
    if "=" in low and low not in {"=", "=="}:
        name = low.partition("=")[0]
        version = raw.partition("=")[2].removeprefix("=")  # versions are case-sensitive
        if name in lex.packages or not lex.has_packages:
            return _Item(_Kind.PIN, lex.packages.get(name, name), raw, start, end, version=version)
        corrected = lex.correct(name)
        if corrected is not None and corrected in lex.packages:
            pkg = lex.packages[corrected]
            return _Item(_Kind.PIN, pkg, raw, start, end, version=version, fuzzy=True)
        return _Item(_Kind.PIN, name, raw, start, end, version=version, payload="unknown")
    after_verb = previous is not None and previous.cat in _PKG_INTRO
    if low in lex.packages and (after_verb or low not in _KEYWORDS):
        return _Item(_Kind.PKG, lex.packages[low], raw, start, end, fuzzy=word.fuzzy)
    if low in _KEYWORDS:
        cat, payload = _KEYWORDS[low]
        return _Item(_Kind.KW, low, raw, start, end, cat=cat, payload=payload, fuzzy=word.fuzzy)
    if low in lex.hosts:
        return _Item(_Kind.HOST, lex.hosts[low], raw, start, end, fuzzy=word.fuzzy)
    if low in lex.tags:
        return _Item(_Kind.TAG, lex.tags[low], raw, start, end, fuzzy=word.fuzzy)
    if low.endswith("s") and low[:-1] in lex.tags:
        return _Item(_Kind.TAG, lex.tags[low[:-1]], raw, start, end, fuzzy=word.fuzzy)
    if _CLOCK_RE.fullmatch(low):
        return _Item(_Kind.KW, low, raw, start, end, cat=_Cat.TIME_BAD)
    if _NUMBER_RE.fullmatch(low):
        return _Item(_Kind.NUMBER, low, raw, start, end)
    if _VERSION_RE.fullmatch(low):
        # Keep the case as typed (Debian versions are case-sensitive). They start with a digit,
        # so "v1.1.0" can only mean 1.1.0.
        version = raw[1:] if raw[:1] in {"v", "V"} else raw
        return _Item(_Kind.VERSION, version, raw, start, end)
    if low in _BENIGN_PARTS:
        return _Item(_Kind.KW, low, raw, start, end, cat=_Cat.STOP)
    return _Item(_Kind.WORD, low, raw, start, end)
