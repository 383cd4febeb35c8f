"""Regex detectors for structured red lines, and the clause/sentence context they share.

All spans here are on the canonical (digit) layer of `Normalized`; the engine maps them back to
the original text.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import ahocorasick

from .lexicon import RuleSet
from .model import BLOCK, WARN, Severity
from .normalize import BOUNDARIES, SENTENCE_ENDS, canonical

__all__ = ["DETECTORS", "Hit", "TextContext", "run_detectors"]

Negation = Literal["full", "education", "none"]
_BOUNDARY = re.compile("[" + re.escape("".join(sorted(BOUNDARIES))) + "]")
# Security codes and tickers need digits or an explicit market cue; skip masking without them.
_MAYBE_SECURITY = re.compile(r"\d{4}|hk|\$|美股|nasdaq|nyse|纳斯达克|纽交所")


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule hit on the digit layer (or the normalized layer when `on_normalized`)."""

    rule_id: str
    category: str
    severity: Severity
    start: int
    end: int
    message: str
    negation: Negation = "full"
    layer: str | None = None
    on_normalized: bool = False
    whole_text: bool = False


def _alt(words: list[str] | tuple[str, ...]) -> str:
    """Regex alternation of already-canonical words, longest first; latin words get a left boundary."""
    out = []
    for w in sorted(set(words), key=len, reverse=True):
        if not w:
            continue
        esc = re.escape(w)
        out.append(f"(?<![a-z]){esc}" if w[0].isascii() and w[0].isalpha() else esc)
    return "|".join(out) or "(?!)"


class Cues:
    """Compiled context patterns (negation, education, tense, questions) for one RuleSet."""

    def __init__(self, rules: RuleSet) -> None:
        def words(name: str) -> list[str]:
            return [canonical(w) for w in rules.lists.get(name, ())]

        no_edu = _alt(words("not_education"))
        # Latin negators carry no left boundary: the skeleton glued "there is no" into "thereisno".
        negators = "|".join(re.escape(w) for w in sorted(set(words("negators")), key=len, reverse=True) if w)
        self.negation = re.compile(f"(?:{negators})(?:{_alt(words('negation_fillers'))}){{0,4}}$")
        self.prohibition = re.compile(f"(?:{_alt(words('prohibitions'))})(?!{no_edu})")
        self.warning = re.compile(f"(?:{_alt(words('warnings'))})(?!{no_edu})")
        self.post_warning = re.compile(_alt(words("post_warnings")))
        self.post_warning_negators = tuple(words("post_warning_negators"))
        self.question = re.compile(_alt(words("questions")))
        self.future = re.compile(_alt(words("future")))
        self.tense_noise = re.compile(_alt(words("tense_noise")))
        self.past = re.compile(_alt(words("past")))
        self.index_verb = re.compile(f"(?P<verb>{_alt(words('index_verbs'))})(?P<fill>[^,。!?;\\d]{{0,6}})$")
        self.predictive = frozenset(words("predictive"))
        self.post_forecast = re.compile(f"[^,。!?;]{{0,3}}(?:{_alt(words('post_forecast'))})")
        self.return_promise = re.compile(_alt(words("return_promises")))
        self.price_cue = re.compile(_alt(words("price_cues")))
        self.price_predictive = frozenset(words("price_predictive"))
        self.return_word = re.compile(f"(?:{_alt(words('return_words'))})[^,。!?;]{{0,8}}$")
        self.return_predictive = re.compile(_alt(words("return_predictive")))
        self.neutral_level = re.compile("(?:收于|收报|报收|报|收在|收盘|位于|在)$")
        self.licence = re.compile(_alt(words("licence_context")))
        self.card_label = re.compile(_alt(words("card_labels")))
        self.masks = [
            rules.pattern(n)
            for n in (
                "mask_sac",
                "mask_labelled",
                "mask_date",
                "mask_phone",
                "mask_postcode",
                "mask_index",
                "mask_time",
                "mask_amount",
            )
        ]
        self.vocab = ahocorasick.Automaton()
        tagged: dict[str, set[str]] = {}
        for tag in ("security_names", "security_refs", "actions", "action_exclusions", "name_exclusions"):
            for w in words(tag):
                tagged.setdefault(w, set()).add(tag)
        for w, tags in tagged.items():
            self.vocab.add_word(w, (len(w), frozenset(tags)))
        self.vocab.make_automaton()


@lru_cache(maxsize=8)
def cues_for(rules: RuleSet) -> Cues:
    """Compiled cues for a rule set (built once)."""
    return Cues(rules)


class TextContext:
    """Clause and sentence boundaries of a canonical text, with negation and tense helpers."""

    def __init__(self, text: str, rules: RuleSet) -> None:
        self.text = text
        self.rules = rules
        self.cues = cues_for(rules)
        self._clauses = [m.start() for m in _BOUNDARY.finditer(text)]
        self._sentences = [i for i in self._clauses if text[i] in SENTENCE_ENDS]
        # The text with compound words such as 会员 / 机会 blanked, for tense and mood searches.
        self.tense = self.cues.tense_noise.sub(lambda m: "#" * (m.end() - m.start()), text)

    @staticmethod
    def _bounds(marks: list[int], i: int, n: int) -> tuple[int, int]:
        k = bisect_left(marks, i)
        start = marks[k - 1] + 1 if k > 0 else 0
        end = marks[k] if k < len(marks) else n
        return start, end

    def clause(self, i: int) -> tuple[int, int]:
        """[start, end) of the clause containing position i."""
        return self._bounds(self._clauses, i, len(self.text))

    def sentence(self, i: int) -> tuple[int, int]:
        """[start, end) of the sentence containing position i."""
        return self._bounds(self._sentences, i, len(self.text))

    def negated(self, start: int) -> bool:
        """A negator immediately precedes position `start` in its clause (不保本, 并非稳赚)."""
        cs, _ = self.clause(start)
        window = self.text[max(cs, start - 16) : start]
        m = self.cues.negation.search(window)
        if m is None:
            return False
        i = m.start()
        # 有没有 / 是不是 / 能不能 ask a question (A-not-A); they do not negate.
        return not (window[i] in "不没" and 0 < i < len(window) - 1 and window[i - 1] == window[i + 1])

    def educational(self, start: int, end: int) -> bool:
        """The match is quoted to warn against it (谨防…, 请勿…, …是骗局)."""
        cs, _ = self.clause(start)
        if self.cues.prohibition.search(self.text, cs, start):
            return True
        ss, se = self.sentence(start)
        if self.cues.warning.search(self.text, ss, start):
            return True
        for m in self.cues.post_warning.finditer(self.text, end, se):
            before = self.text[max(end, m.start() - 3) : m.start()]
            if not before.endswith(self.cues.post_warning_negators):
                return True
        return False

    def question(self, start: int) -> bool:
        """The sentence around `start` is a question."""
        _, se = self.sentence(start)
        if se < len(self.text) and self.text[se] == "?":
            return True
        return bool(self.cues.question.search(self.text, start, se))

    def suppressed(self, hit: Hit) -> bool:
        """Whether the hit's negation mode and its context neutralise it."""
        if hit.negation == "none":
            return False
        if hit.negation == "full" and self.negated(hit.start):
            return True
        return self.educational(hit.start, hit.end)


# ----------------------------------------------------------------------------- C2 forecasts


def _levels(ctx: TextContext) -> list[tuple[re.Match[str], bool]]:
    """Index-level numbers: 3500点 always, a bare 3600 only after an index word in its clause."""
    found = [(m, True) for m in ctx.rules.pattern("index_level").finditer(ctx.text)]
    word = ctx.rules.pattern("index_word")
    for m in ctx.rules.pattern("index_level_bare").finditer(ctx.text):
        cs, _ = ctx.clause(m.start())
        if word.search(ctx.text, cs, m.start()):
            found.append((m, False))
    return found


def _index_levels(ctx: TextContext) -> list[Hit]:
    hits = []
    cues = ctx.cues
    for m, with_unit in _levels(ctx):
        cs, ce = ctx.clause(m.start())
        before = ctx.tense[cs : m.start()]
        verb = cues.index_verb.search(before)
        if verb is not None and len(verb.group("verb")) == 1 and verb.group("fill"):
            verb = None  # 看 / 见 only count right before the number
        post = cues.post_forecast.match(ctx.text, m.end(), ce) if with_unit else None
        if verb is None and (post is None or not with_unit):
            continue
        head = before[: verb.start()] if verb else before
        predictive = verb is not None and verb.group("verb") in cues.predictive
        severity = _tense_severity(ctx, m.start(), head, predictive or post is not None)
        start = cs + (verb.start() if verb else 0)
        hits.append(Hit("C2.index_level", "C2", severity, start, m.end(), _C2_MSG, "education"))
    return hits


def _tense_severity(ctx: TextContext, at: int, head: str, predictive: bool) -> Severity:
    """BLOCK for a forecast; WARN for questions, past facts and untensed statements."""
    if ctx.question(at):
        return WARN
    if predictive or ctx.cues.future.search(head):
        return BLOCK
    return WARN


def _price_levels(ctx: TextContext) -> list[Hit]:
    hits = []
    cues = ctx.cues
    for m in ctx.rules.pattern("price_level").finditer(ctx.text):
        cs, _ = ctx.clause(m.start())
        w0 = max(cs, m.start() - 10)
        cue = None
        for found in cues.price_cue.finditer(ctx.tense, w0, m.start()):
            cue = found  # the last cue before the number
        if cue is None or cues.neutral_level.search(ctx.tense, w0, m.start()):
            continue
        predictive = cue.group(0) in cues.price_predictive
        if not (predictive or cues.future.search(ctx.tense, cs, cue.start())):
            continue
        severity = WARN if ctx.question(m.start()) else BLOCK
        hits.append(Hit("C2.price_level", "C2", severity, cue.start(), m.end(), _C2_MSG, "education"))
    return hits


def _return_forecasts(ctx: TextContext) -> list[Hit]:
    hits = []
    cues = ctx.cues
    index_word = ctx.rules.pattern("index_word")
    for m in ctx.rules.pattern("return_pct").finditer(ctx.text):
        cs, _ = ctx.clause(m.start())
        before = ctx.tense[cs : m.start()]
        word = cues.return_word.search(before)
        if word is None or not cues.return_predictive.search(before) or cues.past.search(before):
            continue
        # A floor on a product's return is a promise (C1); on an index it is a forecast (C2).
        if cues.return_promise.search(before) and not index_word.search(before):
            hits.append(Hit("C1.promised_return", "C1", BLOCK, cs + word.start(), m.end(), _C1_PROMISE))
            continue
        severity = WARN if ctx.question(m.start()) else BLOCK
        hits.append(
            Hit("C2.return_forecast", "C2", severity, cs + word.start(), m.end(), _C2_MSG, "education")
        )
    return hits


def _rise_forecasts(ctx: TextContext) -> list[Hit]:
    hits = []
    for name in ("rise_forecast", "confident_forecast", "english_forecast"):
        for m in ctx.rules.pattern(name).finditer(ctx.tense):
            severity = WARN if ctx.question(m.start()) else BLOCK
            hits.append(Hit("C2.movement", "C2", severity, m.start(), m.end(), _C2_MSG, "education"))
    return hits


_C2_MSG = "Forecast of an index level, price, return or price move."
_C1_PROMISE = "Promised minimum or fixed return."

# ----------------------------------------------------------------------------- C3 securities


def _masked(ctx: TextContext) -> str:
    text = ctx.text
    for pattern in ctx.cues.masks:
        text = pattern.sub(lambda m: "#" * (m.end() - m.start()), text)
    return text


def _vocab_spans(ctx: TextContext) -> dict[str, list[tuple[int, int]]]:
    spans: dict[str, list[tuple[int, int]]] = {}
    for end, (n, tags) in ctx.cues.vocab.iter(ctx.text):
        for tag in tags:
            spans.setdefault(tag, []).append((end + 1 - n, end + 1))
    return spans


def _inside(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(s <= span[0] and span[1] <= e and (s, e) != span for s, e in others)


def _securities(ctx: TextContext) -> list[Hit]:
    vocab = _vocab_spans(ctx)
    actions = [a for a in vocab.get("actions", []) if not _inside(a, vocab.get("action_exclusions", []))]
    if not actions:
        return []
    mentions = [
        s
        for s in vocab.get("security_names", []) + vocab.get("security_refs", [])
        if not _inside(s, vocab.get("name_exclusions", []) + vocab.get("action_exclusions", []))
    ]
    if _MAYBE_SECURITY.search(ctx.text):
        masked = _masked(ctx)
        for name in ("stock_code", "hk_ticker", "us_ticker"):
            mentions += [(m.start(), m.end()) for m in ctx.rules.pattern(name).finditer(masked)]
    hits = []
    action_starts = sorted(actions)
    keys = [a[0] for a in action_starts]
    for ms, me in sorted(set(mentions)):
        ss, se = ctx.sentence(ms)
        lo = bisect_right(keys, max(ss, ms - 24) - 1)
        for a_start, a_end in action_starts[lo:]:
            if a_start >= min(se, me + 24):
                break
            if a_start < me and a_end > ms:
                continue
            if a_end > se or a_start < ss:
                continue
            probe = Hit("C3.security", "C3", BLOCK, a_start, a_end, "")
            if ctx.suppressed(probe):
                continue
            start, end = min(ms, a_start), max(me, a_end)
            hits.append(Hit("C3.security", "C3", BLOCK, start, end, _C3_MSG, "none"))
            break
    return hits


_C3_MSG = "A specific security named next to a trading instruction or recommendation."

# ----------------------------------------------------------------------------- C1, C7, C8, C12


def _simple(
    rule_id: str, category: str, severity: Severity, pattern: str, message: str
) -> Callable[..., list[Hit]]:
    def detect(ctx: TextContext) -> list[Hit]:
        return [
            Hit(rule_id, category, severity, m.start(), m.end(), message)
            for m in ctx.rules.pattern(pattern).finditer(ctx.text)
        ]

    detect.__name__ = f"detect_{pattern}"
    return detect


def _phonetic(ctx: TextContext) -> list[Hit]:
    return [
        Hit("C1.phonetic_pattern", "C1", WARN, m.start(), m.end(), _PHONETIC_MSG, "full", "phonetic")
        for m in ctx.rules.pattern("phonetic_promise").finditer(ctx.text)
    ]


_PHONETIC_MSG = "Homophone spelling of 稳赚不赔 (review; may be a false positive)."


def _endorsements(ctx: TextContext) -> list[Hit]:
    hits = []
    for m in ctx.rules.pattern("endorsement").finditer(ctx.text):
        ss, se = ctx.sentence(m.start())
        if ctx.cues.licence.search(ctx.text, ss, se):
            continue
        hits.append(Hit("C8.endorsement_phrase", "C8", BLOCK, m.start(), m.end(), _C8_MSG))
    return hits


_C8_MSG = "Claimed regulator or government endorsement."


def _id_checksum(number: str) -> bool:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True))
    return "10x98765432"[total % 11] == number[17]


def _luhn(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _personal_data(ctx: TextContext) -> list[Hit]:
    hits = []
    text = ctx.text
    shape = ctx.rules.pattern("id_card_shape")
    for m in ctx.rules.pattern("id_card").finditer(text):
        number = re.sub(r"[ -]", "", m.group(0))
        if shape.fullmatch(number) and _id_checksum(number):
            hits.append(Hit("C12.id_card", "C12", BLOCK, m.start(), m.end(), "PRC ID card number.", "none"))
    for m in ctx.rules.pattern("bank_card").finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if not 16 <= len(digits) <= 19 or not _luhn(digits):
            continue
        cs, _ = ctx.clause(m.start())
        labelled = ctx.cues.card_label.search(text, max(cs, m.start() - 10), m.start())
        if labelled or digits.startswith(("62", "4", "5", "3")):
            hits.append(Hit("C12.bank_card", "C12", BLOCK, m.start(), m.end(), "Bank card number.", "none"))
    hits += _simple("C12.solicit_phrase", "C12", BLOCK, "solicit", "Asking for identity data or secrets.")(
        ctx
    )
    return hits


def _claims(ctx: TextContext) -> list[Hit]:
    hits = []
    for m in ctx.rules.pattern("win_rate").finditer(ctx.text):
        hits.append(Hit("C7.win_rate_claim", "C7", BLOCK, m.start(), m.end(), "Win-rate claim."))
    for m in ctx.rules.pattern("track_record").finditer(ctx.text):
        if ctx.cues.return_predictive.search(ctx.tense, max(0, m.start() - 4), m.start()):
            continue
        hits.append(Hit("C7.track_record", "C7", WARN, m.start(), m.end(), "Unsubstantiated track record."))
    return hits


DETECTORS: tuple[Callable[[TextContext], list[Hit]], ...] = (
    _index_levels,
    _price_levels,
    _return_forecasts,
    _rise_forecasts,
    _securities,
    _simple("C1.loss_bearing_phrase", "C1", BLOCK, "loss_bearing", "Promise to bear the customer's losses."),
    _simple("C1.guarantee_phrase", "C1", BLOCK, "guarantee", "Guaranteed return or principal."),
    _simple("C1.fixed_return", "C1", BLOCK, "fixed_return", "Promised fixed periodic return."),
    _simple("C1.principal_backstop", "C1", BLOCK, "principal_backstop", "Promise to back the principal."),
    _simple("C4.profit_split", "C4", BLOCK, "profit_split", "Profit sharing with the customer."),
    _simple("C3.stock_tips", "C3", BLOCK, "stock_tips", "Daily stock tips."),
    _simple("C6.private_payment_phrase", "C6", BLOCK, "private_payment", "Payment to a private account."),
    _simple(
        "C10.suitability_bypass", "C10", WARN, "suitability_bypass", "Skipping the suitability assessment."
    ),
    _phonetic,
    _claims,
    _endorsements,
    _personal_data,
)


def run_detectors(ctx: TextContext) -> list[Hit]:
    """Every detector's hits on the context's text (before negation filtering)."""
    hits: list[Hit] = []
    for detect in DETECTORS:
        hits.extend(detect(ctx))
    return hits
