"""The README's commands are the ones CI and the container run, and they work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def sh_block(text: str) -> str:
    match = re.search(r"```sh\n(.*?)```", text, re.S)
    assert match
    return match.group(1)


def test_ci_runs_exactly_the_readme_s_test_command() -> None:
    command = sh_block(section("Run the tests: one command")).strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci


def test_the_first_command_installs_and_runs_the_demo() -> None:
    command = sh_block(section("Try it: one command")).strip()
    assert command.endswith("pip install '.[postgres]' && inventory demo")


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DIGITALOCEAN_TOKEN", None)
    return env


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_readme_s_query_examples_run_as_written_after_the_demo(
    tmp_path: Path,
) -> None:
    env = environment()
    # A newcomer's proxy must not stand between the demo and its own simulator.
    env["HTTP_PROXY"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"
    demo = subprocess.run(
        [sys.executable, "-m", "inventory", "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert "sync succeeded" in demo.stdout
    assert (tmp_path / "inventory-demo.db").is_file()

    script = sh_block(section("Query the copy"))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "(5 rows)" in done.stdout
    assert '"status": "completed"' in done.stdout
    assert done.stderr == ""
