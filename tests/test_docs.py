"""The operator documentation and deployment files cannot drift from the code they describe.

Settings are introspected from `bot.config`, commands from the click tree of `wecom-bot`, routes from
the Flask app; the documents, systemd units and nginx site are parsed and checked against them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import click
import pytest

from bot.cli import main
from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"
DOC_FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
UNITS = {
    "wecom-bot-web.service": "serve",
    "wecom-bot-worker@.service": "worker",
    "wecom-bot-scheduler.service": "scheduler",
}
# Fenced blocks in these languages hold no shell commands.
NOT_SHELL = {"mermaid", "sql", "toml", "ini", "nginx", "json"}
# Where a command line ends in a shell snippet.
SHELL_STOPS = {"|", "||", "&&", ";", ">", ">>", "2>", "#"}
PLACEHOLDER_OR_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


# --- settings --------------------------------------------------------------------------------------


def _sections() -> Iterator[tuple[str, Any]]:
    defaults = Settings()
    for section in fields(Settings):
        yield section.name, getattr(defaults, section.name)


def _setting_fields() -> Iterator[tuple[str, Field[Any], Any, Any]]:
    """(section, field, type, default) for every key of every settings section."""
    for section, values in _sections():
        hints = get_type_hints(type(values))
        for item in fields(values):
            yield section, item, hints[item.name], getattr(values, item.name)


def _type_name(kind: Any) -> str:
    if get_origin(kind) is tuple:
        return "list of strings"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}[kind]


def _toml_literal(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_literal(item) for item in value) + "]"


def _table_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _configuration_rows() -> dict[tuple[str, str], list[str]]:
    """The rows of CONFIGURATION.md's per-section tables, keyed by (section, key)."""
    rows: dict[tuple[str, str], list[str]] = {}
    section = None
    for line in (DOCS / "CONFIGURATION.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## \[(\w+)\]\s*$", line)
        if heading:
            section = heading.group(1)
            continue
        if line.startswith("## "):
            section = None
        if section and re.match(r"^\| `\w+` \|", line):
            cells = _table_cells(line)
            key = cells[0].strip("`")
            assert (section, key) not in rows, f"{section}.{key} is documented twice"
            rows[(section, key)] = cells
    return rows


def test_every_setting_is_documented_with_its_type_default_and_variable() -> None:
    rows = _configuration_rows()
    problems = []
    for section, item, kind, default in _setting_fields():
        where = f"{section}.{item.name}"
        cells = rows.get((section, item.name))
        if cells is None:
            problems.append(f"{where}: missing from docs/CONFIGURATION.md")
            continue
        if len(cells) != 5:
            problems.append(f"{where}: expected 5 cells (key, type, default, meaning, variable), got {cells}")
            continue
        _, type_cell, default_cell, meaning, variable = cells
        expected = {
            "type": _type_name(kind),
            "default": f"`{_toml_literal(default)}`",
            "variable": f"`BOT_{section.upper()}__{item.name.upper()}`",
        }
        found = {"type": type_cell, "default": default_cell, "variable": variable}
        problems += [
            f"{where}: {what} is {found[what]!r}, the code says {expected[what]!r}"
            for what in expected
            if found[what] != expected[what]
        ]
        if not meaning:
            problems.append(f"{where}: no meaning given")
    assert not problems, "\n".join(problems)


def test_configuration_documents_only_settings_that_exist() -> None:
    known = {(section, item.name) for section, item, _, _ in _setting_fields()}
    unknown = sorted(f"{s}.{k}" for s, k in set(_configuration_rows()) - known)
    assert not unknown, f"documented but not in bot/config.py: {unknown}"


# --- command lines ---------------------------------------------------------------------------------


def _code_snippets(text: str) -> Iterator[str]:
    """Shell-like text of a Markdown document: lines of fenced blocks and inline code spans."""
    fence: str | None = None
    language = ""
    pending = ""
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+|~~~+)\s*(\S*)", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            if fence is None:
                fence, language = marker.group(1), marker.group(2).lower()
            else:
                fence, language = None, ""
            continue
        if fence is not None:
            if language in NOT_SHELL:
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield pending + line
            pending = ""
            continue
        table_row = line.lstrip().startswith("|")
        for span in re.findall(r"`([^`\n]+)`", line):
            yield span.replace("\\|", "|") if table_row else span


def _command_lines(snippet: str) -> Iterator[str]:
    """Each `wecom-bot …` invocation in a snippet, from its first argument on."""
    starts = [
        match
        for match in re.finditer(r"(?:(?<=^)|(?<=[\s`'\"(])|(?<=bin/))wecom-bot(?=[ \t])", snippet)
        # Not the value of an option, e.g. `--uid wecom-bot`.
        if not (snippet[: match.start()].split() or [""])[-1].startswith("-")
    ]
    ends: list[int | None] = [following.start() for following in starts[1:]]
    for match, end in zip(starts, [*ends, None], strict=False):
        yield snippet[match.end() : end]


def _tokens(command: str) -> list[str]:
    try:
        tokens = shlex.split(command, comments=False)
    except ValueError:
        tokens = command.split()
    for index, token in enumerate(tokens):
        if token in SHELL_STOPS:
            return tokens[:index]
    return tokens


def _option(command: click.Command, name: str) -> click.Option | None:
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option) and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def check_command(tokens: list[str], path: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Walk `tokens` (after `wecom-bot`) down the click tree; return (command path, problems)."""
    command: click.Command = main
    walked: list[str] = []
    problems: list[str] = []
    queue = list(tokens)
    while queue:
        token = queue.pop(0)
        if token.lstrip("[").startswith("--"):
            for piece in token.strip("[]").split("|"):
                name, has_value, _ = piece.partition("=")
                if not name.startswith("--"):
                    continue
                option = _option(command, name)
                if option is None:
                    problems.append(f"`{' '.join(['wecom-bot', *walked])}` has no option {name}")
                elif isinstance(command, click.Group) and not has_value and not option.is_flag and queue:
                    queue.pop(0)  # the option's value, not a command name
            continue
        if isinstance(command, click.Group):
            if not PLACEHOLDER_OR_WORD.match(token):
                break  # a placeholder such as `wecom-bot …`
            sub = command.commands.get(token)
            if sub is None:
                problems.append(f"`{' '.join(['wecom-bot', *walked])}` has no command {token!r}")
                break
            command = sub
            walked.append(token)
    return walked, problems


def check_command_text(text: str) -> list[str]:
    """Check one documented invocation, including `a / b / c` sibling alternatives."""
    problems: list[str] = []
    walked: list[str] = []
    for index, alternative in enumerate(text.split(" / ")):
        tokens = _tokens(alternative)
        if index and walked:
            tokens = walked[:-1] + tokens
        walked, found = check_command(tokens)
        problems += [f"{problem} (in `wecom-bot {text.strip()}`)" for problem in found]
    return problems


def _documented_commands() -> Iterator[tuple[Path, str]]:
    for path in DOC_FILES:
        for snippet in _code_snippets(path.read_text(encoding="utf-8")):
            for command in _command_lines(snippet):
                yield path, command


def test_docs_mention_many_commands() -> None:
    # Guards the extraction itself: the runbook alone names dozens of invocations.
    assert len(list(_documented_commands())) > 60


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_every_documented_command_and_option_exists(path: Path) -> None:
    problems = []
    for source, command in _documented_commands():
        if source == path:
            problems += check_command_text(command)
    assert not problems, "\n".join(problems)


def test_the_command_checker_catches_mistakes() -> None:
    assert check_command_text("events replay --all-dead --as alice") == []
    assert check_command_text("--config /etc/wecom-bot/bot.toml doctor") == []
    assert check_command_text("calendar status / check DATE / overrides add DATE --closed|--open") == []
    assert check_command_text("events purge")
    assert check_command_text("ledger verify --anchr 1:ab")
    assert check_command_text("sending stop --reason x --as a / resume --force")


# --- links -----------------------------------------------------------------------------------------


def _prose_lines(text: str) -> Iterator[str]:
    fence: str | None = None
    for line in text.splitlines():
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if marker and (fence is None or marker.group(1).startswith(fence)):
            fence = marker.group(1) if fence is None else None
            continue
        if fence is None:
            yield line


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -N for repeats."""
    anchors: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    problems = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", line):
            if re.match(r"^[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            destination = (path.parent / file_part).resolve() if file_part else path
            if not destination.exists():
                problems.append(f"{target}: {destination} does not exist")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                problems.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert not problems, "\n".join(problems)


def test_the_docs_link_to_each_other() -> None:
    names = {"WECOM_SETUP.md", "CONFIGURATION.md", "DEPLOYMENT.md", "RUNBOOK.md", "ARCHITECTURE.md"}
    for name in names:
        text = (DOCS / name).read_text(encoding="utf-8")
        assert any(f"]({other}" in text for other in names - {name}), f"{name} links to no other page"


# --- deployment files ------------------------------------------------------------------------------


def _unit_values(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith(f"{key}=")]


@pytest.mark.parametrize(("unit", "command"), UNITS.items())
def test_systemd_units_run_real_commands(unit: str, command: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    (exec_start,) = _unit_values(text, "ExecStart")
    program, *arguments = shlex.split(exec_start)
    assert program.endswith("/wecom-bot"), program
    walked, problems = check_command(arguments)
    assert not problems, problems
    assert walked == [command]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_set_only_real_settings(unit: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text(encoding="utf-8")
    environ = dict(value.split("=", 1) for value in _unit_values(text, "Environment"))
    assert environ.pop("BOT_CONFIG", "").endswith(".toml")
    assert environ, f"{unit} sets no settings of its own"
    load_settings(environ=environ)  # raises on an unknown key or a bad value


def test_environment_example_names_only_real_settings() -> None:
    known = {f"BOT_{section.upper()}__{item.name.upper()}" for section, item, _, _ in _setting_fields()}
    text = (DEPLOY / "wecom-bot.env.example").read_text(encoding="utf-8")
    names = re.findall(r"^(BOT_\w+)=", text, flags=re.MULTILINE)
    assert names
    assert set(names) <= known, sorted(set(names) - known)


def _nginx_locations() -> list[tuple[str, str, str]]:
    """(modifier, path, body) of each active location block of the nginx site."""
    text = (DEPLOY / "nginx" / "wecom-bot.conf").read_text(encoding="utf-8")
    active = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    pattern = r'location\s+(=|\^~|~\*?)?\s*"?([^\s"{]+)"?\s*\{([^{}]*)\}'
    return [(m.group(1) or "", m.group(2), m.group(3)) for m in re.finditer(pattern, active)]


@pytest.fixture(scope="module")
def url_rules() -> list[str]:
    from bot.app import create_app

    app = create_app(Settings().replace(database={"url": "sqlite://"}))
    return [rule.rule for rule in app.url_map.iter_rules()]


def test_nginx_proxies_only_paths_the_app_serves(url_rules: list[str]) -> None:
    proxied = [(mod, path) for mod, path, body in _nginx_locations() if "proxy_pass" in body]
    assert ("=", "/wecom/callback") in proxied
    assert any(path == "/console/" for _, path in proxied)
    for modifier, path in proxied:
        if modifier == "=":
            assert path in url_rules, f"nginx proxies {path}, which the app does not serve"
        else:
            assert any(rule.startswith(path) for rule in url_rules), f"nothing the app serves is under {path}"


def test_nginx_callback_limits_match_the_settings() -> None:
    (body,) = [body for mod, path, body in _nginx_locations() if (mod, path) == ("=", "/wecom/callback")]
    size = re.search(r"client_max_body_size\s+(\d+)([kKmM]?);", body)
    assert size is not None
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2).lower()]
    assert int(size.group(1)) * factor == Settings().web.max_body_bytes
    # No URI after the upstream: the request line, query string included, is passed unchanged.
    assert re.search(r"proxy_pass\s+http://\w+;", body)
