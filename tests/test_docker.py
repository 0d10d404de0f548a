"""docker/compose.yml is valid Compose; `config` needs the CLI only, no Docker daemon."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ["docker", "compose", "-f", "docker/compose.yml"]


@pytest.fixture
def compose_env():
    """The environment for `docker compose`, or a skip where the Compose CLI is missing."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode != 0:
        pytest.skip(f"`docker compose version` failed: {version.stderr.strip()}")
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}


def test_the_compose_file_is_valid(compose_env):
    result = subprocess.run(
        [*COMPOSE, "config", "-q"],
        cwd=REPO_ROOT,
        env={**compose_env, "DJANGO_SECRET_KEY": "x"},
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_the_compose_file_demands_a_secret_key(compose_env):
    result = subprocess.run(
        [*COMPOSE, "config", "-q"], cwd=REPO_ROOT, env=compose_env, capture_output=True, text=True
    )

    assert result.returncode == 1
    assert "required variable DJANGO_SECRET_KEY is missing a value" in result.stderr
