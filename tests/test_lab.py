"""The learner's JupyterLab setup (issue 17): the news pop-up turned off in the environment's settings,
one line saying what is ready, and a quiet `make` setup that ends with that line."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minidiff.course import lab

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_are_written_to_the_app_dir_settings(tmp_path):
    path = lab.write_overrides(str(tmp_path))
    assert path == tmp_path / "settings" / "overrides.json"
    assert json.loads(path.read_text()) == lab.LAB_OVERRIDES
    notification = lab.LAB_OVERRIDES["@jupyterlab/apputils-extension:notification"]
    assert notification["fetchNews"] == "false" and notification["checkForUpdates"] is False


def test_the_default_place_is_the_one_jupyterlab_reads():
    commands = pytest.importorskip("jupyterlab.commands")
    assert lab.overrides_path() == Path(commands.get_app_dir()) / "settings" / "overrides.json"


def test_jupyterlab_takes_the_overrides_as_its_defaults(tmp_path):
    """jupyterlab_server, which serves JupyterLab's settings, reads the file: the news question and the
    update check are off by default (the schema's own defaults are "none" and true)."""
    settings_utils = pytest.importorskip("jupyterlab_server.settings_utils")
    schemas = lab.lab_app_dir() / "schemas"
    if not schemas.is_dir():
        pytest.skip(f"JupyterLab's schemas are not in {schemas}")
    path = lab.write_overrides(str(tmp_path))
    plugin = "@jupyterlab/apputils-extension:notification"
    served, _ = settings_utils.get_settings(str(path.parent), str(schemas), str(tmp_path / "user"), schema_name=plugin)
    defaults = {key: spec.get("default") for key, spec in served["schema"]["properties"].items()}
    assert {key: defaults[key] for key in lab.LAB_OVERRIDES[plugin]} == lab.LAB_OVERRIDES[plugin]


def test_overrides_keep_what_the_file_already_held(tmp_path):
    path = lab.overrides_path(str(tmp_path))
    path.parent.mkdir(parents=True)
    mine = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
            "@jupyterlab/apputils-extension:notification": {"doNotDisturbMode": True, "fetchNews": "true"}}
    path.write_text(json.dumps(mine))
    lab.write_overrides(str(tmp_path))
    lab.write_overrides(str(tmp_path))                        # twice: the same file
    got = json.loads(path.read_text())
    assert got["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert got["@jupyterlab/apputils-extension:notification"] == {
        "doNotDisturbMode": True, "fetchNews": "false", "checkForUpdates": False}


def test_overrides_that_are_not_an_object_are_an_error_not_overwritten(tmp_path):
    path = lab.overrides_path(str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        lab.write_overrides(str(tmp_path))
    assert path.read_text() == "[1, 2]"


def test_override_keys_and_values_are_in_the_installed_jupyterlab_schema():
    schemas = lab.lab_app_dir() / "schemas"
    if not schemas.is_dir():
        pytest.skip(f"JupyterLab's schemas are not in {schemas} (JupyterLab not installed here)")
    for plugin, values in lab.LAB_OVERRIDES.items():
        package, name = plugin.split(":")
        properties = json.loads((schemas / package / f"{name}.json").read_text())["properties"]
        for key, value in values.items():
            assert key in properties, f"{plugin} has no setting {key!r}"
            allowed = [choice["const"] for choice in properties[key].get("oneOf", [])]
            assert value in allowed if allowed else isinstance(value, {"boolean": bool, "string": str}[properties[key]["type"]])


def test_setup_command_writes_the_settings_and_prints_one_ready_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "minidiff.course.lab", "setup", "--app-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and re.match(r"^Ready: .+ with minidiff \S+ \(torch \S+, (CPU|CUDA: .+)\); the notebooks "
                                        r"run on the kernel 'Python 3 \(ipykernel\)'\. `make lab` opens the course\.$",
                                        lines[0]), lines
    assert lab.overrides_path(str(tmp_path)).exists()


def test_make_setup_is_quiet_and_ends_with_the_ready_line():
    """The recipe that builds .venv: every line silent (@), pip quiet, setuptools' editable-install notice
    filtered by its message only (errors still show), and the last line the one that says what is ready."""
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", make, re.M).group(1).splitlines()
    assert all(line.startswith("\t@") for line in recipe), [l for l in recipe if not l.startswith("\t@")]
    installs = [line for line in recipe if "pip install" in line]
    assert installs and all("--quiet" in line for line in installs)
    assert 'PYTHONWARNINGS="ignore:Editable installation"' in next(l for l in installs if " -e " in l)
    ready = next(i for i, line in enumerate(recipe) if "-m minidiff.course.lab setup" in line)
    assert all(re.match(r"\t@(rm -f|touch) ", line) for line in recipe[ready + 1:]), recipe[ready + 1:]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    setuptools = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools and int(re.search(r">=\s*(\d+)", setuptools[0]).group(1)) >= 77   # SPDX strings: setuptools 77
