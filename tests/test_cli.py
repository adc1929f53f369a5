"""The command line as a user meets it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inventory import __version__
from inventory.simulator import Simulator, SimulatorOptions
from inventory.store import Store

from conftest import TOKEN
from fakeapi import serve_fake_api

pytestmark = pytest.mark.e2e


async def inventory(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    """Run `python -m inventory ARGS`; return its exit code, stdout and stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    base.pop("DIGITALOCEAN_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inventory", *args,
        env={**base, **(env or {})}, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def api() -> AsyncIterator[str]:
    options = SimulatorOptions(images=40, seed=3, token=TOKEN)
    async with Simulator(options).serve(host="127.0.0.1", port=0) as url:
        yield url


def assert_one_line_without_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


async def test_version_and_help() -> None:
    code, out, _ = await inventory("--version")
    assert (code, out.strip()) == (0, f"inventory, version {__version__}")
    code, out, _ = await inventory("sync", "--help")
    assert code == 0 and "--database URL" in out


async def test_a_sync_prints_its_summary_and_exits_0(api: str, tmp_path: Path) -> None:
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api}
    code, out, err = await inventory("sync", env=env, cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("sync succeeded: account=default run=1 images_seen=40 ")
    assert "rate_limited=0 rate_wait_s=0.0" in out
    assert (tmp_path / "inventory.db").is_file()
    assert TOKEN not in out + err


async def test_no_token_is_a_usage_error_saying_how_to_give_one(tmp_path: Path) -> None:
    code, _, err = await inventory("sync", cwd=tmp_path)
    assert code == 2
    assert_one_line_without_traceback(err)
    assert "DIGITALOCEAN_TOKEN" in err
    assert not (tmp_path / "inventory.db").exists()


async def test_a_rejected_token_exits_2_without_echoing_it(
    api: str, tmp_path: Path
) -> None:
    wrong = "dop_v1_" + "0" * 64
    env = {"DIGITALOCEAN_TOKEN": wrong, "DIGITALOCEAN_API_URL": api}
    code, out, err = await inventory("sync", env=env, cwd=tmp_path)
    assert code == 2
    assert "image:read" in err and "Traceback" not in err
    assert wrong not in out + err


async def test_a_token_file_is_read_for_container_secrets(
    api: str, tmp_path: Path
) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    env = {"DIGITALOCEAN_TOKEN_FILE": str(secret), "DIGITALOCEAN_API_URL": api}
    code, _, err = await inventory("sync", env=env, cwd=tmp_path)
    assert code == 0, err


async def test_a_partial_run_exits_1(tmp_path: Path) -> None:
    options = SimulatorOptions(images=40, seed=3, stall_path=r"/actions", stall_s=5.0)
    async with Simulator(options).serve(host="127.0.0.1", port=0) as url:
        config = tmp_path / "inventory.toml"
        config.write_text("[api]\nread_timeout_s = 0.2\nmax_retries = 0\n")
        env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": url}
        code, out, err = await inventory("sync", env=env, cwd=tmp_path)
    assert code == 1
    assert out.startswith("sync partial:"), out + err


async def test_a_sync_the_budgets_hold_back_says_so_on_stderr(
    api: str, tmp_path: Path
) -> None:
    # Five requests a minute: the listing is fast, then the fetches would take
    # minutes; a person watching must not take that for a hang. The deadline
    # ends the run early, as it would a real one that cannot fit.
    config = tmp_path / "inventory.toml"
    config.write_text("[rate_limit]\nper_minute = 5\n[sync]\ndeadline_s = 1\n")
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api}
    code, out, err = await inventory("sync", env=env, cwd=tmp_path)
    assert code == 1 and out.startswith("sync interrupted:"), out + err
    assert "INFO inventory.sync: Listed 40 images; " in err
    assert " min at best within the rate budgets" in err
    # Asked for warnings only, a person gets just that.
    code, out, err = await inventory(
        "--log-level", "WARNING", "sync", env=env, cwd=tmp_path
    )
    assert code == 1 and "Listed" not in err and "Plan:" not in err, err


async def test_a_bad_setting_is_one_line_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "inventory.toml").write_text("[sync]\nconcurrency = -1\n")
    code, _, err = await inventory("migrate", cwd=tmp_path)
    assert code == 2
    assert_one_line_without_traceback(err)
    assert "sync.concurrency" in err


async def test_a_bad_database_url_is_one_line(tmp_path: Path) -> None:
    code, _, err = await inventory("migrate", "--database", "mysql://x/y", cwd=tmp_path)
    assert code == 2
    assert_one_line_without_traceback(err)


async def test_an_unreachable_database_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    url = "postgresql://inventory:hunter22@127.0.0.1:1/inventory"
    for command in (("migrate",), ("sync", "--no-migrate")):
        code, _, err = await inventory(
            *command, "--database", url, env={"DIGITALOCEAN_TOKEN": TOKEN}, cwd=tmp_path
        )
        assert code == 1, (command, err)
        assert_one_line_without_traceback(err)
        assert "hunter22" not in err


async def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    code, out, err = await inventory("migrate", "--database", url)
    assert code == 0, err
    assert out.strip().endswith("is at schema revision 0001.")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_a_sync_records_it_interrupted_and_exits_1(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Long enough (about 6 s) to be still running when the signal comes.
    options = SimulatorOptions(
        images=1000, seed=3, latency_s=0.05, rate_per_minute=None, rate_per_hour=None
    )
    async with Simulator(options).serve(host="127.0.0.1", port=0) as url:
        env = {
            "DIGITALOCEAN_TOKEN": TOKEN,
            "DIGITALOCEAN_API_URL": url,
            # The simulator has no limits here: no notice of a paced run.
            "INVENTORY_RATE_LIMIT_PER_MINUTE": "off",
            "INVENTORY_RATE_LIMIT_PER_HOUR": "off",
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inventory", "sync",
            env={**base, **env}, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(2.0)
        process.send_signal(signum)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1, err.decode()
    assert err.decode().strip() == "inventory: interrupted."
    assert out.decode().startswith("sync interrupted: account=default run=1 ")
    code, out, _ = await inventory(
        "query", "--format", "csv", "SELECT status, error FROM sync_runs", cwd=tmp_path
    )
    assert out.splitlines() == [
        "status,error",
        "interrupted,The run was stopped from outside.",
    ]


async def test_a_store_without_its_schema_says_to_migrate(
    api: str, tmp_path: Path
) -> None:
    env = {
        "DIGITALOCEAN_TOKEN": TOKEN,
        "DIGITALOCEAN_API_URL": api,
        "INVENTORY_HTTP_PORT": "0",
    }
    for command in ("sync", "run"):
        code, _, err = await inventory(command, "--no-migrate", env=env, cwd=tmp_path)
        assert code == 1, (command, err)
        assert "run `inventory migrate` first" in err.splitlines()[-1]
        assert "Traceback" not in err
        assert list(tmp_path.iterdir()) == []  # no empty store, no lock file


async def test_a_directory_is_no_sqlite_store(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for command in (["migrate"], ["query", "SELECT 1"]):
        code, _, err = await inventory(
            *command, "--database", "sqlite:///data", cwd=tmp_path
        )
        assert code == 2
        assert_one_line_without_traceback(err)
        assert "names the directory data; give a file in it" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]


async def test_a_store_in_a_directory_that_is_not_there_is_one_line(
    tmp_path: Path,
) -> None:
    """A volume not mounted: said at once (exit 2), not retried nor half made."""
    env = {"DIGITALOCEAN_TOKEN": TOKEN, "INVENTORY_HTTP_PORT": "0"}
    for command in (["migrate"], ["sync"], ["run"], ["query", "SELECT 1"]):
        code, _, err = await inventory(
            *command, "--database", "sqlite:///data/inventory.db", env=env, cwd=tmp_path
        )
        assert (code, err) == (
            2,
            "inventory: store.url: the directory data does not exist, so the "
            "SQLite file data/inventory.db cannot be there; create it, or give "
            "another path.\n",
        )
    assert list(tmp_path.iterdir()) == []


async def test_a_failed_sync_says_so_once(api: str, tmp_path: Path) -> None:
    env = {"DIGITALOCEAN_TOKEN": "dop_v1_" + "1" * 64, "DIGITALOCEAN_API_URL": api}
    code, out, err = await inventory("sync", env=env, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert_one_line_without_traceback(err)


async def test_a_sync_while_another_process_syncs_the_account_exits_1(
    api: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'inventory.db'}"
    store = Store.open(url)
    try:
        await store.migrate()
        async with store.account_lock("default"):
            code, out, err = await inventory(
                "sync",
                "--database",
                url,
                env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api},
            )
    finally:
        await store.close()

    assert (code, out) == (1, "")
    assert err.startswith("inventory: Another inventory process is syncing account")
    assert_one_line_without_traceback(err)


def test_an_error_without_words_still_says_something() -> None:
    """A timeout's text is empty: the line it goes into must not end in ': '."""
    from inventory.errors import one_line

    assert one_line(TimeoutError()) == "no answer in time"
    assert one_line(ConnectionResetError()) == "ConnectionResetError"


async def test_a_rejection_that_echoes_the_token_does_not_print_it(
    tmp_path: Path,
) -> None:
    """An API (or a proxy before it) that repeats the Authorization header in
    its 401 body: the one-line error shows *** in its place."""
    async with serve_fake_api() as api:
        body = {"id": "unauthorized", "message": f"you sent Bearer {TOKEN}"}
        api.get("/v2/images?per_page=200", status=401, payload=body, repeat=True)
        env = {"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_API_URL": api.url}
        code, out, err = await inventory("sync", env=env, cwd=tmp_path)

    assert code == 2
    assert_one_line_without_traceback(err)
    assert "you sent Bearer ***" in err
    assert TOKEN not in out + err


async def test_demo_beside_a_directory_of_its_file_s_name_says_so(
    tmp_path: Path,
) -> None:
    (tmp_path / "inventory-demo.db").mkdir()

    code, _, err = await inventory("demo", cwd=tmp_path)

    assert code == 2
    assert "./inventory-demo.db is a directory" in err
    assert "store.url" not in err and "Traceback" not in err


async def test_a_command_ends_though_a_task_it_left_behind_will_not() -> None:
    """A store's leftover (aiosqlite's close awaiting a thread that had ended)
    held a stopped daemon forever: asyncio.run waits for every task to end."""
    script = textwrap.dedent(
        """
        import asyncio
        from inventory.cli import run_async

        async def stubborn():
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        async def main():
            main.left = asyncio.create_task(stubborn())
            await asyncio.sleep(0)
            print("done")
            return 0

        run_async(main)()
        """
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
    assert (process.returncode, out.decode(), err.decode()) == (0, "done\n", "")


async def test_a_query_whose_reader_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`inventory query ... | head -1`: no 'Broken pipe' message, no traceback."""
    code, _, err = await inventory("migrate", cwd=tmp_path)
    assert code == 0, err
    many = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 1000000) SELECT x FROM c"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    reading, writing = os.pipe()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inventory", "query", "--format", "csv", many,
        env=base, cwd=tmp_path, stdout=writing, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(writing)
    with os.fdopen(reading, "rb") as reader:
        assert reader.readline() == b"x\n"
    _, err_bytes = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, err_bytes.decode()) == (1, "")
