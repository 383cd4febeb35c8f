"""The compliance engine: word rules, detectors, negation, structure, policy and the result shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts_library.compliance import (
    Engine,
    Finding,
    LexiconError,
    LintError,
    LintPolicy,
    lint,
    load_lexicon,
    load_rules,
    scan_inbound,
)


def _only(text: str, kind: str | None = None, policy: LintPolicy | None = None) -> Finding:
    findings = lint(text, kind, policy).findings
    assert len(findings) == 1, findings
    return findings[0]


# ---------------------------------------------------------------- evasions keep original offsets


def test_plain_principal_promise_blocks_with_raw_span() -> None:
    f = _only("本产品保本保息")
    assert (f.rule_id, f.category, f.severity, f.layer) == ("C1.principal", "C1", "block", "raw")
    assert (f.start, f.end, f.matched) == (3, 7, "保本保息")
    assert f.lexicon_version == lint("x").lexicon_version


def test_full_width_evasion_is_found_at_original_offsets() -> None:
    text = "推荐买入６００５１９，明天开盘就上"
    f = _only(text)
    assert f.category == "C3" and f.severity == "block"
    assert (f.start, f.end) == (0, 10)
    assert f.matched == "推荐买入６００５１９"
    assert f.layer == "normalized"


def test_zero_width_evasion_span_includes_the_invisible_characters() -> None:
    text = "你好，稳\u200b赚\u200c不\u200d赔"
    f = _only(text)
    assert f.category == "C1"
    assert (f.start, f.end) == (3, 10)
    assert f.matched == "稳\u200b赚\u200c不\u200d赔"


def test_traditional_characters_are_matched() -> None:
    text = "這款產品保本保息，穩賺不賠。"
    result = lint(text)
    assert result.verdict == "block"
    spans = {(f.start, f.end): f.layer for f in result.findings}
    assert spans[(9, 13)] == "normalized"  # 穩賺不賠 only matches after OpenCC
    assert spans[(4, 8)] == "raw"  # 保本保息 is the same in both scripts


@pytest.mark.parametrize(
    ("text", "matched"),
    [("放心，保-本 稳 赚！", "保-本 稳 赚"), ("稳 赚 不 赔", "稳 赚 不 赔"), ("零*风*险理财", "零*风*险")],
)
def test_separator_evasion_maps_back_over_the_separators(text: str, matched: str) -> None:
    f = _only(text)
    assert f.category == "C1" and f.severity == "block" and f.layer == "skeleton"
    assert f.matched == matched
    assert text[f.start : f.end] == matched


def test_chinese_numeral_index_forecast_blocks_on_digit_layer() -> None:
    text = "下周沪指将突破三千五百点"
    f = _only(text)
    assert (f.rule_id, f.severity, f.layer) == ("C2.index_level", "block", "digits")
    assert text[f.start : f.end] == "突破三千五百点"


def test_circled_digits_in_a_stock_code_are_found() -> None:
    text = "明天买入⑥⓪⓪⑤①⑨"
    f = _only(text)
    assert f.category == "C3"
    assert text[f.start : f.end] == "买入⑥⓪⓪⑤①⑨"


def test_emoji_between_characters_do_not_hide_a_term() -> None:
    f = _only("稳💰赚不赔")
    assert (f.category, f.start, f.end) == ("C1", 0, 5)


def test_latin_terms_need_word_boundaries() -> None:
    assert lint("GUARANTEED RETURNS, zero risk").verdict == "block"
    assert lint("casino risk").verdict == "pass"
    assert lint("We have no riskless products? No: there is no risk-free investment.").verdict == "pass"


# ---------------------------------------------------------------- must not block (COMPLIANCE.md)


@pytest.mark.parametrize(
    "text",
    [
        "开户日期：2025年3月1日",
        "请于20250301前完成",
        "客服电话13800138000",
        "请拨打95588",
        "邮编200120",
        "起投金额300000元",
        "上证指数昨日收于3,200点",
        "周三晚8点直播",
        "本产品不保本",
        "不保证最低收益",
        "过往业绩不代表未来表现",
        "谨防“保本高收益”骗局",
        "推荐阅读：如何识别金融诈骗",
        "投资顾问：李明（执业编号S0570516010001）",
        "您的验证码是600519",
        "沪深300指数今日成分股调整",
        "中国平安保险客服电话95511",
        "确保本人操作",
    ],
)
def test_must_not_block_examples_pass(text: str) -> None:
    result = lint(text)
    assert result.verdict == "pass", result.findings


# ---------------------------------------------------------------- negation and context


def test_negated_promise_passes_but_denial_of_loss_blocks() -> None:
    assert lint("我们不承诺保本，也不保证收益。").verdict == "pass"
    assert lint("投资我们的产品，绝对不会亏损。").verdict == "block"


def test_education_cue_must_not_be_followed_by_pressure() -> None:
    assert lint("谨防受骗：保本高收益都是骗局").verdict == "pass"
    assert lint("不要错过保本稳赚的机会").verdict == "block"


def test_c2_forecast_blocks_but_questions_and_past_facts_warn() -> None:
    assert lint("沪指将突破3500点").verdict == "block"
    question = lint("沪指能突破3500点吗？")
    assert question.verdict == "review" and question.findings[0].category == "C2"
    assert lint("沪指昨日盘中一度突破3500点").verdict == "review"


def test_security_code_needs_a_trading_verb_and_masks_apply() -> None:
    assert lint("600519是贵州茅台的股票代码").verdict == "pass"
    assert lint("建议买入600519").verdict == "block"
    assert lint("订单号600519已提交，请于2025年6月1日前付款").verdict == "pass"
    assert lint("北向资金净买入贵州茅台12亿元").verdict == "pass"


def test_id_card_requires_a_valid_checksum() -> None:
    assert lint("身份证11010519491231002X").findings[0].rule_id == "C12.id_card"
    assert lint("编码110105194912310021").verdict == "pass"


def test_findings_in_different_categories_are_all_reported() -> None:
    result = lint("本产品经证监会批准，是无风险产品")
    assert {f.category for f in result.findings} == {"C1", "C8"}


# ---------------------------------------------------------------- injection and structure


def test_hostile_nickname_in_a_welcome_blocks() -> None:
    nickname = "保本稳赚群主"
    text = f"你好，{nickname}！欢迎添加示例证券服务号，我是您的专属服务顾问。"
    result = lint(text, "welcome")
    assert result.verdict == "block"
    c1 = [f for f in result.findings if f.category == "C1"]
    assert c1 and text[c1[0].start : c1[0].end] == nickname[:4]


def test_same_welcome_with_a_plain_nickname_passes() -> None:
    assert lint("你好，王先生！欢迎添加示例证券服务号，我是您的专属服务顾问。", "welcome").verdict == "pass"


def test_free_text_has_no_structural_checks() -> None:
    assert lint("您好，欢迎添加。").verdict == "pass"
    result = lint("您好，欢迎添加。", "welcome")
    assert result.verdict == "review"
    assert [f.rule_id for f in result.findings] == ["S5.firm_name"]


def test_morning_report_requires_not_advice_source_date_adviser_firm_and_opt_out() -> None:
    bare = "今日策略：上证指数收于3200点，关注消费板块配置机会。"
    rules = {f.rule_id for f in lint(bare, "morning_report").findings}
    assert rules == {"S2.not_advice", "S3.source_date", "S4.adviser", "S5.firm_name", "S5.opt_out"}
    complete = (
        "【示例证券晨报】截至2025年3月3日，上证指数收于3200点（来源：Wind）。今日策略：关注消费板块配置机会。"
        "投资顾问：李明（执业编号S0570516010001）。以上内容仅供参考，不构成投资建议。回复TD退订。"
    )
    assert lint(complete, "morning_report").verdict == "pass"


def test_benefit_mention_needs_a_risk_warning() -> None:
    text = "货币基金七日年化收益率约1.8%。"
    assert [f.rule_id for f in lint(text, "keyword_reply").findings] == ["S1.risk_warning"]
    assert lint(text + "投资有风险，入市需谨慎。", "keyword_reply").verdict == "pass"


def test_links_must_be_on_the_allow_list() -> None:
    text = "【示例证券】直播报名：https://evil.example.com/x 。回复TD退订。"
    f = next(f for f in lint(text, "course_invite").findings if f.category == "S6")
    assert f.severity == "block" and text[f.start : f.end] == "https://evil.example.com/x"
    policy = LintPolicy(allowed_link_domains=("example.com",))
    assert lint(text, "course_invite", policy).verdict == "pass"


def test_policy_supplies_firm_name_and_opt_out_phrase() -> None:
    text = "【华东证券】周三晚8点直播，发送N停止接收。"
    assert lint(text, "course_invite").verdict == "review"
    policy = LintPolicy(firm_name="华东证券", opt_out_phrases=("发送N停止接收",))
    assert lint(text, "course_invite", policy).verdict == "pass"


def test_approved_disclaimer_is_allow_listed_by_exact_content() -> None:
    disclaimer = "保本基金说明：详见合同第五条。"
    assert lint("保本基金说明：详见合同第五条！").verdict == "block"
    policy = LintPolicy(disclaimers=(disclaimer,))
    assert lint(disclaimer, policy=policy).verdict == "pass"
    assert lint(disclaimer.replace("。", "！"), policy=policy).verdict == "block"


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(LintError):
        lint("hello", "newsletter")


# ---------------------------------------------------------------- result, inbound, data files


def test_result_to_dict_shape() -> None:
    data = lint("稳赚不赔").to_dict()
    assert data["verdict"] == "block"
    assert set(data["findings"][0]) == {
        "rule_id",
        "category",
        "severity",
        "layer",
        "start",
        "end",
        "matched",
        "message",
        "lexicon_version",
    }


def test_inbound_messages_are_counted_never_blocked() -> None:
    assert scan_inbound("你们这个保本吗？有没有内幕消息？") == {"C1": 1, "C5": 1}
    assert scan_inbound("你好") == {}


def test_shipped_lexicon_is_versioned_and_covers_all_categories() -> None:
    lexicon = load_lexicon()
    assert lexicon.version
    assert {f"C{i}" for i in range(1, 13)} <= {r.category for r in lexicon.rules.values()}
    assert lexicon.term_count >= 500
    assert load_rules().version


def test_custom_lexicon_file_is_loaded_and_its_version_reported(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.toml"
    path.write_text(
        'version = "test-7"\n[categories]\nC1 = { name = "x" }\n'
        '[[rules]]\nid = "C1.t"\ncategory = "C1"\nseverity = "warn"\nterms = ["好机会"]\n',
        encoding="utf-8",
    )
    engine = Engine(load_lexicon(str(path)))
    result = engine.lint("这是好機會")
    assert result.verdict == "review"
    assert result.findings[0].lexicon_version.startswith("test-7/")


def test_lexicon_without_version_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[rules]]\nid = "x"\ncategory = "C1"\nseverity = "block"\nterms = ["a"]\n', encoding="utf-8"
    )
    with pytest.raises(LexiconError):
        load_lexicon(str(path))
