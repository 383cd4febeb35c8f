"""Sandboxed script templates: each kind may use only its declared variables, checked at save time."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.scripts import ScriptKind

_FIRM = {"firm": frozenset({"name", "opt_out"})}
_LEAD = {"lead": frozenset({"display_name"})}
_COURSE = {"course": frozenset({"title", "speaker", "speaker_sac", "start_time", "link"})}

# What each kind may reference. Mass-sent kinds get campaign-level values only: the same text
# goes to thousands of customers in one WeCom task.
KIND_VARIABLES: dict[str, dict[str, frozenset[str]]] = {
    ScriptKind.WELCOME: {
        **_FIRM,
        **_LEAD,
        "manager": frozenset({"name"}),
        "hook": frozenset({"platform_name"}),
    },
    ScriptKind.MORNING_REPORT: {**_FIRM, "report": frozenset({"date", "weekday"})},
    ScriptKind.COURSE_INVITE: {**_FIRM, **_COURSE},
    ScriptKind.COURSE_REMINDER: {**_FIRM, **_COURSE},
    ScriptKind.SUBSCRIBE_CONFIRM: {**_FIRM, **_LEAD},
    ScriptKind.UNSUBSCRIBE_CONFIRM: {**_FIRM, **_LEAD},
    ScriptKind.KEYWORD_REPLY: {**_FIRM, **_LEAD},
    ScriptKind.FALLBACK: {**_FIRM, **_LEAD},
    ScriptKind.HANDOFF_BRIEF: {
        **_FIRM,
        "lead": frozenset(
            {"display_name", "platform", "hook_code", "score", "score_reasons", "last_messages", "stage"}
        ),
        "manager": frozenset({"name"}),
        "handoff": frozenset({"id", "sla_minutes"}),
    },
    ScriptKind.STAFF_REMINDER: {
        **_FIRM,
        "manager": frozenset({"name"}),
        "task": frozenset({"title", "due", "link"}),
    },
}

SAFE_FILTERS = frozenset({"trim", "upper", "lower", "truncate", "default"})

# Neutral values used to preview and lint a template before it is approved.
SAMPLE_VALUES: dict[str, dict[str, str]] = {
    "firm": {"name": "示例证券", "opt_out": "回复TD退订"},
    "lead": {
        "display_name": "王先生",
        "platform": "小红书",
        "hook_code": "XHS888",
        "score": "72",
        "score_reasons": "订阅早报 +10；报名直播课 +15；询问开户 +30",
        "last_messages": "想了解一下开户流程",
        "stage": "qualified",
    },
    "manager": {"name": "李经理"},
    "hook": {"platform_name": "小红书"},
    "report": {"date": "2026年11月24日", "weekday": "星期二"},
    "course": {
        "title": "ETF定投入门",
        "speaker": "张老师",
        "speaker_sac": "S0570516010001",
        "start_time": "11月26日 周三 20:00",
        "link": "https://work.weixin.qq.com/live/abc",
    },
    "handoff": {"id": "1024", "sla_minutes": "30"},
    "task": {"title": "确认早报群发", "due": "08:30", "link": "https://work.weixin.qq.com/"},
}


class TemplateError(ValueError):
    """A script body is not an acceptable template for its kind."""


class RenderError(ValueError):
    """A template could not be rendered with the values given."""


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Const,
    nodes.If,
    nodes.Not,
    nodes.And,
    nodes.Or,
    nodes.CondExpr,
)


def _check_node(node: nodes.Node, allowed: Mapping[str, frozenset[str]], kind: str) -> None:
    where = f"line {getattr(node, 'lineno', '?')}"
    if isinstance(node, nodes.Getattr):
        if not isinstance(node.node, nodes.Name) or node.node.name not in allowed:
            raise TemplateError(f"{where}: only <variable>.<field> is allowed")
        if node.attr not in allowed[node.node.name]:
            fields = ", ".join(sorted(allowed[node.node.name]))
            raise TemplateError(
                f"{where}: {node.node.name}.{node.attr} is not available in {kind} (fields: {fields})"
            )
        return
    if isinstance(node, nodes.Name):
        if node.name not in allowed:
            names = ", ".join(sorted(allowed))
            raise TemplateError(f"{where}: unknown variable {node.name!r} in {kind} (available: {names})")
        raise TemplateError(f"{where}: use a field such as {node.name}.{sorted(allowed[node.name])[0]}")
    if isinstance(node, nodes.Filter):
        if node.name not in SAFE_FILTERS:
            raise TemplateError(
                f"{where}: filter {node.name!r} is not allowed ({', '.join(sorted(SAFE_FILTERS))})"
            )
        if (
            node.kwargs
            or node.dyn_args
            or node.dyn_kwargs
            or not all(isinstance(a, nodes.Const) for a in node.args)
        ):
            raise TemplateError(f"{where}: filter arguments must be plain constants")
        if node.node is not None:
            _check_node(node.node, allowed, kind)
        return
    if not isinstance(node, _ALLOWED_NODES):
        raise TemplateError(f"{where}: {type(node).__name__.lower()} is not allowed in scripts")
    for child in node.iter_child_nodes():
        _check_node(child, allowed, kind)


def check_template(body: str, kind: str) -> None:
    """Refuse syntax errors, unknown variables and anything beyond plain substitution and `if`."""
    if kind not in KIND_VARIABLES:
        raise TemplateError(f"unknown script kind {kind!r}")
    try:
        tree = _ENV.parse(body)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    _check_node(tree, KIND_VARIABLES[kind], kind)


@lru_cache(maxsize=512)
def _compiled(body: str, kind: str) -> Any:
    check_template(body, kind)  # a template that fails raises, and is not remembered
    return _ENV.from_string(body)


def render(body: str, kind: str, values: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a checked template with per-kind values; only declared variables are passed in."""
    template = _compiled(body, kind)
    allowed = KIND_VARIABLES[kind]
    scoped = {
        name: {f: values[name][f] for f in fields if f in values.get(name, {})}
        for name, fields in allowed.items()
    }
    try:
        return str(template.render(scoped))
    except (UndefinedError, SecurityError) as exc:
        raise RenderError(f"cannot render {kind} script: {exc}") from None


def sample_render(body: str, kind: str) -> str:
    """Render with neutral sample values: the preview authors see and the text approval lints."""
    return render(body, kind, SAMPLE_VALUES)
