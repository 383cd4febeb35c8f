"""Console sign-in, lockout, address limits, CSRF, cookies, role checks on every view and translations."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from bot.accounts import create_user
from bot.app import create_app
from bot.config import ConfigError, Settings, load_settings
from bot.console import texts
from bot.services import Services
from models.audit import AuditEntry
from models.base import utcnow
from models.users import User

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "bot" / "console"
CATALOG_DIR = CONSOLE_DIR / "translations" / "zh_Hans_CN" / "LC_MESSAGES"
_TOKEN_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')

PEOPLE = {
    "ada": ("admin", "admin-password-1"),
    "olivia": ("operator", "operator-password"),
    "chen": ("compliance", "compliance-password"),
    "mia": ("manager", "manager-password"),
}


class Console:
    """A browser-like client: keeps cookies, reads CSRF tokens from the last page, signs in."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.token = ""

    def get(self, path: str, **kwargs: object) -> TestResponse:
        response = self.client.get(path, **kwargs)  # type: ignore[arg-type]
        found = _TOKEN_RE.search(response.get_data(as_text=True))
        if found:
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True) -> TestResponse:
        if csrf and not self.token:
            self.get("/console/login")
        form = {"csrf_token": self.token} if csrf else {}
        return self.client.post(path, data={**form, **(data or {})})

    def login(self, username: str, password: str | None = None) -> TestResponse:
        self.get("/console/login")
        return self.post(
            "/console/login", {"username": username, "password": password or PEOPLE[username][1]}
        )


def make_app(services: Services) -> Flask:
    """The app with people of every role."""
    with services.db.transaction() as session:
        for name, (role, password) in PEOPLE.items():
            create_user(session, name, role, password)
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(services: Services) -> Flask:
    return make_app(services)


@pytest.fixture
def console(app: Flask) -> Console:
    return Console(app.test_client())


def audit_actions(services: Services, target: str) -> list[str]:
    with services.db.read() as session:
        stmt = select(AuditEntry.action).where(AuditEntry.target == target).order_by(AuditEntry.id)
        return list(session.scalars(stmt))


def test_pages_need_sign_in_and_sign_in_lands_on_the_role_home(console: Console) -> None:
    response = console.get("/console/scripts")
    assert response.status_code == 302 and "/console/login" in response.location
    response = console.login("chen")
    assert response.status_code == 302
    assert console.get("/console/").location.endswith("/console/review")
    page = console.get("/console/review").get_data(as_text=True)
    assert "审核队列" in page and "chen" in page


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(
    console: Console, services: Services
) -> None:
    for username in ("olivia", "nobody"):
        response = console.login(username, "wrong-password!")
        assert response.status_code == 401
        assert "用户名或密码错误" in response.get_data(as_text=True)
    assert console.get("/console/scripts").status_code == 302
    assert audit_actions(services, "user:olivia") == ["user.create", "console.login_failed"]


def test_account_locks_after_repeated_failures_and_an_admin_unlocks_it(
    console: Console, services: Services, app: Flask
) -> None:
    limit = services.settings.console.max_failed_logins
    for _ in range(limit - 1):
        assert console.login("olivia", "wrong-password!").status_code == 401
    response = console.login("olivia", "wrong-password!")
    assert "已被临时锁定" in response.get_data(as_text=True)
    response = console.login("olivia")  # the right password no longer helps
    assert response.status_code == 401 and "已被临时锁定" in response.get_data(as_text=True)
    with services.db.read() as session:
        user = session.scalars(select(User).where(User.username == "olivia")).one()
        assert user.locked_until is not None
        lock_minutes = (user.locked_until - utcnow()) / timedelta(minutes=1)
        assert (
            services.settings.console.lockout_min - 1 < lock_minutes <= services.settings.console.lockout_min
        )
    admin = Console(app.test_client())
    admin.login("ada")
    assert "锁定至" in admin.get("/console/users").get_data(as_text=True)
    assert admin.post("/console/users/olivia/unlock").status_code == 302
    assert console.login("olivia").status_code == 302
    actions = audit_actions(services, "user:olivia")
    assert actions.count("user.lockout") == 1 and "user.unlock" in actions and actions[-1] == "console.login"


def test_one_address_is_limited_across_accounts(services: Services) -> None:
    limited = Services(
        services.settings.replace(console={"ip_max_attempts": 3, "ip_window_min": 10}),
        db=services.db,
        coordinator=services.coordinator,
    )
    console = Console(make_app(limited).test_client())
    for name in ("olivia", "chen", "mia"):
        assert console.login(name, "wrong-password!").status_code == 401
    response = console.login("ada")
    assert response.status_code == 429 and "登录尝试过多" in response.get_data(as_text=True)
    with services.db.read() as session:  # the refused attempt never reached the account
        assert session.scalars(select(User.last_login_at).where(User.username == "ada")).one() is None


def _sign_ins_from(services: Services, hops: int, addresses: list[str]) -> tuple[list[int], list[str]]:
    """Sign in as ada once from each forwarded address; the status codes and the audited clients."""
    settings = services.settings.replace(
        web={"trusted_proxies": hops}, console={"ip_max_attempts": 1, "ip_window_min": 10}
    )
    console = Console(
        make_app(Services(settings, db=services.db, coordinator=services.coordinator)).test_client()
    )
    codes = []
    for address in addresses:
        console.client.environ_base["HTTP_X_FORWARDED_FOR"] = f"198.51.100.99, {address}"
        codes.append(console.login("ada", "wrong-password!").status_code)
    with services.db.read() as session:
        details = session.scalars(
            select(AuditEntry.detail)
            .where(AuditEntry.action == "console.login_failed")
            .order_by(AuditEntry.id)
        )
        return codes, [d["client"] for d in details]


def test_forwarded_address_is_ignored_without_trusted_proxies(services: Services) -> None:
    codes, clients = _sign_ins_from(services, 0, ["203.0.113.7", "203.0.113.8"])
    assert codes == [401, 429]  # both attempts count against the one address the app sees
    assert clients == ["127.0.0.1"]


def test_one_trusted_proxy_hop_gives_each_client_its_own_address(services: Services) -> None:
    codes, clients = _sign_ins_from(services, 1, ["203.0.113.7", "203.0.113.8", "203.0.113.7"])
    # The address the proxy appended is used, never the one the client wrote before it.
    assert codes == [401, 401, 429]
    assert clients == ["203.0.113.7", "203.0.113.8"]


def test_forms_without_a_csrf_token_change_nothing(console: Console, services: Services) -> None:
    console.login("olivia")
    response = console.post("/console/scripts/new", {"key": "k1", "kind": "welcome"}, csrf=False)
    assert response.status_code == 400 and "表单已过期" in response.get_data(as_text=True)
    response = console.client.post("/console/scripts/k1/lint", json={"body": "x"})
    assert response.status_code == 400
    response = console.post("/console/logout", csrf=False)
    assert response.status_code == 400
    assert console.get("/console/scripts").status_code == 200  # still signed in
    assert audit_actions(services, "script:k1") == []


def test_roles_are_checked_on_views_and_actions(console: Console) -> None:
    console.login("mia")
    assert console.get("/console/scripts").status_code == 200
    assert console.get("/console/review").status_code == 200
    for path in ("/console/users", "/console/scripts/new"):
        response = console.get(path)
        assert response.status_code == 403 and "没有执行此操作的权限" in response.get_data(as_text=True)
    assert console.post("/console/scripts/x/v/1/approve").status_code == 403
    assert console.post("/console/review/held/1/release").status_code == 403


def test_every_console_view_declares_who_may_use_it(app: Flask) -> None:
    open_views = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("console.") or rule.endpoint == "console.static":
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "console_public", False):
            open_views.add(rule.endpoint)
        else:
            assert getattr(view, "console_roles", None), rule.endpoint
    assert open_views == {"console.login", "console.set_language"}


def test_session_cookie_is_hardened_and_configurable(services: Services) -> None:
    secure = Services(
        services.settings.replace(console={"secure_cookies": True, "session_lifetime_min": 30}),
        db=services.db,
        coordinator=services.coordinator,
    )
    app = make_app(secure)
    assert app.permanent_session_lifetime == timedelta(minutes=30)
    response = Console(app.test_client()).login("olivia")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie and "Expires=" in cookie


def test_disabling_an_account_ends_its_sessions(console: Console, app: Flask) -> None:
    console.login("olivia")
    assert console.get("/console/scripts").status_code == 200
    admin = Console(app.test_client())
    admin.login("ada")
    admin.get("/console/users")
    assert admin.post("/console/users/olivia/disable").status_code == 302
    response = admin.post("/console/users/ada/disable")
    page = admin.get(response.location).get_data(as_text=True)
    assert "不能停用自己的账号。" in page and "cannot disable your own account" not in page
    response = admin.post("/console/users/ghost/unlock")
    page = admin.get(response.location).get_data(as_text=True)
    assert "没有名为 ghost 的账号。" in page and "no account named" not in page
    assert console.get("/console/scripts").status_code == 302
    assert console.login("olivia").status_code == 401


def test_admin_creates_accounts_and_bad_input_is_shown_next_to_the_field(console: Console) -> None:
    console.login("ada")
    console.get("/console/users")
    response = console.post(
        "/console/users", {"username": "x y", "role": "operator", "password": "long-enough-1"}
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'class="field has-error"' in page
    assert "用户名为 2-64 个字符，可用字母、数字和 _.-@。" in page and "username: 2-64" not in page
    response = console.post(
        "/console/users", {"username": "olivia", "role": "operator", "password": "long-enough-1"}
    )
    page = response.get_data(as_text=True)
    assert "用户名 olivia 已被占用。" in page and "is taken" not in page
    response = console.post("/console/users", {"username": "ning", "role": "compliance", "password": "short"})
    assert "至少 10 个字符" in response.get_data(as_text=True)
    response = console.post(
        "/console/users", {"username": "ning", "role": "compliance", "password": "long-enough-1"}
    )
    assert response.status_code == 302
    assert "ning" in console.get("/console/users").get_data(as_text=True)


def test_logout_ends_the_session_and_next_only_stays_inside_the_console(console: Console) -> None:
    console.get("/console/login")
    response = console.post(
        "/console/login?next=https://evil.example/", {"username": "olivia", "password": PEOPLE["olivia"][1]}
    )
    assert response.location.endswith("/console/")
    console.get("/console/scripts")
    assert console.post("/console/logout").status_code == 302
    assert console.get("/console/scripts").status_code == 302


def test_english_is_available_and_chinese_is_the_default(console: Console) -> None:
    assert "登录" in console.get("/console/login").get_data(as_text=True)
    console.get("/console/lang/en?next=/console/login")
    page = console.get("/console/login").get_data(as_text=True)
    assert "Sign in" in page and "登录" not in page
    assert console.get("/console/lang/fr").status_code == 404


def test_console_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"console\.default_locale"):
        Settings().replace(console={"default_locale": "fr"})
    with pytest.raises(ConfigError, match=r"console\.max_failed_logins"):
        load_settings(environ={"BOT_CONSOLE__MAX_FAILED_LOGINS": "0"})
    with pytest.raises(ConfigError, match=r"web\.trusted_proxies"):
        load_settings(environ={"BOT_WEB__TRUSTED_PROXIES": "-1"})
    assert load_settings(environ={"BOT_CONSOLE__SECURE_COOKIES": "true"}).console.secure_cookies


def test_chinese_catalogue_translates_every_message_and_is_compiled() -> None:
    keywords = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None}
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    extracted = {
        message
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(CONSOLE_DIR), method_map=method_map, keywords=keywords
        )
    }
    with open(CATALOG_DIR / "messages.po", "rb") as fh:
        po = read_po(fh)
    with open(CATALOG_DIR / "messages.mo", "rb") as fh:
        mo = read_mo(fh)
    translated = {m.id: m.string for m in po if m.id}
    assert extracted - set(translated) == set(), "messages missing from the catalogue"
    assert all(translated[m] for m in extracted), "messages without a translation"
    assert {m.id: m.string for m in mo if m.id} == translated, "messages.mo is older than messages.po"


def test_a_message_already_dealt_with_is_refused_in_the_readers_language(
    console: Console, services: Services
) -> None:
    from bot.delivery.outbox import enqueue
    from models.deliveries import Channel
    from scripts_library import catalogue as cat
    from tests.scripts_fixtures import POLICY

    body = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"
    with services.db.transaction() as session:
        cat.create_script(session, "staff_reminder", "staff_reminder", "olivia")
        cat.save_draft(session, "staff_reminder", body, "olivia", POLICY)
        cat.submit(session, "staff_reminder", 1, "olivia", POLICY)
        cat.approve(session, "staff_reminder", 1, "chen", POLICY)
        held = enqueue(
            session, purpose_key="p1", channel=Channel.APP_MESSAGE, recipient="zhangsan",
            script_key="staff_reminder", policy=POLICY,
            values={"manager": {"name": "张三"}, "task": {"title": "确认全市场最佳的方案", "due": "9点"}},
        ).id  # fmt: skip
    console.login("chen")
    console.get("/console/review")
    assert console.post(f"/console/review/held/{held}/release").status_code == 302
    again = console.post(f"/console/review/held/{held}/discard", {"reason": "重复"})
    page = console.get(again.location).get_data(as_text=True)
    assert f"未作废：消息 {held} 已不在待审核状态" in page and "not held for review" not in page


# Each service error class, the module raising it and the call names its refusals are raised through.
CODED_ERRORS = [
    ("bot.campaigns.courses", {"CourseError", "error", "RowProblem"}),
    ("bot.leads.hookcodes", {"HookCodeError"}),
    ("bot.campaigns.audience", {"AudienceError"}),
    ("bot.campaigns.controls", {"ControlError"}),
    ("bot.accounts", {"AccountError"}),
]


def coded_calls(module_name: str, names: set[str]) -> tuple[set[str], list[int]]:
    """Literal codes of the errors `module_name` raises through `names`; lines raising one without a code."""
    module = importlib.import_module(module_name)
    codes: set[str] = set()
    uncoded: list[int] = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in names:
            if len(node.args) < 2:
                uncoded.append(node.lineno)
            else:
                codes |= {c.value for c in ast.walk(node.args[1]) if isinstance(c, ast.Constant)}
    return codes, uncoded


@pytest.mark.parametrize(("module_name", "names"), CODED_ERRORS)
def test_every_service_refusal_has_a_code_and_the_console_words_each_code(
    module_name: str, names: set[str]
) -> None:
    codes, uncoded = coded_calls(module_name, names)
    assert uncoded == [] and codes, module_name
    assert codes <= set(texts.REFUSALS), codes - set(texts.REFUSALS)


def test_every_console_refusal_text_belongs_to_a_service_code() -> None:
    raised = set().union(*(coded_calls(module, names)[0] for module, names in CODED_ERRORS))
    raised |= coded_calls("bot.campaigns.catalog", {"CampaignError"})[0]
    # The two course lead times are refused in a loop, their codes taken from its tuple.
    assert set(texts.REFUSALS) - raised == {"course.invite_minutes", "course.reminder_minutes"}
