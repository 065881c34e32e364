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
            assert (value in allowed if allowed
                    else isinstance(value, {"boolean": bool, "string": str}[properties[key]["type"]]))


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
    assert all(line.startswith("\t@") for line in recipe), [line for line in recipe if not line.startswith("\t@")]
    installs = [line for line in recipe if "pip install" in line]
    assert installs and all("--quiet" in line for line in installs)
    assert 'PYTHONWARNINGS="ignore:Editable installation"' in next(line for line in installs if " -e " in line)
    ready = next(i for i, line in enumerate(recipe) if "-m minidiff.course.lab setup" in line)
    assert all(re.match(r"\t@(rm -f|touch) ", line) for line in recipe[ready + 1:]), recipe[ready + 1:]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    setuptools = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools and int(re.search(r">=\s*(\d+)", setuptools[0]).group(1)) >= 77   # SPDX strings: setuptools 77


def test_ready_line_says_what_comes_next():
    assert lab.ready_line().endswith("`make lab` opens the course.")
    assert lab.ready_line(opening=True).endswith(f"JupyterLab opens on {lab.WORKSPACE}/ now.")
    make = (ROOT / "Makefile").read_text()
    assert "-m minidiff.course.lab setup $(if $(filter lab,$(MAKECMDGOALS)),--opening)" in make


# -- the learner's own copies (issue 31, item 1) --------------------------------------------------------
def _course(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("01_a.ipynb", "02_b.ipynb"):
        (tmp_path / "notebooks" / name).write_text(f'{{"from": "{name}"}}')
    (tmp_path / "notebooks" / "README.md").write_text("not a notebook")
    return tmp_path


def test_workspace_copies_the_notebooks_once_and_never_overwrites_the_learners_work(tmp_path):
    root = _course(tmp_path)
    made = lab.workspace(root)
    assert [p.name for p in made] == ["01_a.ipynb", "02_b.ipynb"]
    assert (root / lab.WORKSPACE / "01_a.ipynb").read_text() == '{"from": "01_a.ipynb"}'
    assert not (root / lab.WORKSPACE / "README.md").exists()
    (root / lab.WORKSPACE / "01_a.ipynb").write_text("the learner's work")
    (root / "notebooks" / "03_c.ipynb").write_text("{}")                 # a new notebook after a git pull
    assert [p.name for p in lab.workspace(root)] == ["03_c.ipynb"]
    assert (root / lab.WORKSPACE / "01_a.ipynb").read_text() == "the learner's work"


def test_workspace_without_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        lab.workspace(tmp_path)


def test_fresh_copy_keeps_the_old_one(tmp_path):
    root = _course(tmp_path)
    lab.workspace(root)
    (root / lab.WORKSPACE / "02_b.ipynb").write_text("the learner's work")
    new, old = lab.fresh(root, "02")
    assert new.read_text() == '{"from": "02_b.ipynb"}'
    assert old.parent == root / lab.WORKSPACE / "old" and old.read_text() == "the learner's work"
    new, old = lab.fresh(root, "01_a.ipynb")
    assert old is not None and new.name == "01_a.ipynb"
    with pytest.raises(ValueError, match=r"which must name one notebook by its number \(01, 02\).*got '07'"):
        lab.fresh(root, "07")


def test_fresh_command_names_what_it_did(tmp_path):
    root = _course(tmp_path)
    run = lambda *args: subprocess.run([sys.executable, "-m", "minidiff.course.lab", *args], cwd=root,
                                       capture_output=True, text=True, timeout=120)
    done = run("workspace")
    assert done.returncode == 0 and "my_notebooks/ (copied from notebooks/: 2 new)" in done.stdout, done
    assert "make fresh NB=03" in done.stdout
    done = run("fresh", "01")
    assert done.returncode == 0 and "my_notebooks/01_a.ipynb is fresh from notebooks/; your old copy is " \
        "my_notebooks/old/01_a-" in done.stdout, done
    done = run("fresh", "9")
    assert done.returncode == 2 and "which must name one notebook" in done.stderr


def test_workspace_is_git_ignored_and_make_lab_opens_it():
    assert "/my_notebooks/" in (ROOT / ".gitignore").read_text().splitlines()
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lab:.*\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "-m minidiff.course.lab workspace" in recipe
    assert "JUPYTER_CONFIG_PATH=$(abspath $(VENV))/etc/minidiff-learner $(BIN)/jupyter lab $(WORKSPACE)/" in recipe


# -- the learner's JupyterLab shows the course only (issue 31, item 2) ----------------------------------
def test_the_learners_setup_installs_the_course_extra_only():
    make = (ROOT / "Makefile").read_text()
    setup = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "-e '.[course]'" in setup and "instructor" not in setup.replace(".instructor-*", "")
    assert re.search(r"^instructor: \$\(INSTRUCTOR_STAMP\)", make, re.M)
    assert "-e '.[course,instructor]'" in re.search(r"^\$\(INSTRUCTOR_STAMP\):.*\n((?:\t.*\n)+)", make, re.M).group(1)


def test_learner_config_hides_nbgrader(tmp_path):
    folder = lab.learner_config(str(tmp_path))
    page = json.loads((folder / "labconfig" / "page_config.json").read_text())
    assert page == {"disabledExtensions": {"@jupyter/nbgrader": True}}
    server = json.loads((folder / "jupyter_server_config.json").read_text())["ServerApp"]["jpserver_extensions"]
    assert server and not any(server.values()) and all(k.startswith("nbgrader.server_extensions.") for k in server)


def test_nbgrader_names_are_those_it_installs():
    """The names hidden are nbgrader's own: its lab extension and its server extensions, where it is installed."""
    pytest.importorskip("nbgrader")
    from importlib.metadata import distribution
    files = [str(f) for f in distribution("nbgrader").files or []]
    assert any(f"labextensions/{lab.NBGRADER_LAB_EXTENSION}/package.json" in f for f in files), files[:20]
    import importlib
    for name in lab.NBGRADER_SERVER_EXTENSIONS:
        importlib.import_module(f"nbgrader.server_extensions.{name}")


# -- the learner's kernel under load (issue 31, item 3) -------------------------------------------------
def test_kernel_env_is_added_to_the_python3_spec_and_keeps_the_rest(tmp_path):
    assert lab.set_kernel_env(str(tmp_path)) is None                       # no ipykernel spec there: nothing
    path = lab.kernel_spec_path(str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "Python 3 (ipykernel)", "language": "python", "env": {"A": "1"}}))
    assert lab.set_kernel_env(str(tmp_path)) == path
    spec = json.loads(path.read_text())
    assert spec["env"] == {"A": "1", "OMP_WAIT_POLICY": "PASSIVE"} and spec["display_name"] == "Python 3 (ipykernel)"


def test_a_kernel_started_from_the_spec_sees_the_wait_policy(tmp_path):
    """jupyter_client passes a kernel spec's env to the kernel it starts."""
    manager = pytest.importorskip("jupyter_client.manager")
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    pytest.importorskip("ipykernel")
    path = lab.kernel_spec_path(str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "Python 3 (ipykernel)", "language": "python"}))
    lab.set_kernel_env(str(tmp_path))
    specs = kernelspec.KernelSpecManager(kernel_dirs=[str(path.parent.parent)])
    km = manager.KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        printed = []
        kc.execute_interactive("import os; print(os.environ.get('OMP_WAIT_POLICY'))", timeout=60,
                               output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    assert "".join(printed).strip() == "PASSIVE"
