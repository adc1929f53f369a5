"""The container image, read with a Dockerfile parser: no Docker engine runs here."""

from __future__ import annotations

import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install '.[postgres]'"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(ROOT / "Dockerfile"))


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [step["value"] for step in parser.structure if step["instruction"] == name]


def index_of(parser: DockerfileParser, name: str, value: str) -> int:
    for index, step in enumerate(parser.structure):
        if step["instruction"] == name and step["value"] == value:
            return index
    raise AssertionError(f"no {name} {value!r} in the Dockerfile")


def readme_install_command() -> str:
    """The README's install command: the shell command naming `.[postgres]`.

    It may stand alone or in a chain (`python3 -m venv .venv && ... && pip
    install '.[postgres]' && ...`); the chain's other commands are not installs.
    """
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if INSTALL in line:
            spans = [span for span in re.findall(r"`([^`]+)`", line) if INSTALL in span]
            command = spans[0] if spans else line
            (part,) = [p for p in re.split(r"&&|\|\||;", command) if INSTALL in p]
            return part.strip().removeprefix("$ ").strip()
    pytest.fail(f"README.md has no line with {INSTALL!r}")


def test_the_base_is_a_slim_official_python_image(
    dockerfile: DockerfileParser,
) -> None:
    assert re.fullmatch(r"python:3\.1[1-9]-slim", dockerfile.baseimage)


def test_the_package_is_installed_with_the_readmes_command(
    dockerfile: DockerfileParser,
) -> None:
    assert readme_install_command() in instructions(dockerfile, "RUN")


def test_the_daemon_runs_as_a_user_that_is_not_root(
    dockerfile: DockerfileParser,
) -> None:
    users = instructions(dockerfile, "USER")

    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert index_of(dockerfile, "USER", users[-1]) > index_of(
        dockerfile, "RUN", INSTALL
    )


def test_the_entrypoint_is_inventory_run_in_exec_form(
    dockerfile: DockerfileParser,
) -> None:
    (entrypoint,) = instructions(dockerfile, "ENTRYPOINT")

    assert json.loads(entrypoint) == ["inventory", "run"]


def test_the_store_lives_on_the_data_volume(dockerfile: DockerfileParser) -> None:
    volumes: list[Any] = []
    for value in instructions(dockerfile, "VOLUME"):
        volumes.extend(json.loads(value) if value.startswith("[") else value.split())

    assert "/data" in volumes
    assert dockerfile.envs["INVENTORY_DATABASE_URL"] == "sqlite:////data/inventory.db"


def test_the_endpoints_listen_on_every_interface_on_the_exposed_port(
    dockerfile: DockerfileParser,
) -> None:
    assert dockerfile.envs["INVENTORY_HTTP_HOST"] == "0.0.0.0"
    assert instructions(dockerfile, "EXPOSE") == [
        dockerfile.envs["INVENTORY_HTTP_PORT"]
    ]


def test_the_health_check_runs_inventory_status(dockerfile: DockerfileParser) -> None:
    (healthcheck,) = instructions(dockerfile, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")

    assert json.loads(command)[:2] == ["inventory", "status"]
    assert "--start-period=" in options


def test_the_logs_are_json_lines_and_sigterm_stops_the_daemon(
    dockerfile: DockerfileParser,
) -> None:
    assert dockerfile.envs["INVENTORY_LOG_FORMAT"] == "json"
    assert instructions(dockerfile, "STOPSIGNAL") == ["SIGTERM"]


def test_the_build_context_holds_what_the_install_needs_and_no_secrets(
    dockerfile: DockerfileParser,
) -> None:
    """What pyproject builds from is copied, and .dockerignore keeps it in."""
    copied = {
        source
        for value in instructions(dockerfile, "COPY")
        for source in value.split()[:-1]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", project["readme"], "inventory", "alembic"}
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert needed <= copied
    assert not [
        path for path in needed for pattern in ignored if fnmatch(path, pattern)
    ]
    assert {".git", "*.db", "inventory.toml", ".env"} <= set(ignored)
