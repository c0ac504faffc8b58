"""The two ways to install labkit (environment.yml, pyproject.toml) name the same packages."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Conda-only entries that are the environment itself, not packages labkit imports.
CONDA_ONLY = {"python", "pip"}


def _name(requirement: str) -> str:
    """'torch==2.14.1' -> 'torch'; names compared in PEP 503 normal form."""
    name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return {_name(r) for r in project["dependencies"] + extras}


def environment_packages() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            names.add(_name(dep.split("=")[0]))
    return names - CONDA_ONLY


def test_environment_and_pyproject_name_the_same_packages():
    env, project = environment_packages(), pyproject_packages()
    assert env == project, f"only in environment.yml: {sorted(env - project)}; only in pyproject.toml: {sorted(project - env)}"


def test_environment_pins_match_constraints():
    pins = {
        _name(line): line.split("==")[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_reqs = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = {_name(r): r.split("==")[1] for r in pip_reqs if "==" in r}
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert env_pins == pins


def test_package_parsers_see_real_names():
    # guards the helpers above against silently returning empty sets
    assert {"torch", "torchvision", "papermill", "pycocotools"} <= pyproject_packages()
    assert _name("scikit_image>=0.2") == "scikit-image"


def test_make_lab_binds_localhost_with_token_auth():
    import subprocess

    # -n prints the recipe without running it; -o pretends the venv is already installed
    recipe = subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    assert "jupyter lab" in recipe and "--ServerApp.ip=127.0.0.1" in recipe
    assert "token=''" not in recipe and 'token=""' not in recipe and "disable_check_xsrf" not in recipe


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make run" in readme
    assert ci.strip().splitlines()[-1] == "make test"
