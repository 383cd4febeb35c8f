"""`wecom-bot lint`: exit codes, JSON shape, stdin and file input, and --eval."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from bot.cli_lint import lint


def _run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(lint, list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_clean_text_exits_0() -> None:
    code, out = _run(stdin="周三晚8点直播，欢迎参加。")
    assert code == 0
    assert "verdict: pass" in out


def test_warn_exits_1() -> None:
    code, out = _run(stdin="名额有限，先到先得。")
    assert code == 1
    assert "C10" in out and "verdict: review" in out


def test_block_exits_2_and_prints_spans() -> None:
    code, out = _run(stdin="本产品保本保息")
    assert code == 2
    assert "C1.principal" in out and "[3:7]" in out


def test_json_output_shape() -> None:
    code, out = _run("--json", "-", stdin="放心，保-本 稳 赚")
    data = json.loads(out)
    assert code == 2
    assert data["verdict"] == "block"
    finding = data["findings"][0]
    assert {"rule_id", "category", "severity", "layer", "start", "end", "matched"} <= set(finding)
    assert (finding["start"], finding["end"], finding["matched"]) == (3, 10, "保-本 稳 赚")
    assert data["lexicon_version"]


def test_file_argument_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "msg.txt"
    path.write_text("您好，欢迎添加，我是您的服务顾问。", encoding="utf-8")
    assert _run(str(path))[0] == 0
    code, out = _run(str(path), "--kind", "welcome", "--json")
    assert code == 1
    assert [f["rule_id"] for f in json.loads(out)["findings"]] == ["S5.firm_name"]


def test_unknown_kind_is_rejected() -> None:
    result = CliRunner().invoke(lint, ["--kind", "newsletter"], input="x")
    assert result.exit_code == 2
    assert "newsletter" in result.output


def test_eval_prints_per_category_table_and_meets_targets() -> None:
    code, out = _run("--eval")
    assert code == 0
    for cat in [f"C{i}" for i in range(1, 13)]:
        assert f"\n{cat} " in out
    assert "block recall" in out and "targets           met" in out


def test_eval_json_and_missed_targets_exit_1(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    case = {"id": "x1", "text": "周三晚8点直播", "kind": None, "expected": "block", "categories": ["C1"]}
    corpus.write_text(json.dumps(case, ensure_ascii=False) + "\n", encoding="utf-8")
    code, out = _run("--eval", "--json", "--corpus", str(corpus))
    assert code == 1
    data = json.loads(out)
    assert data["block_recall"] == 0.0 and data["targets_met"] is False


def test_command_registers_on_a_group_without_config() -> None:
    @click.group()
    def main() -> None:
        """Stand-in for the real top-level group."""

    main.add_command(lint)
    result = CliRunner().invoke(main, ["lint", "--json"], input="稳赚不赔")
    assert result.exit_code == 2
    assert json.loads(result.output)["verdict"] == "block"
