"""The shared fuzz loop: a seeded mutator over a corpus, a target, and a non-zero exit on surprises.

A target raises only the exceptions it declares as clean rejections; anything else, or an
`AssertionError` from an invariant check, is a finding. Each finding is printed with the seed and
iteration that reproduce it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Byte strings that tend to reach the corners of XML and of WeCom's envelope format.
XML_TOKENS: tuple[bytes, ...] = (
    b"<![CDATA[",
    b"]]>",
    b"]]]]><![CDATA[>",
    b'<!DOCTYPE xml [<!ENTITY a "aaaa">]>',
    b'<!ENTITY b SYSTEM "file:///etc/passwd">',
    b"&a;",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b'<?xml version="1.0" encoding="utf-8"?>',
    b'<?xml version="1.1"?>',
    b"<!--",
    b"-->",
    b"<xml>",
    b"</xml>",
    b"<Encrypt>",
    b"</Encrypt>",
    b"<MsgType>event</MsgType>",
    b"<Event>change_external_contact</Event>",
    b"<Event>template_card_event</Event>",
    b"<ChangeType>transfer_fail</ChangeType>",
    b"<SelectedItems><SelectedItem><QuestionKey>q</QuestionKey></SelectedItem></SelectedItems>",
    b"<CreateTime>99999999999999999999999</CreateTime>",
    b"\x00",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    "保本".encode(),
)


Mutator = Callable[[bytes, random.Random, Sequence[bytes]], bytes]


@dataclass(frozen=True)
class Target:
    """What one fuzzer exercises: its seed corpus, how inputs mutate, and the check on each one."""

    name: str
    corpus: Sequence[bytes]
    check: Callable[[bytes, random.Random], None]
    mutator: Mutator | None = None


def mutate(
    data: bytes, rng: random.Random, corpus: Sequence[bytes], tokens: Sequence[bytes] = XML_TOKENS
) -> bytes:
    """Apply one to four random edits: flip, insert, delete, duplicate, token, or splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and buf:
            end = min(len(buf), at + rng.randint(1, 16))
            del buf[at:end]
        elif op == 3 and buf:
            start = rng.randrange(len(buf))
            chunk = buf[start : start + rng.randint(1, 32)]
            buf[at:at] = chunk * rng.randint(1, 4)
        elif op == 4:
            buf[at:at] = rng.choice(tokens)
        elif op == 5:
            other = rng.choice(corpus)
            cut = rng.randint(0, len(other))
            buf = buf[:at] + bytearray(other[cut:])
        else:
            buf[at:at] = str(rng.choice((0, -1, 2**31, 2**63, 10**30))).encode()
    return bytes(buf)


def run(target: Target, iterations: int, seed: int, *, quiet: bool = False, max_findings: int = 5) -> int:
    """Fuzz `target` for `iterations` inputs from `seed`; return the number of findings."""
    rng = random.Random(seed)
    findings = 0
    started = time.monotonic()
    for i in range(iterations):
        data = rng.choice(target.corpus)
        if rng.random() < 0.9:
            data = (target.mutator or mutate)(data, rng, target.corpus)
        try:
            target.check(data, random.Random(rng.getrandbits(64)))
        except Exception:
            findings += 1
            print(f"{target.name}: finding at seed={seed} iteration={i}: input={data!r}", file=sys.stderr)
            traceback.print_exc()
            if findings >= max_findings:
                break
    if not quiet:
        elapsed = time.monotonic() - started
        print(f"{target.name}: {iterations} inputs, {findings} findings, {elapsed:.1f} s (seed {seed})")
    return findings


def main(target: Target, argv: Sequence[str] | None = None) -> int:
    """Command line: `--iterations N --seed S`; exit status 1 when anything unexpected happened."""
    parser = argparse.ArgumentParser(prog=f"python -m fuzz.{target.name}", description=__doc__)
    parser.add_argument("--iterations", type=int, default=10_000, help="how many inputs to try")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time-based)")
    parser.add_argument("--quiet", action="store_true", help="print findings only")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    seed = args.seed if args.seed is not None else int(time.time())
    return 1 if run(target, args.iterations, seed, quiet=args.quiet) else 0
