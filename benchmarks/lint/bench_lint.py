"""Benchmark the compliance linter against a naive baseline in the same run.

Run:  .venv/bin/python benchmarks/lint/bench_lint.py [--messages 3000] [--write-docs docs/BENCHMARKS.md]

Messages are 500 characters, assembled (seeded) from the sentences of the labelled corpus: about
four clean sentences for every violating one, so most messages carry zero to three findings, as
real outbound texts do. The lexicon is the shipped one extended with synthetic but realistic terms
(red-line stems × product words, security names × trading verbs) to at least 2,000 terms.

The naive baseline is one regex alternation of all raw terms matched over the raw text, with no
normalization, no negation and no detectors: what a keyword filter does. Its block recall on the
corpus is printed next to the engine's to show what the normalization layers buy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts_library.compliance import Engine, load_lexicon
from scripts_library.compliance.evaluate import evaluate, load_corpus

MESSAGE_CHARS = 500
MIN_TERMS = 2000

_STEMS = {
    "C1.returns": ["稳赚", "保收益", "高收益零风险", "包赚", "稳拿收益", "保底收益", "躺赚", "只赚不赔"],
    "C1.principal": ["保本", "保本保息", "本金无忧", "刚性兑付"],
    "C4.profit_sharing": ["带单", "收益分成", "盈利分成", "喊单"],
    "C5.inside_info": ["内幕消息", "内部消息", "庄家拉升", "主力控盘"],
    "C11.out_of_licence": ["外汇按金", "虚拟货币", "场外配资", "原始股", "数字货币投资"],
}
_PRODUCTS = [
    "理财", "计划", "项目", "产品", "基金", "策略", "方案", "群", "课程", "模式", "套餐", "通道", "组合",
    "服务", "平台", "专场", "会员", "内参", "体验营", "训练营",
]  # fmt: skip
_VERBS = [
    "推荐", "买入", "加仓", "建仓", "抄底", "满仓", "重仓", "梭哈", "低吸", "埋伏", "潜伏", "布局", "上车",
    "锁仓", "拿住", "主升浪", "目标价", "必涨", "翻倍", "涨停",
]  # fmt: skip
_NAMES = [
    "贵州茅台", "五粮液", "泸州老窖", "宁德时代", "比亚迪", "中国平安", "招商银行", "工商银行", "建设银行",
    "兴业银行", "东方财富", "中信证券", "华泰证券", "隆基绿能", "阳光电源", "通威股份", "中芯国际",
    "海康威视",
    "立讯精密", "京东方", "美的集团", "格力电器", "海尔智家", "伊利股份", "恒瑞医药", "药明康德", "迈瑞医疗",
    "片仔癀", "长江电力", "中国神华", "紫金矿业", "中国石油", "中国石化", "中国移动", "中国电信", "中国中免",
    "三一重工", "中国船舶", "中航沈飞", "寒武纪", "科大讯飞", "金山办公", "北方华创", "赛力斯", "小米集团",
    "腾讯控股", "阿里巴巴", "美团", "拼多多", "特斯拉", "英伟达", "苹果公司", "微软", "茅台", "宁王",
    "中科曙光", "浪潮信息", "中际旭创", "新易盛", "天孚通信", "工业富联", "紫光国微", "韦尔股份", "兆易创新",
    "东方电气", "国电南瑞", "特变电工", "汇川技术", "万华化学", "牧原股份",
]  # fmt: skip


def synthetic_terms() -> dict[str, list[str]]:
    """Realistic extra terms per rule id: stems × product words and names × trading verbs."""
    extra: dict[str, list[str]] = {
        rid: [s + p for s in stems for p in _PRODUCTS] for rid, stems in _STEMS.items()
    }
    extra["C3.recommend"] = [n + v for n in _NAMES for v in _VERBS]
    return extra


def messages(count: int, seed: int = 7) -> list[str]:
    """`count` messages of MESSAGE_CHARS characters built from corpus sentences (seeded)."""
    rng = random.Random(seed)
    cases = load_corpus()
    clean = [c.text for c in cases if c.expected == "pass"]
    bad = [c.text for c in cases if c.expected != "pass"]
    out = []
    for _ in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < MESSAGE_CHARS:
            parts.append(rng.choice(bad) if rng.random() < 0.2 else rng.choice(clean))
        out.append("".join(parts)[:MESSAGE_CHARS])
    return out


def time_each(fn: Callable[[str], object], msgs: list[str]) -> list[float]:
    """Per-message wall time in milliseconds."""
    for m in msgs[:50]:
        fn(m)
    times = []
    for m in msgs:
        t0 = time.perf_counter_ns()
        fn(m)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Messages per second, p50 and p99 in milliseconds."""
    ordered = sorted(times)
    return {
        "msgs_per_s": len(times) / (sum(times) / 1000),
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def baseline_pattern(engine: Engine) -> re.Pattern[str]:
    """One alternation of every raw term, longest first."""
    terms = sorted({t for r in engine.lexicon.rules.values() for t in r.terms}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in terms))


def baseline_block_recall(pattern: re.Pattern[str], engine: Engine) -> float:
    """Share of must-block corpus cases in which the naive alternation finds any block-rule term."""
    block_terms = {t for r in engine.lexicon.rules.values() if r.severity == "block" for t in r.terms}
    cases = [c for c in load_corpus() if c.expected == "block"]
    hit = sum(any(m.group(0) in block_terms for m in pattern.finditer(c.text)) for c in cases)
    return hit / len(cases)


def run(count: int) -> str:
    """Run the benchmark and return the markdown section body."""
    base = load_lexicon()
    engine = Engine(base.extended(synthetic_terms()))
    assert engine.lexicon.term_count >= MIN_TERMS, engine.lexicon.term_count
    msgs = messages(count)
    pattern = baseline_pattern(engine)
    rows = [
        ("engine, free text (kind=None)", summary(time_each(engine.lint, msgs))),
        (
            "engine, morning_report (+structure)",
            summary(time_each(lambda m: engine.lint(m, "morning_report"), msgs)),
        ),
        ("naive regex alternation, raw text", summary(time_each(pattern.findall, msgs))),
    ]
    shipped = evaluate(engine=Engine(base))
    lines = [
        f"Run {dt.date.today().isoformat()} on {platform.python_implementation()}"
        f" {platform.python_version()},"
        f" {platform.machine()} ({os.cpu_count()} CPUs), single thread: {count} messages of {MESSAGE_CHARS}"
        f" characters, lexicon of {engine.lexicon.term_count} terms ({base.term_count} shipped +"
        f" {engine.lexicon.term_count - base.term_count} synthetic: red-line stems × product words and"
        " security names × trading verbs, generated by `synthetic_terms()` in the script).",
        "",
        "Messages are seeded concatenations of corpus sentences (about one violating sentence in five),"
        " cut at 500 characters; each is linted from scratch (normalization, Aho–Corasick, detectors,"
        " negation). The naive baseline is one `re` alternation of all raw terms, `findall` over the raw"
        " text: no normalization, negation, detectors or structure.",
        "",
        "| matcher | msgs/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {s['msgs_per_s']:,.0f} | {s['p50']:.3f} | {s['p99']:.3f} |" for name, s in rows]
    lines += [
        "",
        f"Block recall on the labelled corpus: engine {shipped.block_recall:.3f},"
        f" naive alternation {baseline_block_recall(pattern, engine):.3f}"
        f" (false-block rate of the engine {shipped.false_block_rate:.3f}). The engine figure is in-sample:"
        " the corpus was used while writing the rules. Two batches written before the engine had seen"
        " them scored 0.69 and 0.88 block recall on their first run (corpus `set` = holdout, holdout2);"
        " the misses were paraphrases outside the lexicon, fixed afterwards. `wecom-bot lint --eval`"
        " prints precision and recall per category.",
        "",
        "Target: p99 under 2 ms per 500-character message. Reproduce with"
        " `.venv/bin/python benchmarks/lint/bench_lint.py --write-docs docs/BENCHMARKS.md`.",
    ]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Add or replace the `## Lint` section of a markdown file, leaving other sections alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    section = f"## Lint\n\n{body}\n"
    match = re.search(r"^## Lint\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
    if match:
        text = (
            text[: match.start()] + section + ("\n" if match.end() < len(text) else "") + text[match.end() :]
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--write-docs", type=Path, help="Markdown file whose ## Lint section to replace.")
    args = parser.parse_args()
    body = run(args.messages)
    print(body)
    if args.write_docs:
        write_section(args.write_docs, body)


if __name__ == "__main__":
    main()
