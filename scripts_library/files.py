"""Scripts as TOML files: the shipped defaults, and export/import so a firm can review them in git."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.audit import AuditEntry
from models.base import utcnow
from models.scripts import Audience, Script, ScriptKind, ScriptVersion, VersionStatus
from scripts_library.catalogue import STAFF_KINDS, WorkflowError, content_hash
from scripts_library.compliance import LintPolicy
from scripts_library.rendering import TemplateError, check_template

DEFAULTS_DIR = Path(__file__).parent / "defaults"
SYSTEM_AUTHOR = "system:defaults"


@dataclass(frozen=True)
class ScriptFile:
    """One script as stored in a file."""

    key: str
    kind: str
    description: str
    body: str


def _toml_string(value: str) -> str:
    if "'''" not in value and "\r" not in value:
        return f"'''\n{value}'''"  # TOML drops the newline right after the opening quotes
    return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic strings


def read_script_file(path: Path) -> ScriptFile:
    """Parse and validate one script file; errors name the file and the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{path.name}: not valid TOML: {exc}") from None
    missing = [k for k in ("key", "kind", "body") if not isinstance(data.get(k), str)]
    if missing:
        raise WorkflowError(f"{path.name}: missing {', '.join(missing)}")
    if data["kind"] not in ScriptKind.__members__.values():
        raise WorkflowError(f"{path.name}: unknown kind {data['kind']!r}")
    body = data["body"].removeprefix("\n")
    try:
        check_template(body, data["kind"])
    except TemplateError as exc:
        raise WorkflowError(f"{path.name}: {exc}") from None
    return ScriptFile(data["key"], data["kind"], str(data.get("description", "")), body)


def write_script_file(directory: Path, script: ScriptFile) -> Path:
    """Write one script file named after its key."""
    path = directory / f"{script.key}.toml"
    path.write_text(
        f"key = {json.dumps(script.key)}\nkind = {json.dumps(script.kind)}\n"
        f"description = {json.dumps(script.description, ensure_ascii=False)}\n"
        f"body = {_toml_string(script.body)}\n",
        encoding="utf-8",
    )
    return path


def import_scripts(
    session: Session, directory: Path, author: str, policy: LintPolicy, only_missing: bool = False
) -> list[str]:
    """Add each file as a submitted version awaiting approval, unless its text is already current.

    With `only_missing` (how `init` seeds the defaults) scripts the firm already has are left alone.
    """
    from scripts_library.catalogue import preview_and_lint

    files = sorted(directory.glob("*.toml"))
    if not files:
        raise WorkflowError(f"no *.toml script files in {directory}")
    parsed = [read_script_file(path) for path in files]  # all valid before anything changes
    changed = []
    for item in parsed:
        script = session.scalars(select(Script).where(Script.key == item.key)).first()
        if script is None:
            audience = Audience.STAFF if item.kind in STAFF_KINDS else Audience.CUSTOMER
            script = Script(key=item.key, kind=item.kind, audience=audience, description=item.description)
            session.add(script)
            session.flush()
        elif only_missing:
            continue
        elif script.kind != item.kind:
            raise WorkflowError(f"{item.key}: file says kind {item.kind}, catalogue has {script.kind}")
        digest = content_hash(item.body)
        latest = session.scalars(
            select(ScriptVersion)
            .where(ScriptVersion.script_id == script.id)
            .order_by(ScriptVersion.number.desc())
        ).first()
        if latest is not None and latest.content_hash == digest and latest.status != VersionStatus.REJECTED:
            continue
        _, result = preview_and_lint(item.body, item.kind, policy)
        number = (
            session.scalar(select(func.max(ScriptVersion.number)).where(ScriptVersion.script_id == script.id))
            or 0
        ) + 1
        session.add(
            ScriptVersion(
                script_id=script.id,
                number=number,
                body=item.body,
                content_hash=digest,
                status=VersionStatus.SUBMITTED,
                author=author,
                submitted_at=utcnow(),
                lint_verdict=result.verdict,
                lint_findings=[f.to_dict() for f in result.findings],
                lexicon_version=result.lexicon_version,
            )
        )
        session.add(
            AuditEntry(
                at=utcnow(),
                actor=author,
                action="script.import",
                target=f"script:{item.key}:v{number}",
                detail={},
            )
        )
        changed.append(f"{item.key} v{number}")
    return changed


def export_scripts(session: Session, directory: Path) -> list[Path]:
    """Write each script's current text (approved if any, else newest) as a file."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for script in session.scalars(select(Script).order_by(Script.key)):
        versions = sorted(script.versions, key=lambda v: v.number, reverse=True)
        approved = [v for v in versions if v.status == VersionStatus.APPROVED]
        if not versions:
            continue
        current = approved[0] if approved else versions[0]
        written.append(
            write_script_file(
                directory, ScriptFile(script.key, script.kind, script.description, current.body)
            )
        )
    return written
