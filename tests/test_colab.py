"""Colab: the repository URL read from its one place, the links built from it, and the setup cell that nbgen
writes first in every notebook (installs minidiff on Colab, does nothing anywhere else)."""
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from minidiff.course import colab, nbgen

ROOT = Path(__file__).resolve().parents[1]
URL = "https://github.com/someone/minidiff"


def run_cell(source: str, monkeypatch, on_colab: bool) -> list:
    """Execute the cell's code with subprocess.run recorded instead of run; return the recorded calls."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "colab-setup", "exec"), {})
    return calls


# -- the URL and the links ------------------------------------------------------------------------------
def test_repository_url_is_pyprojects_project_urls_repository():
    tomllib = pytest.importorskip("tomllib")
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert colab.repository_url() == want.rstrip("/")
    colab.github_repo(want)                    # a GitHub address, so Colab can open the notebooks


def test_repository_url_errors_name_the_setting(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\nHomepage = "https://x"\n')
    with pytest.raises(ValueError, match=r"Repository = .* under \[project\.urls\]"):
        colab.repository_url(tmp_path / "pyproject.toml")
    with pytest.raises(FileNotFoundError, match="pyproject.toml not found"):
        colab.repository_url(tmp_path / "missing.toml")


def test_repository_url_ignores_other_sections(tmp_path):
    (tmp_path / "pyproject.toml").write_text(f'[tool.x]\nRepository = "https://github.com/wrong/one"\n'
                                             f'[project.urls]\nRepository = "{URL}/"\n[tool.y]\n')
    assert colab.repository_url(tmp_path / "pyproject.toml") == URL


def test_colab_and_blob_links():
    assert colab.colab_url("notebooks/06_sampling.ipynb", URL) == (
        "https://colab.research.google.com/github/someone/minidiff/blob/main/notebooks/06_sampling.ipynb")
    assert colab.colab_url("notebooks/a.ipynb", URL + ".git").endswith("/someone/minidiff/blob/main/notebooks/a.ipynb")
    assert colab.blob_url("notebooks/a.ipynb", URL) == URL + "/blob/main/notebooks/a.ipynb"
    with pytest.raises(ValueError, match="must look like https://github.com/OWNER/REPO"):
        colab.colab_url("notebooks/a.ipynb", "https://gitlab.com/someone/minidiff")


# -- the setup cell ----------------------------------------------------------------------------------------
def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    assert run_cell(colab.setup_cell_source(URL), monkeypatch, on_colab=False) == []


def test_setup_cell_pip_installs_minidiff_from_the_repository_on_colab(monkeypatch):
    [(args, kwargs)] = run_cell(colab.setup_cell_source(URL), monkeypatch, on_colab=True)
    assert args[0] == [sys.executable, "-m", "pip", "install", "-q", f"minidiff @ git+{URL}@main"]
    assert kwargs == {"check": True}


def test_setup_cell_is_short_and_plain_python():
    source = colab.setup_cell_source(URL)
    assert len(source.splitlines()) <= 4 and '"google.colab" in sys.modules' in source
    compile(source, "colab-setup", "exec")     # no IPython magics: any tool that parses cells can read it


# -- nbgen writes it first in every notebook ---------------------------------------------------------------
def test_nbgen_puts_the_setup_cell_first_in_student_and_solution(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell("# Title"), new_code_cell("x = 1")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "solutions").mkdir()
    nbformat.write(nb, tmp_path / "solutions" / "01_a.ipynb")
    args = ["--solutions", str(tmp_path / "solutions"), "--out", str(tmp_path / "notebooks")]
    assert nbgen.main(args) == 0
    for folder in ("solutions", "notebooks"):
        cells = nbformat.read(tmp_path / folder / "01_a.ipynb", as_version=4).cells
        assert [c.get("id") for c in cells][0] == "colab-setup" and len(cells) == 3
        assert cells[0].source == colab.setup_cell_source()
        assert cells[0].metadata.nbgrader == {"schema_version": 3, "solution": False, "grade": False,
                                              "locked": True, "grade_id": "01_a-colab-setup"}
    assert nbgen.main(args + ["--check"]) == 0, "a second run finds nothing to do (one cell, not two)"


def test_nbgen_brings_an_old_setup_cell_up_to_date(tmp_path):
    nb = new_notebook(cells=[new_code_cell("# an old address", id="colab-setup"), new_code_cell("x = 1")])
    got = nbgen.with_setup_cell(nb, colab.setup_cell_source(URL), "01_a")
    assert [c.source for c in got.cells] == [colab.setup_cell_source(URL), "x = 1"]
    assert nb.cells[0].source == "# an old address", "the input notebook must not be modified"


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_every_course_notebook_starts_with_the_setup_cell(folder):
    paths = sorted((ROOT / folder).glob("*.ipynb"))
    assert paths
    for path in paths:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.get("id") == "colab-setup" and first.source == colab.setup_cell_source(), path.name
