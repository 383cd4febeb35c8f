"""Settings load from TOML, take env overrides, and refuse bad values naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, ConfigWarning, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_embedded_deployment() -> None:
    s = load_settings(environ={})
    assert s.database.url.startswith("sqlite:///")
    assert s.redis.url == ""
    assert s.wecom.api_base_url == "https://qyapi.weixin.qq.com"


def test_example_config_documents_every_key() -> None:
    import tomllib

    from bot.config import Settings

    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    for section, values in Settings().__dict__.items():
        assert section in example, section
        assert set(example[section]) == set(values.__dict__), section
    load_settings(ROOT / "config.example.toml", environ={})


def test_file_then_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[wecom]\ncorp_id = "ww1"\nagent_id = 5\n[database]\nurl = "sqlite:///x.db"\n')
    env = {"BOT_WECOM__AGENT_ID": "7", "BOT_REDIS__URL": "redis://127.0.0.1:6379/0", "BOT_CONFIG": "ignored"}
    s = load_settings(path, environ=env)
    assert (s.wecom.corp_id, s.wecom.agent_id, s.redis.url) == ("ww1", 7, "redis://127.0.0.1:6379/0")


def test_bot_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[web]\nport = 9000\n")
    assert load_settings(environ={"BOT_CONFIG": str(path)}).web.port == 9000


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BOT_WECOM__AGENT_ID": "abc"}, "wecom.agent_id: expected an integer"),
        ({"BOT_WECOM__ENCODING_AES_KEY": "short"}, "wecom.encoding_aes_key"),
        ({"BOT_WECOM__MAX_CLOCK_SKEW_S": "-1"}, "wecom.max_clock_skew_s"),
        ({"BOT_WECOM__NOPE": "1"}, "wecom.nope: unknown key"),
        ({"BOT_NOSECTION__X": "1"}, "nosection: unknown section"),
        ({"BOT_REDIS__URL": "http://x"}, "redis.url"),
        ({"BOT_DATABASE__ECHO": "maybe"}, "database.echo: expected true or false"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(environ=env)


def test_bad_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[wecom\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text("wecom = 1\n")
    with pytest.raises(ConfigError, match="expected a \\[section\\] table"):
        load_settings(wrong_type, environ={})


def test_a_removed_key_is_ignored_with_a_warning_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[web]\ndedupe_ttl_s = 86400\nport = 9000\n")
    with pytest.warns(ConfigWarning, match=r"web\.dedupe_ttl_s is no longer a setting and is ignored"):
        s = load_settings(path, environ={})
    assert s.web.port == 9000 and not hasattr(s.web, "dedupe_ttl_s")
    with pytest.warns(ConfigWarning, match="unset BOT_WEB__DEDUPE_TTL_S"):
        load_settings(environ={"BOT_WEB__DEDUPE_TTL_S": "60"})
    with pytest.raises(ConfigError, match=r"web\.dedupe_ttl: unknown key"):  # a typo is still an error
        load_settings(environ={"BOT_WEB__DEDUPE_TTL": "60"})
