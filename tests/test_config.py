"""Settings: the file, the environment over it, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from inventory.config import Settings, load_settings
from inventory.errors import ConfigError

from conftest import TOKEN

ROOT = Path(__file__).resolve().parents[1]


def test_the_example_file_documents_exactly_the_defaults() -> None:
    assert load_settings(ROOT / "config.example.toml", environ={}) == Settings()


def test_without_any_file_the_store_is_a_local_sqlite_file() -> None:
    settings = load_settings(environ={}, use_file=False)
    assert settings.database_url().render_as_string() == (
        "sqlite+aiosqlite:///inventory.db"
    )


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "inventory.toml"
    config.write_text('account = "a"\n[store]\nurl = "sqlite:///file.db"\n')
    settings = load_settings(
        config,
        environ={
            "INVENTORY_DATABASE_URL": "postgresql://u:pw@db/inv",
            "DIGITALOCEAN_API_URL": "http://127.0.0.1:9/",
            "INVENTORY_ACCOUNT": "team",
        },
    )
    assert settings.account == "team"
    assert settings.api.url == "http://127.0.0.1:9"
    assert settings.database_url().drivername == "postgresql+asyncpg"


def test_a_budget_can_be_lifted_for_a_local_server(tmp_path: Path) -> None:
    config = tmp_path / "inventory.toml"
    config.write_text('[rate_limit]\nper_hour = "off"\n')
    settings = load_settings(config, environ={"INVENTORY_RATE_LIMIT_PER_MINUTE": "Off"})
    assert (settings.rate_limit.per_minute, settings.rate_limit.per_hour) == (
        None,
        None,
    )
    raised = load_settings(environ={"INVENTORY_RATE_LIMIT_PER_HOUR": "10000"})
    assert raised.rate_limit.per_hour == 10000


def test_inventory_config_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text("[sync]\nconcurrency = 3\n")
    settings = load_settings(environ={"INVENTORY_CONFIG": str(config)})
    assert settings.sync.concurrency == 3


def test_the_token_comes_from_a_file_for_container_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    settings = load_settings(environ={"DIGITALOCEAN_TOKEN_FILE": str(secret)})
    assert settings.token() == TOKEN


def test_a_token_file_written_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(b"\xef\xbb\xbf" + TOKEN.encode() + b"\r\n")
    settings = load_settings(environ={"DIGITALOCEAN_TOKEN_FILE": str(secret)})
    assert settings.token() == TOKEN


@pytest.mark.parametrize(
    ("held", "said"),
    [
        (b"abc\xff\xfedef", "is not UTF-8 text; it is not a token file."),
        (b"x" * 5000, "holds more than 4096 bytes; it is not a token file."),
    ],
)
def test_a_token_file_that_holds_no_token_is_one_line(
    tmp_path: Path, held: bytes, said: str
) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(held)
    settings = load_settings(environ={"DIGITALOCEAN_TOKEN_FILE": str(secret)})
    with pytest.raises(ConfigError) as raised:
        settings.token()
    assert str(raised.value) == f"api.token_file: {secret} {said}"


@pytest.mark.parametrize("bad", [TOKEN[:10] + "\n" + TOKEN[10:], TOKEN + " x"])
def test_a_token_unfit_for_a_header_is_one_line_without_the_token(
    tmp_path: Path, bad: str
) -> None:
    secret = tmp_path / "token"
    secret.write_text(bad)
    for environ in (
        {"DIGITALOCEAN_TOKEN": bad},
        {"DIGITALOCEAN_TOKEN_FILE": str(secret)},
    ):
        with pytest.raises(ConfigError, match="line break") as raised:
            load_settings(environ=environ, use_file=False).token()
        assert TOKEN[:10] not in str(raised.value)


def test_a_token_of_blanks_is_no_token() -> None:
    environ = {"DIGITALOCEAN_TOKEN": "   "}
    with pytest.raises(ConfigError, match="No DigitalOcean token"):
        load_settings(environ=environ, use_file=False).token()


def test_a_token_inside_the_api_url_is_refused_without_showing_it() -> None:
    environ = {
        "DIGITALOCEAN_TOKEN": TOKEN,
        "DIGITALOCEAN_API_URL": f"http://gateway.test/{TOKEN}",
    }
    settings = load_settings(environ=environ, use_file=False)
    with pytest.raises(ConfigError, match="api.url holds the DigitalOcean token") as e:
        settings.token()
    assert TOKEN not in str(e.value)


def test_a_missing_token_says_how_to_give_one() -> None:
    with pytest.raises(ConfigError, match="DIGITALOCEAN_TOKEN"):
        load_settings(environ={}).token()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync]\nconcurrency = 0\n", "sync.concurrency: Input should be greater"),
        ("[sync]\nactions_for = 'some'\n", "sync.actions_for: Input should be"),
        ("[api]\nurl = 'ftp://x'\n", "api.url: must start with http"),
        ("[api]\nurl = 'http://u:pw@do.test'\n", "api.url: must not carry a user"),
        ("[api]\nurl = 'http://do.test/?t=1'\n", "api.url: must not carry a query"),
        ("[api]\nurl = 'http://do.test/v2/'\n", "api.url: is the base URL, without"),
        ("[api]\nurl = 'http://:80'\n", "api.url: names no host"),
        ("[api]\nurl = 'http://do.test:99999'\n", "api.url: has a port outside"),
        ("[api]\nper_page = 500\n", "api.per_page: Input should be less than"),
        ("[sync]\nconcurency = 3\n", "sync.concurency: is not a known setting"),
        ("[store]\nurl = 'mysql://x/y'\n", "only sqlite:/// and postgresql://"),
        ("[store]\nurl = 'sqlite://'\n", "in-memory SQLite database"),
        ("[store]\nurl = 'sqlite:///:memory:'\n", "in-memory SQLite database"),
        ("account = [", "is not valid TOML"),
        ("[rate_limit]\nper_minute = 'of'\n", 'a number of requests, or "off"'),
        ("[rate_limit]\nper_hour = 0\n", "rate_limit.per_hour: Input should be"),
        ("[rate_limit]\ntime_scale = inf\n", "rate_limit.time_scale: Input should be"),
        ("[rate_limit]\ntime_scale = 1e-300\n", "rate_limit.time_scale: Input"),
        ("[daemon]\ninterval_s = 1e12\n", "daemon.interval_s: Input should be less"),
        ("[sync]\ndeadline_s = nan\n", "sync.deadline_s: Input should be a finite"),
        (
            "[daemon]\ninterval_s = true\n",
            "daemon.interval_s: must be a number, not true",
        ),
        (
            "[rate_limit]\nper_minute = false\n",
            "per_minute: must be a number, not false",
        ),
        ("account = true\n", "account: must be a string, not true"),
        ("[store]\nmigrate = 1\n", "store.migrate: must be true or false"),
        ("[sync]\nprivate = 0\n", "sync.private: must be true or false"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "inventory.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(config, environ={})
    assert "\n" not in str(caught.value)


def test_secrets_never_appear_in_reprs_or_errors(tmp_path: Path) -> None:
    config = tmp_path / "inventory.toml"
    config.write_text(f"[api]\ntoken = '{TOKEN}'\nper_page = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert TOKEN not in str(caught.value)
    settings = load_settings(
        environ={
            "DIGITALOCEAN_TOKEN": TOKEN,
            "INVENTORY_DATABASE_URL": "postgresql://user:hunter22@db/inv",
        }
    )
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert "hunter22" not in repr(settings.database_url())
    assert "hunter22" not in repr(settings)


def test_a_config_file_that_is_not_utf_8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "inventory.toml"
    config.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(config, environ={})


def test_a_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read the configuration file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_libpq_s_sslmode_is_given_to_asyncpg_and_a_bad_one_is_one_line() -> None:
    from inventory.config import database_url

    url = database_url("postgresql://u@db.example:25060/inv?sslmode=require")
    assert (url.drivername, dict(url.query)) == (
        "postgresql+asyncpg",
        {"ssl": "require"},
    )
    with pytest.raises(ConfigError) as raised:
        database_url("postgresql://u@db.example/inv?sslmode=bogus")
    assert str(raised.value) == (
        "store.url: sslmode=bogus is not one of disable, allow, prefer, require, "
        "verify-ca, verify-full."
    )
