"""Layered normalization of message text with an offset map back to the original.

Layers, each derived from the previous one:

* ``normalized`` — per character: NFKC (full width, circled and styled digits), diacritics dropped,
  zero-width / format characters and emoji removed, case folded, a few homoglyphs mapped to
  Latin; then traditional → simplified Chinese with OpenCC.
* ``skeleton`` — separators (spaces, punctuation that is not a clause boundary, symbols) removed
  so ``保-本`` and ``稳 赚`` become ``保本`` / ``稳赚``. Clause punctuation (``。，！？；、`` and
  newlines) stays a hard boundary. Between two digits a joiner (``. : - /``) is kept, and a
  space is dropped only between single digits (``6 0 0 5 1 9``), so ``600519 100股`` stays apart.
* ``digits`` (``Normalized.text``) — Chinese numerals rewritten as Arabic digits
  (``三千五百点`` → ``3500点``, ``百分之百`` → ``100%``) and thousands commas removed.

Every character of every layer maps back to a span of the original string, so findings are
reported in original offsets whatever layer they were found on.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

import opencc

__all__ = ["BOUNDARIES", "Normalized", "canonical", "normalize"]

# Clause boundaries as they appear after NFKC (full-width ，！？； become ASCII).
BOUNDARIES = frozenset("。!?;,、\n\r")
SENTENCE_ENDS = frozenset("。!?;\n\r")

_JOINERS = frozenset(".:-/")
_KEPT_SYMBOLS = frozenset("%+$¥€£‰₩₹¢")
# A maximal run of separators on the normalized layer (everything that is not a letter, a digit,
# a kept symbol or a clause boundary).
_SEP_RUN = re.compile(r"(?:[^\w%+$¥€£‰₩₹¢。!?;,、\n\r]|_)+")
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_HOMOGLYPHS = {
    # Cyrillic and Greek letters that render like Latin ones (after case folding).
    "а": "a",
    "е": "e",
    "о": "o",
    "р": "p",
    "с": "c",
    "у": "y",
    "х": "x",
    "і": "i",
    "ј": "j",
    "ѕ": "s",
    "ԁ": "d",
    "ο": "o",
    "α": "a",
    "ε": "e",
    "ι": "i",
    "κ": "k",
    "ν": "v",
    "ρ": "p",
    "τ": "t",
    "υ": "u",
    # Rare CJK variants used to dodge keyword filters.
    "夲": "本",
    "賺": "赚",
}
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF),
    (0x2600, 0x27BF),
    (0x2B00, 0x2BFF),
    (0x231A, 0x23FF),
    (0xE0000, 0xE007F),
)


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    """The OpenCC traditional→simplified converter, loaded on first use (not at import)."""
    return opencc.OpenCC("t2s")


_ZH_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "壹": 1,
    "二": 2,
    "贰": 2,
    "两": 2,
    "三": 3,
    "叁": 3,
    "四": 4,
    "肆": 4,
    "五": 5,
    "伍": 5,
    "六": 6,
    "陆": 6,
    "七": 7,
    "柒": 7,
    "八": 8,
    "捌": 8,
    "九": 9,
    "玖": 9,
}
_ZH_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_ZH_BIG = {"万": 10**4, "亿": 10**8}
_DIGIT_CHARS = "".join(_ZH_DIGITS)
_UNIT_CHARS = "".join(_ZH_UNITS) + "".join(_ZH_BIG)
# A numeral run starts with a digit (Chinese or Arabic) or 十; units only count after that.
_NUMERAL = re.compile(
    rf"(?<![\d,.])(?P<thousands>\d{{1,3}}(?:,\d{{3}})+)(?![\d,])"
    rf"|(?P<pct>百分之)?(?P<run>(?:[{_DIGIT_CHARS}十拾\d]|(?<=百分之)百)(?:[{_DIGIT_CHARS}{_UNIT_CHARS}\d]|\.(?=\d))*)"
)
_SINGLE_OK = frozenset("点元块倍成%个只股手号日月年天")
_TOKEN = re.compile(rf"\d+(?:\.\d+)?|[{_DIGIT_CHARS}{_UNIT_CHARS}十拾]")


def _is_emoji(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def _fold_char(c: str) -> str:
    """What one original character becomes on the normalized layer ('' to drop it)."""
    cat = unicodedata.category(c)
    if cat in ("Cf", "Mn", "Me", "Cs", "Co") or c in _INVISIBLE:
        return ""
    if cat == "Nd":
        return str(unicodedata.digit(c))
    if cat == "No":
        value = unicodedata.numeric(c, -1.0)
        nfkc = unicodedata.normalize("NFKC", c)
        if value >= 0 and value == int(value) and not any("\u4e00" <= ch <= "\u9fff" for ch in nfkc):
            return str(int(value))
    if _is_emoji(ord(c)):
        return ""
    decomposed = unicodedata.normalize("NFKD", c)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    folded = unicodedata.normalize("NFKC", stripped).casefold()
    return "".join(_HOMOGLYPHS.get(ch, ch) for ch in folded)


@lru_cache(maxsize=65536)
def _t2s_char(c: str) -> str:
    out = _t2s().convert(c)
    return out if len(out) == 1 else c


def _section_value(tokens: list[str]) -> float:
    """Value of a numeral section without 万/亿 (colloquial 三千五 = 3500)."""
    total = 0.0
    num: float | None = None
    last_unit = 0
    zero_seen = False
    for tok in tokens:
        if tok in _ZH_UNITS:
            unit = _ZH_UNITS[tok]
            total += (num if num is not None else 1) * unit
            num, last_unit, zero_seen = None, unit, False
        elif tok in ("零", "〇") and last_unit:
            zero_seen = True
        else:
            value = float(tok) if tok[0].isdigit() else float(_ZH_DIGITS[tok])
            num = value if num is None else num * 10 + value
    if num is not None:
        total += num * (last_unit // 10 if last_unit >= 100 and not zero_seen else 1)
    return total


def _numeral_value(run: str) -> str | None:
    """Arabic rendering of a Chinese numeral run, or None when it is not a number."""
    tokens = _TOKEN.findall(run)
    if "".join(tokens) != run:
        return None
    if not any(t in _ZH_UNITS or t in _ZH_BIG for t in tokens):
        return "".join(t if t[0].isdigit() else str(_ZH_DIGITS[t]) for t in tokens)
    total = 0.0
    section: list[str] = []
    for i, tok in enumerate(tokens):
        if tok in _ZH_BIG:
            value = _section_value(section) if section else 0.0
            total = (total + value) * _ZH_BIG[tok] if tok == "亿" else total + value * _ZH_BIG[tok]
            section = []
            # Colloquial tail after a big unit: 两万五 = 25000.
            rest = tokens[i + 1 :]
            if len(rest) == 1 and rest[0] in _ZH_DIGITS and rest[0] not in ("零", "〇"):
                return _fmt(total + _ZH_DIGITS[rest[0]] * _ZH_BIG[tok] / 10)
        else:
            section.append(tok)
    total += _section_value(section)
    return _fmt(total)


def _fmt(value: float) -> str:
    rounded = round(value)
    return str(rounded) if abs(value - rounded) < 1e-6 else f"{value:.6f}".rstrip("0")


@dataclass(frozen=True, slots=True)
class _Segment:
    d_start: int
    s_start: int
    s_end: int
    identity: bool


@dataclass(slots=True)
class Normalized:
    """A text on all layers; `text` is the most normalized (digit) layer used for matching."""

    original: str
    normalized: str
    skeleton: str
    text: str
    _nmap: list[int] | None
    _smap: list[int] | None
    _segments: list[_Segment] | None
    _seg_starts: list[int]

    def _d_to_s(self, i: int, j: int) -> tuple[int, int]:
        if self._segments is None:
            return i, j
        first = self._segments[bisect_right(self._seg_starts, i) - 1]
        last = self._segments[bisect_right(self._seg_starts, j - 1) - 1]
        s0 = first.s_start + (i - first.d_start) if first.identity else first.s_start
        s1 = last.s_start + (j - last.d_start) if last.identity else last.s_end
        return s0, s1

    def skeleton_span(self, i: int, j: int) -> tuple[int, int]:
        """Skeleton-layer span of the digit-layer span [i, j)."""
        if j <= i:
            return self._d_to_s(i, i + 1)[0], self._d_to_s(i, i + 1)[0]
        return self._d_to_s(i, j)

    def normalized_span(self, i: int, j: int) -> tuple[int, int]:
        """Normalized-layer span of the digit-layer span [i, j)."""
        s0, s1 = self.skeleton_span(i, j)
        if self._smap is None:
            return s0, max(s0, s1)
        if not self._smap:
            return 0, 0
        if s1 <= s0:
            n = self._smap[min(s0, len(self._smap) - 1)]
            return n, n
        return self._smap[s0], self._smap[s1 - 1] + 1

    def span(self, i: int, j: int) -> tuple[int, int]:
        """Original-text span of the digit-layer span [i, j)."""
        n0, n1 = self.normalized_span(i, j)
        return self.normalized_to_original(n0, n1)

    def normalized_to_original(self, n0: int, n1: int) -> tuple[int, int]:
        """Original-text span of the normalized-layer span [n0, n1)."""
        if self._nmap is None:
            return n0, max(n0, n1)
        if not self._nmap:
            return 0, 0
        if n1 <= n0:
            o = self._nmap[min(n0, len(self._nmap) - 1)]
            return o, o
        return self._nmap[n0], self._nmap[n1 - 1] + 1

    def layer(self, i: int, j: int) -> str:
        """The least normalized layer on which text[i:j] appears verbatim at its position."""
        target = self.text[i:j]
        o0, o1 = self.span(i, j)
        if self.original[o0:o1] == target:
            return "raw"
        n0, n1 = self.normalized_span(i, j)
        if self.normalized[n0:n1] == target:
            return "normalized"
        s0, s1 = self.skeleton_span(i, j)
        if self.skeleton[s0:s1] == target:
            return "skeleton"
        return "digits"


# Translation table of every character seen so far (ord → folded string) and the characters whose
# folding is not one-to-one (they need the slow path that builds an explicit offset map).
_TABLE: dict[int, str] = {ord(c): c.lower() for c in map(chr, range(128))}
_KNOWN: set[str] = set(map(chr, range(128)))
_IRREGULAR: set[str] = set()


def _learn(chars: set[str]) -> None:
    for c in chars - _KNOWN:
        folded = _fold_char(c)
        if len(folded) != 1:
            _IRREGULAR.add(c)
        _TABLE[ord(c)] = folded
        _KNOWN.add(c)


def _normalized_layer(text: str) -> tuple[str, list[int] | None]:
    """Fold every character; the offset map is None when folding was one-to-one (the common case)."""
    chars = set(text)
    _learn(chars)
    nmap: list[int] | None = None
    if _IRREGULAR.isdisjoint(chars):
        joined = text.translate(_TABLE)
    else:
        pieces: list[str] = []
        nmap = []
        for i, c in enumerate(text):
            folded = _TABLE[ord(c)]
            pieces.append(folded)
            nmap.extend([i] * len(folded))
        joined = "".join(pieces)
    if joined.isascii():
        return joined, nmap
    simplified = _t2s().convert(joined)
    if len(simplified) != len(joined):
        simplified = "".join(_t2s_char(c) for c in joined)
    return simplified, nmap


def _skeleton_layer(norm: str) -> tuple[str, list[int] | None]:
    """Drop separator runs; the offset map is None when nothing was dropped."""
    runs = list(_SEP_RUN.finditer(norm))
    if not runs:
        return norm, None
    pieces: list[str] = []
    smap: list[int] = []
    pos = 0
    n = len(norm)
    for run in runs:
        i, j = run.span()
        pieces.append(norm[pos:i])
        smap.extend(range(pos, i))
        pos = j
        if not (i > 0 and norm[i - 1].isdigit() and j < n and norm[j].isdigit()):
            continue
        joiner = next((k for k in range(i, j) if norm[k] in _JOINERS), -1)
        if joiner >= 0:
            pieces.append(norm[joiner])
            smap.append(joiner)
        elif not (_single_digit_before(norm, i) and _single_digit_after(norm, j)):
            pieces.append(" ")
            smap.append(i)
    pieces.append(norm[pos:])
    smap.extend(range(pos, n))
    return "".join(pieces), smap


def _single_digit_before(norm: str, i: int) -> bool:
    return i < 2 or not norm[i - 2].isdigit()


def _single_digit_after(norm: str, j: int) -> bool:
    return j + 1 >= len(norm) or not norm[j + 1].isdigit()


def _digit_layer(skel: str) -> tuple[str, list[_Segment] | None]:
    pieces: list[str] = []
    segments: list[_Segment] = []
    d_pos = 0
    s_pos = 0
    for m in _NUMERAL.finditer(skel):
        if m.group("thousands") is not None:
            replacement: str | None = m.group("thousands").replace(",", "")
        else:
            run = m.group("run")
            if run.isascii() and not m.group("pct"):
                continue
            if len(run) == 1 and not m.group("pct"):
                nxt = skel[m.end() : m.end() + 1]
                if nxt not in _SINGLE_OK or not nxt:
                    continue
            replacement = _numeral_value(run)
            if replacement is not None and m.group("pct"):
                replacement += "%"
        if replacement is None or replacement == m.group(0):
            continue
        if m.start() > s_pos:
            segments.append(_Segment(d_pos, s_pos, m.start(), True))
            pieces.append(skel[s_pos : m.start()])
            d_pos += m.start() - s_pos
        segments.append(_Segment(d_pos, m.start(), m.end(), False))
        pieces.append(replacement)
        d_pos += len(replacement)
        s_pos = m.end()
    if not segments:
        return skel, None
    segments.append(_Segment(d_pos, s_pos, len(skel), True))
    pieces.append(skel[s_pos:])
    return "".join(pieces), segments


def normalize(text: str) -> Normalized:
    """Build every layer of `text` together with the maps back to original offsets."""
    norm, nmap = _normalized_layer(text)
    skel, smap = _skeleton_layer(norm)
    digits, segments = _digit_layer(skel)
    starts = [s.d_start for s in segments] if segments else []
    return Normalized(text, norm, skel, digits, nmap, smap, segments, starts)


def canonical(term: str) -> str:
    """The matching form of a lexicon term: the same layers applied to the text (symmetry)."""
    return normalize(term).text
