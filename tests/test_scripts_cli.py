"""`wecom-bot init` seeds the default scripts; `scripts` commands follow the same rules as the API."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from bot.cli import main
from bot.services import Services
from models.scripts import Script, ScriptVersion, VersionStatus
from scripts_library.files import DEFAULTS_DIR, read_script_file


def invoke(runner: CliRunner, env: dict[str, str], *args: str) -> str:
    result = runner.invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_init_seeds_every_default_as_submitted_once(
    runner: CliRunner, env: dict[str, str], services: Services
) -> None:
    env = {**env, "BOT_ADMIN_USERNAME": "root", "BOT_ADMIN_PASSWORD": "a-long-password"}
    out = invoke(runner, env, "init", "--no-input")
    assert f"default scripts awaiting compliance approval: {len(list(DEFAULTS_DIR.glob('*.toml')))}" in out
    invoke(runner, env, "init", "--no-input")
    with services.db.transaction() as session:
        versions = list(session.scalars(select(ScriptVersion)))
        kinds = set(session.scalars(select(Script.kind)))
    assert len(versions) == len(list(DEFAULTS_DIR.glob("*.toml")))
    assert all(v.status == VersionStatus.SUBMITTED and v.lint_verdict == "pass" for v in versions)
    assert kinds == {
        "welcome", "morning_report", "course_invite", "course_reminder", "subscribe_confirm",
        "unsubscribe_confirm", "keyword_reply", "fallback", "handoff_brief", "staff_reminder",
    }  # fmt: skip


def test_workflow_from_the_command_line(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    invoke(runner, env, "users", "add", "olivia", "--role", "operator", "--password", "operator-password")
    invoke(runner, env, "users", "add", "chen", "--role", "compliance", "--password", "compliance-password")
    invoke(runner, env, "scripts", "create", "fallback_main", "--kind", "fallback", "--as", "olivia")
    draft = tmp_path / "fallback.txt"
    draft.write_text(
        "{{ lead.display_name }}您好，本群保本保收益，稳赚不赔！{{ firm.opt_out }}", encoding="utf-8"
    )
    out = invoke(runner, env, "scripts", "draft", "fallback_main", str(draft), "--as", "olivia")
    assert "lint: block" in out
    invoke(runner, env, "scripts", "submit", "fallback_main", "1", "--as", "olivia")
    result = runner.invoke(main, ["scripts", "approve", "fallback_main", "1", "--as", "chen"], env=env)
    assert result.exit_code == 1 and "cannot be approved" in result.output
    result = runner.invoke(main, ["scripts", "approve", "fallback_main", "1", "--as", "olivia"], env=env)
    assert result.exit_code == 1 and "not a compliance reviewer" in result.output
    invoke(runner, env, "scripts", "reject", "fallback_main", "1", "--as", "chen", "--reason", "含保本承诺")

    draft.write_text(
        "{{ lead.display_name }}您好，消息已收到，工作人员会尽快回复。{{ firm.opt_out }}", encoding="utf-8"
    )
    assert "lint: pass" in invoke(
        runner, env, "scripts", "draft", "fallback_main", str(draft), "--as", "olivia"
    )
    invoke(runner, env, "scripts", "submit", "fallback_main", "2", "--as", "olivia")
    invoke(
        runner, env, "scripts", "approve", "fallback_main", "2", "--as", "chen", "--valid-from", "2026-01-01"
    )
    out = invoke(runner, env, "scripts", "list")
    assert "v1:rejected v2:approved" in out
    assert "approved by chen" in invoke(runner, env, "scripts", "show", "fallback_main")
    result = runner.invoke(
        main, ["scripts", "approve", "fallback_main", "2", "--as", "chen", "--valid-from", "soon"], env=env
    )
    assert result.exit_code == 2 and "ISO" in result.output

    exported = tmp_path / "export"
    invoke(runner, env, "scripts", "export", str(exported))
    item = read_script_file(exported / "fallback_main.toml")
    assert item.body == draft.read_text(encoding="utf-8") and item.kind == "fallback"
    assert "imported 0 version(s)" in invoke(
        runner, env, "scripts", "import", str(exported), "--as", "olivia"
    )
    (exported / "fallback_main.toml").write_text(
        (exported / "fallback_main.toml").read_text(encoding="utf-8").replace("尽快", "马上"),
        encoding="utf-8",
    )
    assert "fallback_main v3" in invoke(runner, env, "scripts", "import", str(exported), "--as", "olivia")


def test_import_refuses_bad_files_and_changes_nothing(
    runner: CliRunner,
    env: dict[str, str],
    tmp_path: Path,
    services: Services,
) -> None:
    invoke(runner, env, "users", "add", "olivia", "--role", "operator", "--password", "operator-password")
    good = tmp_path / "a_good.toml"
    good.write_text(
        'key = "fallback_a"\nkind = "fallback"\nbody = "您好{{ lead.display_name }}"\n', encoding="utf-8"
    )
    bad = tmp_path / "b_bad.toml"
    bad.write_text('key = "fallback_b"\nkind = "fallback"\nbody = "{{ lead.__class__ }}"\n', encoding="utf-8")
    result = runner.invoke(main, ["scripts", "import", str(tmp_path), "--as", "olivia"], env=env)
    assert result.exit_code == 1 and "b_bad.toml" in result.output
    with services.db.transaction() as session:
        assert session.scalars(select(Script)).all() == []
