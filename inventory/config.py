"""Settings, in one place: a TOML file, then the environment, validated early.

A bad value stops start-up with one line naming the key; the token and the
database password never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from inventory.errors import ConfigError

DEFAULT_CONFIG_FILE = "inventory.toml"
DEFAULT_DATABASE_URL = "sqlite:///inventory.db"

# Environment variable -> (section, key). Values are strings; pydantic coerces.
ENVIRONMENT = {
    "DIGITALOCEAN_TOKEN": ("api", "token"),
    "DIGITALOCEAN_TOKEN_FILE": ("api", "token_file"),
    "DIGITALOCEAN_API_URL": ("api", "url"),
    "INVENTORY_ACCOUNT": ("", "account"),
    "INVENTORY_DATABASE_URL": ("store", "url"),
    "INVENTORY_HTTP_HOST": ("daemon", "http_host"),
    "INVENTORY_HTTP_PORT": ("daemon", "http_port"),
    "INVENTORY_LOG_FORMAT": ("log", "format"),
    "INVENTORY_LOG_LEVEL": ("log", "level"),
    "INVENTORY_RATE_LIMIT_PER_MINUTE": ("rate_limit", "per_minute"),
    "INVENTORY_RATE_LIMIT_PER_HOUR": ("rate_limit", "per_hour"),
    "INVENTORY_RATE_LIMIT_TIME_SCALE": ("rate_limit", "time_scale"),
}


# No duration is longer than a year, and none is infinite or NaN: a bigger one
# is a typo, and overflows the scheduler's dates.
YEAR_S = 366 * 86400.0
MAX_TOKEN_FILE = 4096  # bytes; a DigitalOcean token is 71 characters


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        """TOML has types: `interval_s = true` or `migrate = 1` is a typo, not
        1 s or yes. (Environment values are strings, and coerced.)"""
        field = cls.model_fields[info.field_name or ""]
        wants_bool = field.annotation is bool or bool in get_args(field.annotation)
        if isinstance(value, bool) and not wants_bool:
            numeric = {int, float} & {field.annotation, *get_args(field.annotation)}
            kind = "a number" if numeric else "a string"
            raise ValueError(f"must be {kind}, not {str(value).lower()}")
        if (
            wants_bool
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            raise ValueError("must be true or false")
        return value


class APISettings(_Section):
    """How to reach DigitalOcean."""

    url: str = "https://api.digitalocean.com"
    token: SecretStr | None = None
    token_file: Path | None = None
    per_page: int = Field(200, ge=1, le=200)
    connect_timeout_s: float = Field(10.0, gt=0, le=YEAR_S)
    read_timeout_s: float = Field(30.0, gt=0, le=YEAR_S)
    total_timeout_s: float = Field(120.0, gt=0, le=YEAR_S)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_s: float = Field(0.5, ge=0, le=YEAR_S)
    backoff_max_s: float = Field(30.0, ge=0, le=YEAR_S)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """A base URL: scheme, host, perhaps a gateway's path; no more."""
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not carry a user or password; the token goes in "
                "DIGITALOCEAN_TOKEN"
            )
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError("must not carry a query (?) or fragment (#)")
        if not parts.hostname:
            raise ValueError("names no host")
        try:
            parts.port  # noqa: B018 (it checks the port)
        except ValueError:
            raise ValueError("has a port outside 0-65535") from None
        if parts.path.rstrip("/").endswith("/v2"):
            raise ValueError("is the base URL, without /v2")
        return value.rstrip("/")


class RateLimitSettings(_Section):
    """DigitalOcean's per-token budgets; raise them for accounts with more."""

    per_minute: int | None = Field(250, ge=1)
    per_hour: int | None = Field(5000, ge=1)
    # Shrinks both windows alike; beyond these bounds they would not fit a clock.
    time_scale: float = Field(1.0, ge=0.001, le=1e6)

    @field_validator("per_minute", "per_hour", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """`"off"` lifts a budget: only for a local server without limits."""
        if isinstance(value, str):
            if value.strip().lower() == "off":
                return None
            if not value.strip().isdigit():
                raise ValueError('must be a number of requests, or "off"')
        return value


class SyncSettings(_Section):
    """What one sync run fetches, and how hard."""

    concurrency: int = Field(8, ge=1, le=256)
    deadline_s: float = Field(3300.0, gt=0, le=YEAR_S)
    actions_for: Literal["private", "all"] = "private"
    private: bool | None = None
    type: Literal["application", "distribution"] | None = None
    tag_name: str | None = None
    write_batch: int = Field(500, ge=1, le=10000)


class StoreSettings(_Section):
    """Where the copy lives."""

    # Hidden from repr: it may carry a password.
    url: str = Field(DEFAULT_DATABASE_URL, repr=False)
    migrate: bool = True

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        database_url(value)
        return value


class DaemonSettings(_Section):
    """How `inventory run` schedules syncs and serves its endpoints."""

    interval_s: float = Field(900.0, gt=0, le=YEAR_S)
    cron: str | None = None
    jitter_s: float = Field(30.0, ge=0, le=YEAR_S)
    grace_s: float = Field(30.0, ge=0, le=YEAR_S)
    readiness_age_s: float | None = Field(None, gt=0, le=YEAR_S)
    store_wait_s: float = Field(60.0, ge=0, le=YEAR_S)
    run_retention_days: float = Field(90.0, gt=0, le=36600)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=0, le=65535)


class LogSettings(_Section):
    """Log lines: text for people, JSON lines for pipelines."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(_Section):
    """Everything the commands need, built by `load_settings`."""

    account: str = Field("default", min_length=1, max_length=64)
    api: APISettings = APISettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    sync: SyncSettings = SyncSettings()
    store: StoreSettings = StoreSettings()
    daemon: DaemonSettings = DaemonSettings()
    log: LogSettings = LogSettings()

    def token(self) -> str:
        """The API token, read from the setting or its file; ConfigError if none."""
        if self.api.token is not None and self.api.token.get_secret_value().strip():
            token = self.api.token.get_secret_value().strip()
            return self._checked_token(token, "api.token")
        if self.api.token_file is not None:
            token = _read_token_file(self.api.token_file)
            return self._checked_token(token, "api.token_file")
        raise ConfigError(
            "No DigitalOcean token: set DIGITALOCEAN_TOKEN, or DIGITALOCEAN_TOKEN_FILE "
            "to a file holding it (a read-only token with the image:read scope)."
        )

    def database_url(self) -> URL:
        """The store's URL, with an async driver chosen for the user."""
        return database_url(self.store.url)

    def _checked_token(self, token: str, key: str) -> str:
        """A token fit for an HTTP header, and nowhere else.

        No spaces nor control characters inside, and not in `api.url`, whence
        it would reach messages, `sync_runs` and the logs' URLs. The message
        never shows the token, nor the offending character's place.
        """
        if any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ConfigError(
                f"{key}: the DigitalOcean token holds a space, line break or "
                "control character; copy it again."
            )
        if len(token) >= 8 and token in self.api.url:  # shorter is no secret
            raise ConfigError(
                "api.url holds the DigitalOcean token: give the API's base URL "
                "alone, and the token in DIGITALOCEAN_TOKEN."
            )
        return token


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    use_file: bool = True,
) -> Settings:
    """Read the TOML file (INVENTORY_CONFIG, else ./inventory.toml), then the env.

    `overrides` (section -> key -> value, None meaning unset) come last.
    """
    environ = os.environ if environ is None else environ
    data = _read_file(_config_path(path, environ)) if use_file else {}
    for name, (section, key) in ENVIRONMENT.items():
        if environ.get(name):
            _put(data, section, key, environ[name])
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                _put(data, section, key, value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def database_url(raw: str) -> URL:
    """Parse a database URL and choose the async driver: aiosqlite or asyncpg."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            "store.url is not a database URL; expected sqlite:///PATH "
            "or postgresql://USER@HOST/DB."
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError(
                "store.url names an in-memory SQLite database, which keeps "
                "nothing; give a file: sqlite:///inventory.db."
            )
        if Path(url.database).is_dir():
            raise ConfigError(
                f"store.url names the directory {url.database}; give a file in "
                f"it: sqlite:///{Path(url.database) / 'inventory.db'}."
            )
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise ConfigError(
                f"store.url: the directory {folder} does not exist, so the SQLite "
                f"file {url.database} cannot be there; create it, or give another "
                "path."
            )
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return _asyncpg_url(url)
    raise ConfigError(
        f"store.url uses {backend!r}; only sqlite:/// and postgresql:// are supported."
    )


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _asyncpg_url(url: URL) -> URL:
    """libpq's URL spelling for asyncpg: `sslmode=require` (as DigitalOcean's
    managed databases give it) becomes asyncpg's `ssl=require`."""
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"store.url: port {url.port} is not between 1 and 65535.")
    query = dict(url.query)
    if "sslmode" in query:
        mode = query.pop("sslmode")
        if mode not in SSL_MODES:
            raise ConfigError(
                f"store.url: sslmode={mode} is not one of {', '.join(SSL_MODES)}."
            )
        query.setdefault("ssl", mode)
    return url.set(drivername="postgresql+asyncpg", query=query)


def _config_path(path: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if path is not None:
        return Path(path)
    if environ.get("INVENTORY_CONFIG"):
        return Path(environ["INVENTORY_CONFIG"])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def _read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        message = f"Cannot read the configuration file {path}: {exc.strerror}."
        raise ConfigError(message) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        message = f"The configuration file {path} is not valid TOML: {exc}."
        raise ConfigError(message) from None


def _read_token_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            held = handle.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(
            f"api.token_file: cannot read {path}: {exc.strerror}."
        ) from None
    if len(held) > MAX_TOKEN_FILE:
        raise ConfigError(
            f"api.token_file: {path} holds more than {MAX_TOKEN_FILE} bytes; "
            "it is not a token file."
        )
    try:
        # A BOM, as some Windows editors write one, is no part of the token.
        token = held.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError:
        raise ConfigError(
            f"api.token_file: {path} is not UTF-8 text; it is not a token file."
        ) from None
    if not token:
        raise ConfigError(f"api.token_file: {path} is empty.")
    return token


def _put(data: dict[str, Any], section: str, key: str, value: object) -> None:
    target = data.setdefault(section, {}) if section else data
    if not isinstance(target, dict):
        raise ConfigError(f"{section} must be a table in the configuration file.")
    target[key] = value


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the key; never echoing a secret's value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "is not a known setting"
        elif error["type"] == "value_error":  # our validators' own words
            message = message.removeprefix("Value error, ")
        problems.append(f"{key}: {message}")
    return "Invalid configuration: " + "; ".join(problems) + "."
