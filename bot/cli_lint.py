"""`wecom-bot lint`: run the compliance linter on a message, or evaluate it on the labelled corpus.

Needs no configuration file and no database. Exit codes: 0 pass, 1 review, 2 block; with
``--eval``, 0 when the quality targets are met and 1 otherwise.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click

from scripts_library.compliance import KINDS, LintResult, default_engine
from scripts_library.compliance.evaluate import (
    TARGET_BLOCK_RECALL,
    TARGET_FALSE_BLOCK_RATE,
    EvalReport,
    evaluate,
    format_report,
    load_corpus,
)

__all__ = ["EXIT_CODES", "lint"]

EXIT_CODES = {"pass": 0, "review": 1, "block": 2}


def _format_result(result: LintResult) -> str:
    lines = []
    for f in result.findings:
        lines.append(
            f"{f.severity.upper():<6}{f.category:<5}{f.rule_id:<28}[{f.start}:{f.end}] {f.layer:<10}"
            f"{json.dumps(f.matched, ensure_ascii=False)}  {f.message}"
        )
    lines.append(f"verdict: {result.verdict}  (lexicon {result.lexicon_version})")
    return "\n".join(lines)


def _report_dict(report: EvalReport) -> dict[str, Any]:
    return {
        "cases": report.total,
        "violations": report.violations,
        "non_violations": report.non_violations,
        "block_recall": round(report.block_recall, 4),
        "false_block_rate": round(report.false_block_rate, 4),
        "verdict_accuracy": round(report.verdict_accuracy, 4),
        "targets": {"block_recall": TARGET_BLOCK_RECALL, "false_block_rate": TARGET_FALSE_BLOCK_RATE},
        "targets_met": report.meets_targets,
        "categories": {
            cat: {
                "precision": round(s.precision, 4),
                "recall": round(s.recall, 4),
                "tp": s.tp,
                "fp": s.fp,
                "fn": s.fn,
            }
            for cat, s in sorted(report.categories.items())
        },
    }


@click.command("lint")
@click.argument("source", required=False, default="-", type=click.File("r", encoding="utf-8"))
@click.option(
    "--kind", type=click.Choice(KINDS), help="Script kind (enables structural checks); omit for free text."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--eval", "run_eval", is_flag=True, help="Evaluate on the labelled corpus instead of linting a text."
)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False),
    help="Corpus JSONL for --eval (default: the shipped corpus).",
)
@click.option(
    "--show-mistakes", is_flag=True, help="With --eval, list the cases that differ from their label."
)
@click.pass_context
def lint(
    ctx: click.Context,
    source: IO[str],
    kind: str | None,
    as_json: bool,
    run_eval: bool,
    corpus: str | None,
    show_mistakes: bool,
) -> None:
    """Lint FILE (or stdin) for compliance red lines; exit 0 pass, 1 review, 2 block."""
    if run_eval:
        report = evaluate(load_corpus(corpus))
        if as_json:
            click.echo(json.dumps(_report_dict(report), ensure_ascii=False, indent=2))
        else:
            click.echo(format_report(report, show_mistakes))
        ctx.exit(0 if report.meets_targets else 1)
    result = default_engine().lint(source.read(), kind)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        click.echo(_format_result(result))
    ctx.exit(EXIT_CODES[result.verdict])
