"""The package as a user gets it: a wheel built from the sources, installed with its dependencies in a fresh
virtual environment, and its console script run from there (not from this checkout)."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixpanel_mcp import __version__
from tests.conftest import server_env

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Installed:
    wheel: Path
    venv: Path
    home: Path  # a directory outside the checkout, to run from

    def bin(self, name: str) -> Path:
        return self.venv / ("Scripts" if os.name == "nt" else "bin") / name


def clean_env(**values: str) -> dict[str, str]:
    """This environment without MIXPANEL_* settings or a PYTHONPATH that could reach the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIXPANEL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(values)
    return env


def sh(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("packaging")
    home = work / "home"
    home.mkdir()
    venv = work / "venv"
    made = sh(sys.executable, "-m", "venv", venv, cwd=work)
    if made.returncode != 0:
        pytest.skip(f"cannot create a virtual environment here: {made.stderr.strip()[-300:]}")

    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "mixpanel_mcp", source / "mixpanel_mcp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = work / "dist"
    built = sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source, cwd=work)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("mixpanel_mcp-*.whl")

    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    install = sh(python, "-m", "pip", "install", "--quiet", wheel, cwd=work, timeout=240)
    assert install.returncode == 0, install.stdout + install.stderr
    return Installed(wheel=wheel, venv=venv, home=home)


def test_the_wheel_holds_the_package_its_entry_point_and_its_metadata(installed: Installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        info = f"mixpanel_mcp-{__version__}.dist-info"
        metadata = email.message_from_string(wheel.read(f"{info}/METADATA").decode())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    for module in ("cli.py", "server.py", "check.py", "discovery.py", "client/http.py", "tools/events.py", "double/app.py"):
        assert f"mixpanel_mcp/{module}" in names, module
    assert not any(n.startswith("tests/") for n in names)
    assert "mixpanel-mcp = mixpanel_mcp.cli:main" in entry_points
    assert metadata["Name"] == "mixpanel-mcp"
    assert metadata["Version"] == __version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Summary"]
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    for dependency in ("mcp", "httpx2", "pydantic", "uvicorn", "starlette"):
        assert dependency in requires


def test_the_installed_console_script_shows_its_help_from_outside_the_checkout(installed: Installed):
    where = sh(installed.bin("python"), "-c", "import mixpanel_mcp; print(mixpanel_mcp.__file__)", cwd=installed.home)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)  # the installed copy, not this checkout

    result = sh(installed.bin("mixpanel-mcp"), "--help", cwd=installed.home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mixpanel-mcp")
    assert "--transport {stdio,http}" in result.stdout
    assert "MIXPANEL_PROJECT_TOKEN" in result.stdout and "MIXPANEL_REGION" in result.stdout

    version = sh(installed.bin("mixpanel-mcp"), "--version", cwd=installed.home)
    assert version.stdout.strip() == f"mixpanel-mcp {__version__}"


def test_the_installed_package_checks_credentials_against_mixpanel(installed: Installed, double, double_url):
    # The double stands for Mixpanel: this proves the installed dependencies work end to end (HTTP, auth, output).
    script = "import sys; from mixpanel_mcp.check import main_check; sys.exit(main_check(sys.argv[1:]))"
    result = sh(installed.bin("python"), "-c", script, cwd=installed.home, env=clean_env(**server_env(double_url)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Everything checked works." in result.stdout
    assert [r.path for r in double.received()][:2] == ["/import", "/api/query/events/names"]
