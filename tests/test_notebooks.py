"""Every notebook, solution and student version, runs top to bottom: each executed ONCE per test session.

Why both versions of a notebook run, not only the solution. The solution notebook's run proves that a learner who
solves every exercise gets through, and makes the site's page (tests/test_site.py reuses the executed copy: nothing
runs a third time). The student notebook's run proves that a learner who skips every exercise gets through: each
stub still raises NotImplementedError, its check falls back to minidiff's reference, and every later cell then runs
on that reference. Those later cells (training, sampling: nearly all of the time) run on different functions in the
two versions, so no cheaper check of "only the cells that differ" proves the second without running them.

The verdict is nbval's ``--nbval-lax`` (any cell that raises fails; outputs are not compared), and a failure
names the notebook, the cell (number and id), the error and its traceback. The executed copies lie in pytest's
temporary folder (``executed/``), to be read after a failure. The kernels run in MINIDIFF_PROFILE (``smoke``
unless set), with the notebook's folder as the working directory.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from conftest import NotebookRuns
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]

SOLUTIONS = sorted((REPO / "solutions").glob("[0-9][0-9]_*.ipynb"))
STUDENTS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUB = re.compile(r"""raise NotImplementedError\(["']Exercise '(\w+)'""")

pytestmark = pytest.mark.notebooks


def printed(cell: nbformat.NotebookNode) -> str:
    """What an executed code cell printed (its stream outputs)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def stubs_and_checks(nb: nbformat.NotebookNode) -> list[tuple[str, int, nbformat.NotebookNode]]:
    """(exercise, number of the cell after its stub, that cell) for each exercise stub,
    ``raise NotImplementedError("Exercise 'NAME': ...")``; the code cell after a stub is its check."""
    code = [(number, cell) for number, cell in enumerate(nb.cells, start=1) if cell.cell_type == "code"]
    return [(name, *code[k + 1]) for k, (_, cell) in enumerate(code[:-1]) for name in STUB.findall(cell.source)]


class NotebookRun:
    """One notebook's tests (a class, so that xdist's loadscope keeps them on one worker)."""
    notebook: Path

    def run(self, notebook_runs) -> nbformat.NotebookNode:
        copy, record = notebook_runs.get(self.notebook)
        if not record.get("ok"):
            pytest.fail(f"{self.notebook.relative_to(REPO)}: {record.get('error', 'did not finish')}\n"
                        f"(the executed copy, outputs up to there: {copy})", pytrace=False)
        return nbformat.read(copy, as_version=4)

    def test_runs_top_to_bottom(self, notebook_runs):
        self.run(notebook_runs)


class StudentNotebookRun(NotebookRun):
    def test_every_blank_exercise_falls_back_to_the_reference(self, notebook_runs):
        """Each stub was reached, raised NotImplementedError, and the check after it said so and handed on minidiff's
        reference: the notebook ran on past it (test_runs_top_to_bottom) because of the fallback, not by luck."""
        pairs = stubs_and_checks(self.run(notebook_runs))
        assert pairs, f"{self.notebook.name} holds no exercise stub"
        silent = [f"{name} (cell {number})" for name, number, check in pairs
                  if "not attempted yet" not in printed(check)]
        assert not silent, (f"{self.notebook.relative_to(REPO)}: the check after each blank exercise must print "
                            f"'not attempted yet' and fall back to the reference; it did not for {', '.join(silent)}")


def test_a_notebook_executes_once_however_many_ask_and_a_failure_names_its_cell(tmp_path, monkeypatch):
    """The machinery above, on two small notebooks: three callers at once (as two xdist workers and the site
    would) get one execution and the same copy; a cell that raises is named with its error."""
    log = tmp_path / "runs.log"
    monkeypatch.setenv("RUNS_LOG", str(log))
    (tmp_path / "src").mkdir()
    counted, failing = tmp_path / "src" / "01_counted.ipynb", tmp_path / "src" / "02_failing.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import os\nopen(os.environ['RUNS_LOG'], 'a').write('ran\\n')",
                                                     id="count")]), counted)
    cells = [new_code_cell("x = 1", id="a"), new_code_cell("raise ValueError('bad t')", id="b"),
             new_code_cell("print(x)", id="c")]
    nbformat.write(new_notebook(cells=cells), failing)
    runs = NotebookRuns(tmp_path / "executed")
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda _: runs.get(counted), range(3)))
    assert log.read_text() == "ran\n", "executed more than once"
    assert {copy for copy, _ in got} == {tmp_path / "executed" / "src_01_counted.ipynb"}
    assert all(record["ok"] and record["profile"] for _, record in got)
    (_, record), = runs.get_all([failing]).values()
    assert not record["ok"] and record["error"].startswith("cell 2 of 3 (id b) raised ValueError: bad t")
    assert "raise ValueError('bad t')" in record["error"]


# One class per notebook: Test_solutions_06_sampling::test_runs_top_to_bottom names the notebook it ran.
for _path in SOLUTIONS + STUDENTS:
    _base = StudentNotebookRun if _path.parent.name == "notebooks" else NotebookRun
    _name = f"Test_{_path.parent.name}_{_path.stem}"
    globals()[_name] = type(_name, (_base,), {"notebook": _path, "__doc__": f"{_path.relative_to(REPO)}"})
del _path, _base, _name
