"""What several test files share: each notebook executed once per test session, and the order xdist hands out work.

**Each notebook runs once.** ``notebook_runs.get(path)`` executes a notebook top to bottom in a fresh kernel
(scripts/execute_notebook.py, the semantics of ``nbval --nbval-lax``: any cell that raises fails it) the first time
any test of the session asks for it, and hands every later caller, in any xdist worker, the same executed copy.
tests/test_notebooks.py gives the pass/fail verdict of every notebook from it; tests/test_site.py builds the site
from the same copies of the solutions. A file lock per notebook makes the two workers share the work instead of
repeating it: whoever asks first executes, the other waits for the copy (or executes one nobody has started).

**Heaviest first.** With ``--dist loadscope --no-loadscope-reorder`` xdist hands out scopes (a module, or a class:
each notebook's tests are one class) in collection order; ``pytest_collection_modifyitems`` below moves the
notebooks to the front, longest first, then the slowest test modules, so that no long job starts last.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import nbformat
import pytest

try:
    import fcntl
except ImportError:         # Windows: no lock; two workers may then execute the same notebook (same result)
    fcntl = None

REPO = Path(__file__).resolve().parents[1]
PROFILE = os.environ.get("MINIDIFF_PROFILE", "smoke")
# The checks' hidden cases are drawn from a secret seed (a course's hidden_cases.seed when grading); outside a
# course, from this variable, so that every test run (and every notebook kernel it starts) draws the same ones.
os.environ.setdefault("MINIDIFF_HIDDEN_SEED", "minidiff-tests")
CELL_TIMEOUT_S = 600

# Seconds each notebook took in `smoke` on CI's 2-core machine (benchmarks/RESULTS.md): only the ORDER matters.
# A notebook missing here (a new one) counts as the longest, so it starts first.
SMOKE_SECONDS = {"06": 103, "07": 68, "05": 63, "08": 34, "03": 31, "04": 24, "01": 18, "02": 17}
# Modules that take tens of seconds (--durations): right after the notebooks. The site comes last of them, so
# that by the time it starts the solutions it builds from are executed or being executed.
SLOW_MODULES = ("test_nbgrader.py", "test_browser.py", "test_samplers.py", "test_train.py", "test_benchmarks.py",
                "test_book.py", "test_site.py")


def _load_executor():
    spec = importlib.util.spec_from_file_location("execute_notebook", REPO / "scripts" / "execute_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def executed_name(path: Path) -> str:
    """``solutions/06_sampling.ipynb`` -> ``solutions_06_sampling.ipynb`` (the name the site and gpu_suite.sh use)."""
    return f"{path.parent.name}_{path.name}"


def kernel_env() -> dict:
    """The kernel's environment: this checkout's minidiff first on the path, one torch thread unless told
    otherwise, the profile of the test run (`smoke` unless MINIDIFF_PROFILE says), matplotlib's inline backend."""
    env = dict(os.environ, MINIDIFF_PROFILE=PROFILE,
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)
    return env


class NotebookRuns:
    """Executed copies of notebooks in ``folder`` (one folder per test session, shared by its xdist workers)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def copy_path(self, path: Path) -> Path:
        return self.folder / executed_name(path)

    @contextlib.contextmanager
    def _lock(self, path: Path, wait: bool = True):
        """Hold ``path``'s lock (yield True); with wait=False yield False at once when another process holds it."""
        with open(self.folder / (executed_name(path) + ".lock"), "w") as handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
            yield True

    def _execute(self, path: Path) -> None:
        if not self.copy_path(path).exists():
            _load_executor().execute(path, self.copy_path(path), CELL_TIMEOUT_S, env=kernel_env())

    def get(self, path: Path) -> tuple[Path, dict]:
        """The executed copy of ``path`` and its record (``ok``, and ``error`` naming the cell that raised)."""
        with self._lock(path):
            self._execute(path)
        copy = self.copy_path(path)
        return copy, dict(nbformat.read(copy, as_version=4).metadata["minidiff"]["executed"])

    def get_all(self, paths: list[Path]) -> dict[Path, tuple[Path, dict]]:
        """Every one of ``paths``: first those no other worker is executing, then wait for the others."""
        for path in paths:
            with self._lock(path, wait=False) as mine:
                if mine:
                    self._execute(path)
        return {path: self.get(path) for path in paths}


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory) -> NotebookRuns:
    base = tmp_path_factory.getbasetemp()
    # An xdist worker's base is <session>/popen-gwN: the session's folder, one level up, is shared by the workers.
    return NotebookRuns((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "executed")


def _rank(item: pytest.Item) -> tuple:
    path = Path(str(item.fspath))
    if path.name == "test_notebooks.py" and item.cls is not None:
        notebook = item.cls.notebook
        return (0, -SMOKE_SECONDS.get(notebook.name[:2], 10**6), notebook.parent.name)
    if path.name in SLOW_MODULES:
        return (1, SLOW_MODULES.index(path.name))
    return (2,)


def pytest_collection_modifyitems(config, items):
    """Notebooks first (longest first, the solution and the student version of one notebook side by side), then
    the slow modules, then the rest in their usual order (sorted() keeps it among equals)."""
    items[:] = sorted(items, key=_rank)
