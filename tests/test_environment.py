"""environment.yml and pyproject.toml name the same packages with the same bounds (the dependencies and
the `course` and `book` extras; `instructor`'s nbgrader is installed with pip by those who grade)."""
import re
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _split(requirement: str) -> tuple[str, str]:
    """'scikit-learn >= 1.3' -> ('scikit-learn', '>=1.3'), names lower-cased with _ as -."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> tuple[dict[str, str], str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = project["dependencies"] + extras["course"] + extras["book"]
    return dict(_split(r) for r in reqs), project["requires-python"]


def _environment() -> tuple[dict[str, str], str]:
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    packages = dict(_split(r) for r in conda + [p for p in pip if not p.startswith("-e")])
    python = packages.pop("python")
    packages.pop("pip")
    return packages, python


def test_same_packages_and_bounds():
    want, want_python = _pyproject()
    got, got_python = _environment()
    assert sorted(got) == sorted(want), (
        f"only in environment.yml: {sorted(set(got) - set(want))}; "
        f"only in pyproject.toml: {sorted(set(want) - set(got))}")
    differing = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not differing, f"bounds differ (pyproject, environment.yml): {differing}"
    assert got_python == want_python


def test_environment_installs_the_project_itself():
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-e ." in pip
