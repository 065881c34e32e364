r"""Generate the student notebooks (notebooks/) from the solved ones (solutions/), the single source.

    python -m minidiff.course.nbgen                     # solutions/*.ipynb -> notebooks/*.ipynb
    python -m minidiff.course.nbgen --check             # exit 1, listing stale files, without writing
    python -m minidiff.course.nbgen --strip-solutions   # also store solutions/ without outputs

In a code cell every region from a line ``### BEGIN SOLUTION`` to ``### END SOLUTION`` becomes one line,
at the BEGIN line's indentation:

    raise NotImplementedError("Exercise 'q_step': replace this line with your implementation.")

named after the enclosing ``def`` (or a ``# Exercise: NAME`` comment between that def and the region).
A region must sit inside a function, so the check after it can fall back to minidiff's reference.
A check cell may hold a region from ``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` (nbgrader's
markers): the student copy loses it, markers included; the solution keeps it, and so does nbgrader's
gradebook, which puts it back when it autogrades.
In a markdown cell ``<!-- BEGIN SOLUTION -->`` … ``<!-- END SOLUTION -->`` becomes *Your answer here.*
Outputs, execution counts and volatile metadata are dropped; cell ids are kept, so diffs stay small.
Every notebook, solution and student copy, names the kernel ``KERNELSPEC`` ("Python 3 (ipykernel)").

Every notebook, solution and student version alike, starts with the Colab setup cell (id ``colab-setup``,
``minidiff.course.colab``): on Colab it pip-installs minidiff from the repository named in pyproject.toml,
anywhere else it does nothing. This command writes it (and rewrites it when that address changes): do not
edit it by hand.

The solutions also carry nbgrader's cell metadata, written by this same command (``nbgrader_metadata``),
so that plain ``nbgrader generate_assignment`` accepts them: an exercise cell is a solution cell
(grade id: the exercise's name), the check after it a locked autograded test worth ``POINTS``
(``check_NAME``), every other cell locked, read-only teaching (``NOTEBOOK-CELLID``).
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import nbformat

from ..checkpoint import atomic_write_text
from . import colab

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MD_REGION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.DOTALL)
MD_MARKERS = ("<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->")
STUB = "raise NotImplementedError(\"Exercise '{name}': replace this line with your implementation.\")"
ANSWER = "*Your answer here.*"
DEF = re.compile(r"\s*(?:async\s+)?def\s+(\w+)\s*\(")
EXERCISE = re.compile(r"\s*#\s*Exercise:\s*(\w+)")
# Cell metadata that an author sets on purpose (nbval and slideshow read some); the rest is editor state.
CELL_METADATA = ("tags", "editable", "deletable", "slideshow", "jupyter", "scrolled", "nbgrader")
CHECK = re.compile(r"mc\.exercises\.check_(\w+)\(")
POINTS = 1                          # per exercise check
NBGRADER_SCHEMA = 3
# The kernel every notebook names: Jupyter's standard one, which runs the Python of the Jupyter that opens the
# notebook (.venv's in `make lab`; a conda environment's; Colab's). Grading names its own (grading.py).
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


class NotebookError(ValueError):
    """A solution notebook whose markers cannot be turned into exercises."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def exercise_name(above: list[str], indent: int, where: str) -> str:
    """The name of the function enclosing a region at ``indent``, given the cell's lines ``above`` it."""
    comment = None
    for line in reversed(above):
        if not line.strip():
            continue
        if comment is None and (match := EXERCISE.match(line)):
            comment = match.group(1)
        if line.lstrip().startswith("#") or _indent(line) >= indent:
            continue
        indent = _indent(line)              # a line further out: the header of an enclosing block
        if match := DEF.match(line):
            return comment or match.group(1)
    raise NotebookError(f"solution region in {where} is not inside a def; exercises must be functions so "
                        f"the check can fall back to the reference")


def _rewrite_regions(source: str, where: str, begin: str, end: str,
                     replace: Callable[[list[str], int], Optional[str]]) -> str:
    """``source`` with each region from a ``begin`` marker line to its ``end`` line (markers included)
    replaced by ``replace(lines, start)``, one line, or dropped where that is None. Nested, unopened or
    unclosed regions are NotebookErrors naming ``where`` and the line."""
    lines, out, region_start = source.split("\n"), [], None
    for i, line in enumerate(lines):
        marker = line.strip()
        if marker.startswith(begin):
            if region_start is not None:
                raise NotebookError(f"{where}: nested '{begin}' (line {i + 1}) inside the region from line "
                                    f"{region_start + 1}")
            region_start = i
        elif marker.startswith(end):
            if region_start is None:
                raise NotebookError(f"{where}: '{end}' on line {i + 1} without a '{begin}' before it")
            replacement = replace(lines, region_start)
            out += [replacement] if replacement is not None else []
            region_start = None
        elif region_start is None:
            out.append(line)
    if region_start is not None:
        raise NotebookError(f"{where}: '{begin}' on line {region_start + 1} has no '{end}'")
    return "\n".join(out)


def stub_code(source: str, where: str) -> str:
    """``source`` with every solution region replaced by a NotImplementedError stub."""
    def stub(lines: list[str], start: int) -> str:
        indent = _indent(lines[start])
        return lines[start][:indent] + STUB.format(name=exercise_name(lines[:start], indent, where))
    return _rewrite_regions(source, where, BEGIN, END, stub)


def strip_hidden_tests(source: str, where: str) -> str:
    """``source`` without its hidden-test regions, marker lines included."""
    return _rewrite_regions(source, where, BEGIN_HIDDEN, END_HIDDEN, lambda lines, start: None)


def has_hidden_tests(source: str) -> bool:
    return any(line.strip().startswith(BEGIN_HIDDEN) for line in source.split("\n"))


def stub_markdown(source: str, where: str) -> str:
    """``source`` with every written-answer region replaced by *Your answer here.*"""
    out = MD_REGION.sub(ANSWER, source)
    if any(marker in out for marker in MD_MARKERS):
        raise NotebookError(f"{where}: unbalanced or nested {MD_MARKERS[0]} / {MD_MARKERS[1]} markers")
    return out


def cleaned_solution(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` without outputs, execution counts or volatile metadata; cells keep their ids."""
    nb, metadata = copy.deepcopy(nb), nb.metadata
    nb.metadata = nbformat.NotebookNode()
    if "kernelspec" in metadata:
        nb.metadata.kernelspec = copy.deepcopy(metadata.kernelspec)
    if "name" in metadata.get("language_info", {}):  # its version fields change with every Python
        nb.metadata.language_info = nbformat.NotebookNode(name=metadata.language_info.name)
    nb.nbformat, nb.nbformat_minor = 4, max(nb.nbformat_minor, 5)
    for i, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{i}")  # fixed ids for pre-4.5 notebooks, instead of random ones
        cell.metadata = nbformat.NotebookNode({k: v for k, v in cell.metadata.items() if k in CELL_METADATA})
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The cleaned notebook with every solution region stubbed; ``name`` appears in error messages."""
    nb = cleaned_solution(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = stub_code(strip_hidden_tests(cell.source, f"{name} cell {i}"), f"{name} cell {i}")
        elif cell.cell_type == "markdown":
            cell.source = stub_markdown(cell.source, f"{name} cell {i}")
    return nb


def exercise_names(source: str, where: str) -> list[str]:
    """The names of the exercises whose solution regions sit in a code cell's ``source``."""
    lines = source.split("\n")
    return [exercise_name(lines[:i], _indent(line), where) for i, line in enumerate(lines)
            if line.strip().startswith(BEGIN)]


def nbgrader_cell(cell: nbformat.NotebookNode, stem: str, where: str) -> dict:
    """nbgrader's metadata for one cell of the solution notebook ``stem``."""
    base = {"schema_version": NBGRADER_SCHEMA, "solution": False, "grade": False, "locked": True}
    names = exercise_names(cell.source, where) if cell.cell_type == "code" else []
    checks = list(dict.fromkeys(CHECK.findall(cell.source))) if cell.cell_type == "code" else []
    if has_hidden_tests(cell.source) and (names or not checks):
        raise NotebookError(f"{where}: a '{BEGIN_HIDDEN}' region must sit in a check cell (one that calls "
                            f"mc.exercises.check_NAME and holds no solution region)")
    if names:
        return base | {"solution": True, "locked": False, "grade_id": "-".join(names)}
    if checks:   # a hidden test calls the same check again: it counts once
        return base | {"grade": True, "points": POINTS * len(checks), "grade_id": "check_" + "-".join(checks)}
    return base | {"grade_id": f"{stem}-{cell.id}"}


def nbgrader_metadata(nb: nbformat.NotebookNode, stem: str, name: Optional[str] = None) -> nbformat.NotebookNode:
    """A copy of the solution notebook ``nb`` with nbgrader's metadata on every cell (nothing else
    changed); ``name`` (default ``stem``) appears in error messages."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{i}")
        cell.metadata["nbgrader"] = nbformat.NotebookNode(nbgrader_cell(cell, stem, f"{name or stem} cell {i}"))
    return nb


def with_setup_cell(nb: nbformat.NotebookNode, source: str, stem: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose first cell is the Colab setup cell holding ``source`` (added, or brought up to
    date), a locked teaching cell for nbgrader like the other cells of the notebook ``stem``."""
    nb = copy.deepcopy(nb)
    if not (nb.cells and nb.cells[0].get("id") == colab.SETUP_CELL_ID):
        nb.cells.insert(0, nbformat.v4.new_code_cell(id=colab.SETUP_CELL_ID))
    cell = nb.cells[0]
    cell.source = source
    cell.metadata["nbgrader"] = nbformat.NotebookNode(nbgrader_cell(cell, stem, f"{stem} cell 0"))
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The file's text: nbformat's JSON has sorted keys, so the same notebook always gives the same bytes."""
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def planned_files(solutions: Path, out: Path, strip_solutions: bool = False) -> dict[Path, str]:
    """Every file to write, path -> text: one student notebook per solution, and the solution itself (its
Colab cell and nbgrader metadata brought up to date; with ``strip_solutions`` also cleaned)."""
    files, setup = {}, colab.setup_cell_source()
    for path in sorted(solutions.glob("*.ipynb")):
        nb = nbgrader_metadata(nbformat.read(path, as_version=4), path.stem, str(path))
        nb.metadata.kernelspec = nbformat.NotebookNode(KERNELSPEC)
        student = student_notebook(nb, str(path))   # errors name cells as numbered in the file as it is
        files[out / path.name] = render(with_setup_cell(student, setup, path.stem))
        files[path] = render(with_setup_cell(cleaned_solution(nb) if strip_solutions else nb, setup, path.stem))
    return files


def outdated(files: dict[Path, str]) -> list[Path]:
    """The planned files that are missing on disk or differ from their planned text."""
    return [path for path, text in files.items() if not path.exists() or path.read_text(encoding="utf-8") != text]


def extra_notebooks(files: dict[Path, str], out: Path) -> list[Path]:
    """Notebooks in ``out`` that no solution notebook makes."""
    return sorted(set(out.glob("*.ipynb")) - set(files))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.nbgen", description=__doc__.split("\n")[0])
    parser.add_argument("--solutions", type=Path, default=Path("solutions"), help="solved notebooks (source)")
    parser.add_argument("--out", type=Path, default=Path("notebooks"), help="where student notebooks go")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 and list stale files")
    parser.add_argument("--strip-solutions", action="store_true", help="also clear outputs of the solutions")
    args = parser.parse_args(argv)
    if not args.solutions.is_dir():
        parser.error(f"--solutions must be a directory; got {args.solutions}")
    try:
        files = planned_files(args.solutions, args.out, args.strip_solutions)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stale, extra = outdated(files), extra_notebooks(files, args.out)
    if args.check:
        return report(stale, extra)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in stale:
        atomic_write_text(path, files[path])       # a full disk leaves the old notebook whole
        print(f"wrote {path}")
    for path in extra:
        print(f"left alone: {path} (no solution notebook of that name)")
    return 0


def report(stale: list[Path], extra: list[Path]) -> int:
    """``--check``: list what is stale and return the exit status (1 when anything is)."""
    for path in stale:
        print(f"stale: {path} ({'differs' if path.exists() else 'missing'})")
    for path in extra:
        print(f"stale: {path} (extra: no solution notebook of that name)")
    if not stale and not extra:
        print("up to date")
        return 0
    print("regenerate with: python -m minidiff.course.nbgen  (make notebooks)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
