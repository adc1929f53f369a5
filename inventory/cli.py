"""The `inventory` command line: every expected failure is one line and an exit code.

Exit codes: 0 success; 1 a run that was partial, failed or interrupted; 2 bad
usage or configuration, including a token DigitalOcean rejects.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from inventory import __version__, logs
from inventory.config import Settings, load_settings
from inventory.errors import AuthError, ConfigError, InventoryError, one_line

if TYPE_CHECKING:
    from inventory.sync import SyncResult

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# What a command leaves running when it ends gets this long to stop.
LEFTOVER_S = 2.0

database_option = click.option(
    "--database",
    "database",
    metavar="URL",
    help="Database URL (sqlite:///PATH or postgresql://...); "
    "overrides INVENTORY_DATABASE_URL and the file.",
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line on standard error and exit; secrets never, even when an
    answer of the API's repeats the token back."""
    click.echo(f"inventory: {logs.redact(message)}", err=True)
    sys.exit(code)


def settings_from(ctx: click.Context, quiet: bool = False, **store: Any) -> Settings:
    """Load settings once per command, with the command's own overrides.

    `quiet` commands (one-shot ones that print their own result) log only
    warnings and a long run's plan and progress unless a level is asked for,
    and leave the run summary to stdout.
    """
    overrides = {"store": {"url": store.get("database")}}
    try:
        settings = load_settings(ctx.obj.get("config"), overrides=overrides)
    except ConfigError as exc:
        fail(str(exc))
    level = ctx.obj.get("log_level")
    explicit = level is not None or "level" in settings.log.model_fields_set
    if level is None:
        level = "WARNING" if quiet and not explicit else settings.log.level
    logs.configure(
        settings.log.format,
        level,
        _secrets(settings),
        summaries=not quiet,
        notices=quiet and not explicit,
    )
    return settings


def _secrets(settings: Settings) -> list[str]:
    """The values the log filter must never let through."""
    secrets = []
    try:
        secrets.append(settings.token())
    except ConfigError:
        pass
    password = settings.database_url().password
    if password:
        secrets.append(str(password))
    return secrets


def run_async(main: Callable[..., Coroutine[Any, Any, int]]) -> Callable[..., None]:
    """Run a coroutine command; turn the project's errors into one line."""

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = run_bounded(_stoppable(main(*args, **kwargs)))
        except (KeyboardInterrupt, asyncio.CancelledError):
            fail("interrupted.", EXIT_RUN_FAILED)
        except (ConfigError, AuthError) as exc:
            fail(str(exc), EXIT_USAGE)
        except InventoryError as exc:
            fail(str(exc), EXIT_RUN_FAILED)
        except SQLAlchemyError as exc:
            fail(f"the store failed: {with_hint(one_line(exc))}", EXIT_RUN_FAILED)
        except BrokenPipeError:
            # The reader stopped (`| head`): nothing more to say, and no one to
            # say it to. As Python's documentation advises, stdout goes to
            # /dev/null so the flush at exit does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_RUN_FAILED)
        except OSError as exc:  # asyncpg's refused connection, unwrapped
            fail(f"the store failed: {one_line(exc)}", EXIT_RUN_FAILED)
        sys.exit(code)

    return wrapper


def run_bounded(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, whose clean-up after `main` is bounded by LEFTOVER_S.

    asyncio.run waits without end for every task left over to end once
    cancelled; one that cannot (aiosqlite's close awaiting a worker thread
    that has ended, after a stop cancelled its connection midway) held a
    stopped daemon forever after "Daemon stopped". What is still running then
    is let go: a store's transaction not committed is rolled back by the store.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            steps: list[Awaitable[Any]] = [
                asyncio.gather(*leftovers, return_exceptions=True),
                loop.shutdown_asyncgens(),
                loop.shutdown_default_executor(),
            ]
            for step in steps:
                ending = asyncio.ensure_future(step, loop=loop)
                loop.run_until_complete(asyncio.wait({ending}, timeout=LEFTOVER_S))
            # Tasks let go fail as they are collected: expected now, not news.
            loop.set_exception_handler(lambda loop, context: None)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _stoppable(main: Coroutine[Any, Any, int]) -> int:
    """Run `main`, cancelled by SIGTERM as by Ctrl-C, so a run records itself.

    Without this, SIGTERM (from timeout, systemd, a Kubernetes Job) would kill
    the process at once and leave its run `running` in sync_runs.
    """
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def with_hint(message: str) -> str:
    """Say what to do when the schema is missing."""
    if "no such table" in message or (
        "relation" in message and "does not exist" in message
    ):
        return message + " (run `inventory migrate` first)"
    return message


class HealthCheckUsageError(click.UsageError):
    """Bad usage of `inventory status`, which exits 1: Docker reserves 2."""

    exit_code = EXIT_RUN_FAILED


class _LazyCommands(click.Group):
    """Commands from their own modules, imported only when asked for: a query
    should not pay for the daemon, the simulator and the HTTP client."""

    lazy = {
        "demo": ("inventory.demo", "demo"),
        "query": ("inventory.query", "query"),
        "run": ("inventory.daemon", "run_command"),
        "simulate": ("inventory.simulator.command", "simulate"),
        "status": ("inventory.status", "status_command"),
    }

    def make_context(
        self, info_name: str | None, args: list[str], *rest: Any, **kwargs: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, *rest, **kwargs)
        except click.UsageError as exc:
            if "status" in args:  # a health check: Docker reserves exit code 2
                raise HealthCheckUsageError(exc.message, exc.ctx) from None
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(
    cls=_LazyCommands, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, "--version", prog_name="inventory")
@click.option(
    "--config",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="TOML settings file (default: $INVENTORY_CONFIG, else ./inventory.toml).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Override log.level.",
)
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_level: str | None) -> None:
    """Keep a live SQL copy of a DigitalOcean account's images and actions."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["log_level"] = log_level.upper() if log_level else None


@cli.command()
@database_option
@click.option("--no-migrate", is_flag=True, help="Do not migrate the store first.")
@click.pass_context
def sync(ctx: click.Context, database: str | None, no_migrate: bool) -> None:
    """Run one sync and print its summary."""
    settings = settings_from(ctx, quiet=True, database=database)
    run_async(_sync)(settings, migrate=settings.store.migrate and not no_migrate)


async def _sync(settings: Settings, *, migrate: bool) -> int:
    # Imported here: `inventory query` and `status` need no HTTP client.
    from inventory.client import open_client
    from inventory.store import Store
    from inventory.sync import sync_account

    settings.token()  # fail before touching the store when there is none
    store = Store.open(settings.database_url())
    try:
        if migrate:
            await store.migrate()
        else:
            await store.require_schema()
        async with (
            store.account_lock(settings.account) as lock,
            open_client(settings) as client,
        ):
            # Holding the lock, any run still `running` is a dead process's.
            await store.close_stale_runs(settings.account, datetime.now(UTC))
            finished: list[SyncResult] = []
            try:
                result = await sync_account(
                    client, store, settings, on_result=finished.append, lock=lock
                )
            except asyncio.CancelledError:
                # Stopped by Ctrl-C or SIGTERM: its summary all the same.
                for stopped in finished:
                    click.echo(stopped.summary())
                raise
    finally:
        await store.close()
    click.echo(result.summary())
    return exit_code(result)


def exit_code(result: SyncResult) -> int:
    return EXIT_OK if result.status == "succeeded" else EXIT_RUN_FAILED


@cli.command()
@database_option
@click.pass_context
def migrate(ctx: click.Context, database: str | None) -> None:
    """Create or upgrade the store's schema."""
    settings = settings_from(ctx, database=database)
    run_async(_migrate)(settings)


async def _migrate(settings: Settings) -> int:
    from inventory.store import Store

    store = Store.open(settings.database_url())
    try:
        await store.migrate()
        revision = await store.revision()
    finally:
        await store.close()
    click.echo(f"Store {store.describe()} is at schema revision {revision}.")
    return EXIT_OK


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="inventory")
