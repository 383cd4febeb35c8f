"""Fuzz the compliance linter with mutated messages: obfuscations, odd Unicode, random script kinds.

Every input must get a verdict whose findings lie inside the text, quote it exactly, and agree
with the verdict; anything else (or any exception) is a finding.

    python -m fuzz.fuzz_linter --iterations 20000 --seed 7
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence

from fuzz.harness import Target, main
from scripts_library.compliance import KINDS, default_engine, lint
from scripts_library.compliance.lexicon import DATA_DIR

# Characters that disguise or break up words, and scripts that stress normalisation.
NOISE = (
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",
    "\u3000",  # ideographic space
    "\u0301",  # combining acute
    "\U0001f4b0",  # money bag emoji
    "\ud800",  # a lone surrogate, as JSON "\\ud800" decodes
    "-",
    "*",
    "·",
    "。",
    "？",
    "\n",
    "ＡＢＣ１２３",
    "①②③",
    "𝟏𝟎𝟎%",
    "賺",
    "夲",
    "百分之百",
    "三千五百点",
    "不",
    "谨防",
    "骗局",
)


def seed_corpus() -> list[bytes]:
    """The labelled compliance corpus plus every lexicon term (as UTF-8)."""
    texts = [
        json.loads(line)["text"]
        for line in (DATA_DIR / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    texts += [term for rule in default_engine().lexicon.rules.values() for term in rule.terms]
    return [t.encode("utf-8", "surrogatepass") for t in texts]


def _text(data: bytes) -> str:
    # Lone surrogates are kept (surrogatepass): JSON from WeCom can carry them.
    return data.decode("utf-8", "surrogatepass")


def mutate_text(data: bytes, rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One to four edits on characters: insert noise or a random code point, delete, swap, splice."""
    chars = list(_text(data))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randint(0, len(chars))
        if op == 0:
            chars[at:at] = list(rng.choice(NOISE))
        elif op == 1:
            chars[at:at] = [chr(rng.randrange(0x110000))]
        elif op == 2 and chars:
            del chars[at : at + rng.randint(1, 4)]
        elif op == 3 and len(chars) > 1:
            i = rng.randrange(len(chars) - 1)
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 4:
            chars[at:at] = list(_text(rng.choice(corpus)))
        else:
            chars = [c.upper() if rng.random() < 0.5 else c for c in chars]
    return "".join(chars).encode("utf-8", "surrogatepass")


def check(data: bytes, rng: random.Random) -> None:
    """Lint the text under a random script kind and check the result's invariants."""
    text = _text(data)
    kind = rng.choice((None, *KINDS))
    result = lint(text, kind)
    for f in result.findings:
        assert 0 <= f.start <= f.end <= len(text), f
        assert f.matched == text[f.start : f.end], f
    severities = {f.severity for f in result.findings}
    assert result.verdict == ("block" if "block" in severities else "review" if severities else "pass")


TARGET = Target("fuzz_linter", seed_corpus(), check, mutate_text)

if __name__ == "__main__":
    sys.exit(main(TARGET))
