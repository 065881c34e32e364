"""Student notebooks from solutions: stubs, cleaning, errors, determinism, --check, and the repo's own notebooks."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from minidiff.course import nbgen
from minidiff.course.nbgen import NotebookError

ROOT = Path(__file__).resolve().parents[1]

Q_STEP = '''import torch

def q_step(x_prev, t, s, noise):
    """One forward step."""
    ### BEGIN SOLUTION
    a = s.alphas[t].sqrt()
    return a * x_prev + (1 - a**2).sqrt() * noise
    ### END SOLUTION

print("defined")'''

STUB = "raise NotImplementedError(\"Exercise '{}': replace this line with your implementation.\")"


def notebook(*cells):
    nb = new_notebook(cells=[new_code_cell(c) if isinstance(c, str) else c for c in cells])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def stub(source):
    return nbgen.student_notebook(notebook(source), "sol.ipynb").cells[0].source


def write_solutions(tmp_path, **notebooks):
    (tmp_path / "solutions").mkdir(exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, tmp_path / "solutions" / f"{name}.ipynb")
    return ["--solutions", str(tmp_path / "solutions"), "--out", str(tmp_path / "notebooks")]


# -- code regions ---------------------------------------------------------------------------------
def test_region_becomes_one_stub_line_and_the_rest_is_untouched():
    assert stub(Q_STEP) == (
        'import torch\n\ndef q_step(x_prev, t, s, noise):\n    """One forward step."""\n'
        f'    {STUB.format("q_step")}\n\nprint("defined")')


def test_stub_raises_not_implemented_error_naming_the_exercise():
    namespace = {}
    exec(stub(Q_STEP), namespace)
    with pytest.raises(NotImplementedError, match=r"^Exercise 'q_step': replace this line"):
        namespace["q_step"](None, 0, None, None)


@pytest.mark.parametrize("source, name, indent", [
    ("def outer(x):\n    def inner(y):\n        ### BEGIN SOLUTION\n        return y\n        ### END SOLUTION\n"
     "    return inner(x)", "inner", 8),
    ("class Net:\n    def forward(self, x):\n        ### BEGIN SOLUTION\n        return x\n        ### END SOLUTION",
     "forward", 8),
    ("def f(xs):\n    for x in xs:\n        if x:\n            ### BEGIN SOLUTION\n            pass\n"
     "            ### END SOLUTION\n    return xs", "f", 12),
    ("def f(a,\n      b):\n    # Exercise: posterior_mean\n    ### BEGIN SOLUTION\n    return a\n    ### END SOLUTION",
     "posterior_mean", 4),
])
def test_stub_is_named_after_the_enclosing_def_at_the_begin_indentation(source, name, indent):
    lines = stub(source).split("\n")
    stub_line = next(line for line in lines if "NotImplementedError" in line)
    assert stub_line == " " * indent + STUB.format(name)
    assert "SOLUTION" not in stub(source)


def test_two_regions_in_one_cell():
    source = ("def a():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n\n"
              "def b():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION")
    assert stub(source) == f"def a():\n    {STUB.format('a')}\n\ndef b():\n    {STUB.format('b')}"


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
    "def helper():\n    return 1\nfor i in range(3):\n    ### BEGIN SOLUTION\n    x = i\n    ### END SOLUTION",
])
def test_region_outside_a_def_is_an_error(source):
    with pytest.raises(NotebookError, match=r"solution region in sol.ipynb cell 0 is not inside a def; "
                                            r"exercises must be functions"):
        stub(source)


@pytest.mark.parametrize("source, problem", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", "has no '### END SOLUTION'"),
    ("def f():\n    return 1\n    ### END SOLUTION", "without a '### BEGIN SOLUTION'"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n"
     "    ### END SOLUTION", "nested '### BEGIN SOLUTION'"),
])
def test_unbalanced_markers_name_notebook_and_cell(source, problem):
    nb = notebook("x = 1", source)
    with pytest.raises(NotebookError, match="sol.ipynb cell 1") as excinfo:
        nbgen.student_notebook(nb, "sol.ipynb")
    assert problem in str(excinfo.value)


# -- markdown, outputs, metadata ------------------------------------------------------------------
def test_markdown_regions_become_a_placeholder():
    md = new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause ᾱ_t → 0.\n<!-- END SOLUTION -->\nNext.")
    assert nbgen.student_notebook(notebook(md)).cells[0].source == "Why?\n*Your answer here.*\nNext."


def test_unbalanced_markdown_markers_are_an_error():
    md = new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.")
    with pytest.raises(NotebookError, match="sol.ipynb cell 1: unbalanced"):
        nbgen.student_notebook(notebook("x = 1", md), "sol.ipynb")


def test_outputs_counts_and_volatile_metadata_are_dropped_ids_kept():
    nb = notebook("print(1)", new_markdown_cell("# Title"))
    nb.cells[0].outputs = [new_output("stream", text="1\n")]
    nb.cells[0].execution_count = 7
    nb.cells[0].metadata = {"execution": {"iopub.execute_input": "2024"}, "collapsed": True, "tags": ["keep"]}
    nb.metadata.language_info = {"name": "python", "version": "3.12.1"}
    nb.metadata.widgets = {"state": {}}
    for clean in (nbgen.student_notebook(nb), nbgen.cleaned_solution(nb)):
        assert clean.cells[0].outputs == [] and clean.cells[0].execution_count is None
        assert clean.cells[0].metadata == {"tags": ["keep"]}
        assert [c.id for c in clean.cells] == [c.id for c in nb.cells]
        assert clean.metadata == {"kernelspec": nb.metadata.kernelspec, "language_info": {"name": "python"}}
    assert nb.cells[0].outputs, "the input notebook must not be modified"


def test_cleaned_solution_keeps_the_solution_code():
    assert nbgen.cleaned_solution(notebook(Q_STEP)).cells[0].source == Q_STEP


# -- files: determinism, --check, --strip-solutions ------------------------------------------------
def test_generation_is_deterministic(tmp_path):
    args = write_solutions(tmp_path, **{"01_forward": notebook(Q_STEP), "02_more": notebook("x = 1")})
    assert nbgen.main(args) == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").glob("*.ipynb")}
    for p in (tmp_path / "notebooks").glob("*.ipynb"):
        p.unlink()
    assert nbgen.main(args) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "notebooks").glob("*.ipynb")} == first
    assert set(first) == {"01_forward.ipynb", "02_more.ipynb"}


def test_pre_4_5_notebooks_get_fixed_ids(tmp_path):
    nb = notebook(Q_STEP, "x = 1")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    texts = {nbgen.render(nbgen.student_notebook(nb)) for _ in range(2)}
    assert len(texts) == 1 and '"id": "cell-1"' in texts.pop()


def test_check_finds_missing_differing_and_extra_notebooks(tmp_path, capsys):
    args = write_solutions(tmp_path, a=notebook(Q_STEP), b=notebook("x = 1"))
    assert nbgen.main(args + ["--check"]) == 1
    assert not (tmp_path / "notebooks").exists(), "--check must not write"
    assert "notebooks/a.ipynb (missing)" in capsys.readouterr().out

    assert nbgen.main(args) == 0
    assert nbgen.main(args + ["--check"]) == 0
    assert "up to date" in capsys.readouterr().out

    write_solutions(tmp_path, b=notebook("x = 2"))
    nbformat.write(notebook("scratch"), tmp_path / "notebooks" / "c.ipynb")
    assert nbgen.main(args + ["--check"]) == 1
    out = capsys.readouterr().out
    assert "notebooks/b.ipynb (differs)" in out and "notebooks/c.ipynb (extra" in out
    assert "a.ipynb" not in out

    assert nbgen.main(args) == 0                # regenerates b, leaves the extra c alone
    assert "left alone" in capsys.readouterr().out and (tmp_path / "notebooks" / "c.ipynb").exists()


def test_bad_solution_notebook_is_reported_not_written(tmp_path, capsys):
    args = write_solutions(tmp_path, bad=notebook("### BEGIN SOLUTION\nx = 1\n### END SOLUTION"))
    assert nbgen.main(args) == 1
    assert "bad.ipynb cell 0 is not inside a def" in capsys.readouterr().err
    assert not (tmp_path / "notebooks").exists()


def test_strip_solutions_cleans_solutions_in_place(tmp_path):
    nb = notebook(Q_STEP)
    nb.cells[0].outputs, nb.cells[0].execution_count = [new_output("stream", text="defined\n")], 1
    args = write_solutions(tmp_path, a=nb)
    assert nbgen.main(args + ["--check", "--strip-solutions"]) == 1
    assert nbgen.main(args + ["--strip-solutions"]) == 0
    solution = nbformat.read(tmp_path / "solutions" / "a.ipynb", as_version=4)
    assert solution.cells[0].id == "colab-setup"           # nbgen's first cell (tests/test_colab.py)
    assert solution.cells[1].outputs == [] and solution.cells[1].source == Q_STEP
    assert nbgen.main(args + ["--check", "--strip-solutions"]) == 0


def test_command_line_defaults_to_solutions_and_notebooks_in_cwd(tmp_path):
    write_solutions(tmp_path, a=notebook(Q_STEP))
    done = subprocess.run([sys.executable, "-m", "minidiff.course.nbgen"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert STUB.format("q_step").replace('"', '\\"') in (tmp_path / "notebooks" / "a.ipynb").read_text()


# -- the repository's own notebooks ---------------------------------------------------------------
def test_notebooks_are_up_to_date_with_solutions():
    """notebooks/ is stale when it differs from what `make notebooks` would write."""
    if not list((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no notebooks yet")
    files = nbgen.planned_files(ROOT / "solutions", ROOT / "notebooks")
    stale = nbgen.outdated(files) + nbgen.extra_notebooks(files, ROOT / "notebooks")
    assert not stale, f"notebooks/ is stale: {[str(p.relative_to(ROOT)) for p in stale]}; run `make notebooks`"


def test_solutions_are_stored_without_outputs():
    if not list((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no notebooks yet")
    files = nbgen.planned_files(ROOT / "solutions", ROOT / "notebooks", strip_solutions=True)
    dirty = [p for p in nbgen.outdated(files) if p.parent.name == "solutions"]
    assert not dirty, (f"solutions with outputs or volatile metadata: {[p.name for p in dirty]}; "
                       f"run `python -m minidiff.course.nbgen --strip-solutions`")


# -- the kernel (issue 17: the notebooks and the README name the same one) -----------------------------
def test_generated_notebooks_name_the_course_kernel_whatever_the_source_said(tmp_path):
    nb = notebook(Q_STEP)
    nb.metadata.kernelspec = {"name": "minidiff", "display_name": "minidiff (.venv)", "language": "python"}
    files = nbgen.planned_files(Path(write_solutions(tmp_path, a=nb)[1]), tmp_path / "notebooks")
    assert [nbformat.reads(text, as_version=4).metadata.kernelspec for text in files.values()] == [nbgen.KERNELSPEC] * 2


@pytest.mark.parametrize("folder", ["solutions", "notebooks"])
def test_every_notebook_names_the_course_kernel(folder):
    paths = sorted((ROOT / folder).glob("*.ipynb"))
    wrong = {p.name: nbformat.read(p, as_version=4).metadata.get("kernelspec") for p in paths}
    wrong = {name: spec for name, spec in wrong.items() if spec != nbgen.KERNELSPEC}
    assert paths and not wrong, f"kernelspec should be {nbgen.KERNELSPEC}; got {wrong}"


def test_the_course_kernel_runs_this_python():
    """Jupyter's "python3" kernel starts the Python of the environment that runs Jupyter, the one with minidiff."""
    manager = pytest.importorskip("jupyter_client.manager")
    command = manager.KernelManager(kernel_name=nbgen.KERNELSPEC["name"]).format_kernel_cmd()
    assert Path(command[0]).resolve() == Path(sys.executable).resolve(), command


def test_readme_names_the_kernel_the_notebooks_open_on():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f'"{nbgen.KERNELSPEC["display_name"]}"' in readme
    assert "minidiff (.venv)" not in readme, "the README names a kernel the notebooks do not open on"


# -- nbgrader's metadata (issue 16) ---------------------------------------------------------------------
SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


@pytest.mark.parametrize("path", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_solution_cell_carries_nbgrader_metadata(path):
    """Exercise cells are solution cells, checks are locked autograded tests with points, the rest is
    locked teaching; grade ids are unique, so plain `nbgrader generate_assignment` accepts the notebook."""
    nb = nbformat.read(path, as_version=4)
    ids = []
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        ids.append(meta["grade_id"])
        assert meta["schema_version"] == 3 and re.fullmatch(r"[A-Za-z0-9_\-]+", meta["grade_id"])
        if "### BEGIN SOLUTION" in cell.source:
            assert meta["solution"] and not meta["grade"] and not meta["locked"]
            assert meta["grade_id"] in nbgen.exercise_names(cell.source, path.stem)
        elif "mc.exercises.check_" in cell.source:
            assert meta["grade"] and meta["locked"] and meta["points"] >= 1 and not meta["solution"]
            assert meta["grade_id"].startswith("check_")
        else:
            assert meta["locked"] and not meta["grade"] and not meta["solution"]
    assert len(ids) == len(set(ids)), "grade ids must be unique within a notebook"
    checks = [c for c in nb.cells if c.metadata["nbgrader"]["grade"]]
    exercises = [c for c in nb.cells if c.metadata["nbgrader"]["solution"]]
    assert checks and len(checks) == len(exercises)


def test_nbgrader_metadata_is_idempotent_and_keeps_the_source():
    path = sorted(SOLUTIONS.glob("*.ipynb"))[1]
    nb = nbformat.read(path, as_version=4)
    again = nbgen.nbgrader_metadata(nb, path.stem)
    assert nbgen.render(again) == nbgen.render(nb)
    assert [c.source for c in again.cells] == [c.source for c in nb.cells]


# -- hidden tests (issue 16) ----------------------------------------------------------------------------
CHECK_HIDDEN = ('q_step = mc.exercises.check_q_step(q_step)\n'
                '### BEGIN HIDDEN TESTS\nmc.exercises.check_q_step(q_step, hidden=True)\n### END HIDDEN TESTS\n'
                'print("checked")')


def test_hidden_tests_leave_the_student_copy_markers_included_and_stay_in_the_solution(tmp_path):
    args = write_solutions(tmp_path, a=notebook(Q_STEP, CHECK_HIDDEN))
    assert nbgen.main(args) == 0
    student = nbformat.read(tmp_path / "notebooks" / "a.ipynb", as_version=4)   # cell 0: the Colab setup cell
    assert student.cells[2].source == 'q_step = mc.exercises.check_q_step(q_step)\nprint("checked")'
    solution = nbformat.read(tmp_path / "solutions" / "a.ipynb", as_version=4)
    assert solution.cells[2].source == CHECK_HIDDEN
    # the hidden call names the same check again: still one grade cell worth POINTS
    assert solution.cells[2].metadata.nbgrader == {"schema_version": 3, "solution": False, "grade": True,
                                                   "locked": True, "points": nbgen.POINTS,
                                                   "grade_id": "check_q_step"}


def test_hidden_tests_indented_and_several_regions():
    source = ("for t in (0, 1):\n    ### BEGIN HIDDEN TESTS\n    assert t < 2\n    ### END HIDDEN TESTS\n"
              "x = 1\n### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS")
    assert nbgen.strip_hidden_tests(source, "sol.ipynb cell 0") == "for t in (0, 1):\nx = 1"


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n### BEGIN HIDDEN TESTS\nassert x", "'### BEGIN HIDDEN TESTS' on line 2 has no '### END HIDDEN TESTS'"),
    ("x = 1\n### END HIDDEN TESTS", "'### END HIDDEN TESTS' on line 2 without a '### BEGIN HIDDEN TESTS'"),
    ("### BEGIN HIDDEN TESTS\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS", "nested '### BEGIN HIDDEN TESTS'"),
])
def test_unbalanced_hidden_test_markers_name_notebook_and_cell(source, problem):
    with pytest.raises(NotebookError, match="sol.ipynb cell 1") as excinfo:
        nbgen.student_notebook(notebook("x = 1", source), "sol.ipynb")
    assert problem in str(excinfo.value)


@pytest.mark.parametrize("source", [
    "x = 1\n### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS",             # no check: nbgrader refuses it
    Q_STEP + "\n### BEGIN HIDDEN TESTS\nassert q_step\n### END HIDDEN TESTS",    # in the learner's own cell
])
def test_hidden_tests_outside_a_check_cell_are_an_error(source):
    with pytest.raises(NotebookError, match=r"sol.ipynb cell 0: a '### BEGIN HIDDEN TESTS' region must sit in a "
                                            r"check cell"):
        nbgen.nbgrader_metadata(notebook(source), "sol", "sol.ipynb")
