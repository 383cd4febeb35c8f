"""Normalization layers and the offset map back to the original text."""

from __future__ import annotations

import pytest

from scripts_library.compliance import canonical, normalize


def _orig(text: str, needle: str) -> str:
    """Original substring behind the first occurrence of `needle` on the digit layer."""
    n = normalize(text)
    i = n.text.index(needle)
    start, end = n.span(i, i + len(needle))
    return text[start:end]


def test_full_width_latin_and_digits_fold_to_ascii_lower_case() -> None:
    n = normalize("ＧＵＡＲＡＮＴＥＥＤ　ＲＥＴＵＲＮ ６００５１９")
    assert n.normalized == "guaranteed return 600519"
    assert (
        _orig("ＧＵＡＲＡＮＴＥＥＤ　ＲＥＴＵＲＮ", "guaranteedreturn")
        == "ＧＵＡＲＡＮＴＥＥＤ　ＲＥＴＵＲＮ"
    )


def test_zero_width_and_soft_hyphen_are_removed_but_spans_cover_them() -> None:
    text = "这是稳\u200b赚\u200d不\u00ad赔的"
    n = normalize(text)
    assert n.text == "这是稳赚不赔的"
    assert _orig(text, "稳赚不赔") == "稳\u200b赚\u200d不\u00ad赔"
    i = n.text.index("稳赚不赔")
    assert n.span(i, i + 4) == (2, 9)


def test_traditional_characters_become_simplified_with_one_to_one_offsets() -> None:
    text = "這款產品穩賺不賠"
    n = normalize(text)
    assert n.text == "这款产品稳赚不赔"
    assert n.span(4, 8) == (4, 8)
    assert n.layer(4, 8) == "normalized"


@pytest.mark.parametrize(
    ("text", "skeleton"),
    [
        ("保-本 稳 赚", "保本稳赚"),
        ("稳.赚.不.赔", "稳赚不赔"),
        ("内|幕|消|息", "内幕消息"),
        ("“保”“本”", "保本"),
    ],
)
def test_separators_inside_a_clause_are_dropped(text: str, skeleton: str) -> None:
    assert normalize(text).skeleton == skeleton


def test_sentence_punctuation_stays_a_hard_boundary() -> None:
    assert normalize("确保，本金").text == "确保,本金"
    assert normalize("稳。赚").text == "稳。赚"


def test_separator_span_maps_back_over_the_separators() -> None:
    text = "放心，保-本 稳 赚！"
    n = normalize(text)
    i = n.text.index("保本稳赚")
    start, end = n.span(i, i + 4)
    assert (start, end) == (3, 10)
    assert text[start:end] == "保-本 稳 赚"
    assert n.layer(i, i + 4) == "skeleton"


def test_chinese_numerals_become_digits_on_the_digit_layer_only() -> None:
    text = "沪指将突破三千五百点"
    n = normalize(text)
    assert n.skeleton == text
    assert n.text == "沪指将突破3500点"
    i = n.text.index("3500")
    assert text[slice(*n.span(i, i + 4))] == "三千五百"
    assert n.layer(i, i + 5) == "digits"


@pytest.mark.parametrize(
    ("zh", "digits"),
    [
        ("三千五百点", "3500点"),
        ("三千五", "3500"),
        ("两万五千元", "25000元"),
        ("二〇二五年三月一日", "2025年3月1日"),
        ("百分之五十", "50%"),
        ("1.2万亿元", "1200000000000元"),
        ("3千5百", "3500"),
        ("十倍股", "10倍股"),
    ],
)
def test_numeral_conversion(zh: str, digits: str) -> None:
    assert normalize(zh).text == digits


def test_ordinary_words_with_numeral_characters_are_left_alone() -> None:
    assert normalize("一定要注意，千万不要，周三晚8点").text == "一定要注意,千万不要,周三晚8点"


def test_circled_and_negative_circled_digits_become_digits() -> None:
    text = "沪指将突破③⑤⓪⓪点，❸❺⓿⓿点"
    n = normalize(text)
    assert n.text == "沪指将突破3500点,3500点"
    i = n.text.index("3500")
    assert text[slice(*n.span(i, i + 4))] == "③⑤⓪⓪"


def test_emoji_are_removed() -> None:
    text = "稳💰赚不赔🚀"
    n = normalize(text)
    assert n.text == "稳赚不赔"
    assert text[slice(*n.span(0, 4))] == "稳💰赚不赔"


def test_thousands_separators_are_removed_but_codes_stay_apart() -> None:
    assert normalize("收于3,200点").text == "收于3200点"
    assert normalize("600519 100股").text == "600519 100股"
    assert normalize("6 0 0 5 1 9 买入").text == "600519买入"


def test_date_joiners_between_digits_are_kept() -> None:
    assert normalize("2025-03-01 20:00").text == "2025-03-01 20:00"


def test_homoglyphs_and_diacritics_fold_to_latin() -> None:
    assert normalize("gu\u0430rántééd").text == "guaranteed"


def test_lexicon_terms_are_normalized_like_text() -> None:
    assert canonical("穩賺 不賠") == "稳赚不赔"
    assert canonical("Risk-Free") == "riskfree"
    assert canonical("胜率百分之百") == "胜率100%"


def test_empty_text() -> None:
    n = normalize("")
    assert n.text == ""
    assert n.span(0, 0) == (0, 0)
