r"""The course as an nbgrader course: a grading kernel and a course directory built from solutions/.

    python -m minidiff.course.grading kernel                     # register the kernel `minidiff-grading`
    python -m minidiff.course.grading assignments                # course/: config, source/, release/
    python -m minidiff.course.grading assignments 02_closed_form --course /tmp/course
    python -m minidiff.course.grading grade 06_sampling --jobs 4     # autograde in parallel, a line per student
    python -m minidiff.course.grading validate 01_forward_process.ipynb   # a learner's check before handing in

Grading always runs in the ``smoke`` profile, one torch thread: the kernel ``minidiff-grading`` (this
environment's Python with ``MINIDIFF_PROFILE=smoke`` and ``OMP_NUM_THREADS=1``) is what the course's
``nbgrader_config.py`` names, so a learner's own kernel ("Python 3 (ipykernel)") keeps whatever profile they chose.
nbgrader's commands call ``alembic``, so they run with this environment's ``bin/`` first on PATH.
The course directory also holds ``hidden_cases.seed``, the secret the hidden cases are drawn from; release/
does not.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .exercises.core import SEED_FILE

KERNEL = "minidiff-grading"
KERNEL_ENV = {"MINIDIFF_PROFILE": "smoke", "OMP_NUM_THREADS": "1"}
COURSE_ID = "minidiff"
CELL_TIMEOUT = 600          # seconds per cell; smoke's slowest cell takes well under a minute on 2 cores

CONFIG = '''\
# Written by `python -m minidiff.course.grading assignments` (make assignments); rewritten on each run.
import os

c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")
# Grade in the `smoke` profile with one torch thread, whatever the notebook's own kernelspec says.
c.Execute.kernel_name = {kernel!r}
c.Execute.timeout = {timeout}          # seconds per cell (nbgrader's default is 30)
# A released check cell lacks its hidden region, so nbgrader's own OverwriteCells warns "checksum ... has
# changed" for every untouched submission; this one warns only when the cell differs from the release.
c.Autograde.sanitize_preprocessors = ["nbgrader.preprocessors.ClearOutput", "nbgrader.preprocessors.DeduplicateIds",
                                      "nbgrader.preprocessors.OverwriteKernelspec",
                                      "minidiff.course.grading.OverwriteReleasedCells",
                                      "nbgrader.preprocessors.CheckCellMetadata"]
# Feedback shows each check's result (which hidden case failed, and how), never the hidden region's code.
c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades",
                                    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
                                    "nbgrader.preprocessors.ClearHiddenTests"]
'''


def _overwrite_released_cells() -> type:
    """nbgrader's OverwriteCells, comparing a locked cell with what the release gave the student."""
    from nbgrader import utils
    from nbgrader.api import MissingEntry
    from nbgrader.preprocessors import ClearHiddenTests, OverwriteCells

    class OverwriteReleasedCells(OverwriteCells):
        """A locked cell whose source is the released one (the source with its hidden tests removed) gets its
        hidden tests back before nbgrader compares checksums: the warning then means a real edit."""

        def preprocess_cell(self, cell, resources, cell_index):  # type: ignore[no-untyped-def]
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id is not None and utils.is_locked(cell):
                try:
                    source_cell = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
                except MissingEntry:
                    source_cell = None
                if source_cell is not None and source_cell.locked:
                    released = cell.copy()
                    released.source = source_cell.source
                    ClearHiddenTests()._remove_hidden_test_region(released)
                    if cell.source == released.source:
                        cell.source = source_cell.source
            return super().preprocess_cell(cell, resources, cell_index)

    return OverwriteReleasedCells


def __getattr__(name: str) -> type:
    """``OverwriteReleasedCells`` for nbgrader's config, built on first use (nbgrader loads only when grading)."""
    if name == "OverwriteReleasedCells":
        return _overwrite_released_cells()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def kernel_dir(prefix: Optional[str] = None) -> Path:
    """Where the grading kernelspec lives: this environment's share/jupyter/kernels."""
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL


def install_kernel(prefix: Optional[str] = None) -> Path:
    """Register (or refresh) the grading kernel: this Python, ``smoke``, one thread. Returns its folder."""
    spec = {"argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "minidiff grading (smoke)", "language": "python", "env": KERNEL_ENV,
            "metadata": {"debugger": False}}
    folder = kernel_dir(prefix)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(spec, indent=1) + "\n"
    if not (folder / "kernel.json").exists() or (folder / "kernel.json").read_text() != text:
        (folder / "kernel.json").write_text(text)
    return folder


def nbgrader(args: Sequence[str], course: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` with this environment's bin/ first on PATH (nbgrader calls alembic)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` in {course} exited {done.returncode}:\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def write_config(course: Path) -> Path:
    """The course directory ``course`` with its nbgrader_config.py and its hidden-case seed (and the grading kernel
    registered)."""
    course.mkdir(parents=True, exist_ok=True)
    install_kernel()
    path = course / "nbgrader_config.py"
    path.write_text(CONFIG.format(course_id=COURSE_ID, kernel=KERNEL, timeout=CELL_TIMEOUT))
    write_seed(course)
    return path


def write_seed(course: Path) -> Path:
    """``course/hidden_cases.seed``, the secret the hidden cases are drawn from (``exercises.core.hidden_seed``
    reads it at grading time): written once, kept afterwards, so that grading again draws the same cases. It sits
    beside release/, not in it, so no learner receives it; delete it to draw new cases for the next class."""
    path = course / SEED_FILE
    if not path.is_file():
        path.write_text(secrets.token_hex(16) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path


def solution_notebooks(solutions: Path, names: Sequence[str] = ()) -> list[Path]:
    """The solution notebooks named (by stem, or by their NN prefix), or all of them."""
    paths = sorted(solutions.glob("*.ipynb"))
    if not names:
        return paths
    chosen = []
    for name in names:
        stem = Path(name).stem
        found = [p for p in paths if p.stem == stem or p.stem.split("_")[0] == stem]
        if len(found) != 1:
            raise ValueError(f"notebook {name!r}: expected one of {[p.stem for p in paths]} (or its number); "
                             f"found {len(found)} matches")
        chosen += found
    return chosen


def generate(course: Path, solutions: Path, names: Sequence[str] = ()) -> list[Path]:
    """Copy each solution into course/source/STEM/ and run ``nbgrader generate_assignment STEM``;
    returns the release notebooks."""
    notebooks = solution_notebooks(solutions, names)
    write_config(course)
    released = []
    for path in notebooks:
        source = course / "source" / path.stem
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source / path.name)
        nbgrader(["generate_assignment", path.stem, "--force"], course)
        released.append(course / "release" / path.stem / path.name)
    return released


# -- grading a class: autograde in parallel, then one line per student -------------------------------------------
@dataclass
class Graded:
    """One student's autograded notebook, as the gradebook has it."""
    student: str
    score: float
    max_score: float
    missing: list[str]              # check cells not in the submission (deleted, or their grade id changed)
    failed: str = ""                # nbgrader's own error when autograde did not finish
    log: str = ""                   # what nbgrader printed while autograding this student

    def line(self) -> str:
        """``alice   3 / 4`` and, where something needs the instructor, what."""
        text = f"{self.student:<24} {self.score:g} / {self.max_score:g}"
        if self.failed:
            return f"{text}   AUTOGRADE FAILED: {self.failed}"
        if self.missing:
            text += (f"   MISSING CHECK CELLS {', '.join(self.missing)} (deleted or renamed: scored 0, "
                     f"flagged 'needs manual grade')")
        return text


def students(course: Path, assignment: str) -> list[str]:
    """Every student with a submission of ``assignment`` in course/submitted/."""
    return sorted(p.parent.name for p in (course / "submitted").glob(f"*/{assignment}") if p.is_dir())


def autograde_one(course: Path, assignment: str, student: str, force: bool = False,
                  restore_missing: bool = False) -> tuple[str, str]:
    """``nbgrader autograde ASSIGNMENT --student STUDENT`` in a process of its own; returns ("" or its error, its
    output). Such processes share the sqlite gradebook: a run that finds it locked is run again.
    ``restore_missing``: a check cell the submission lacks is put back (nbgrader's ``add_missing_cells``)."""
    args = ["autograde", assignment, "--student", student] + (["--force"] if force else [])
    args += ["--OverwriteCells.add_missing_cells=True"] if restore_missing else []
    for attempt in range(3):
        done = nbgrader(args, course, check=False)
        log = done.stdout + done.stderr
        if done.returncode == 0:
            return "", log
        if "database is locked" not in log:
            break
        args = [*args, "--force"] if "--force" not in args else args     # the first try may have left a copy
    lines = [line for line in log.splitlines() if "[ERROR]" in line or "Error" in line]
    return (lines[-1] if lines else f"exit status {done.returncode}").strip(), log


def summarise(course: Path, assignment: str, student: str, failed: str = "", log: str = "") -> list[Graded]:
    """What the gradebook says of each notebook of ``student``'s ``assignment``, and which check cells it lacks."""
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    graded = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            try:
                submission = gb.find_submission_notebook(notebook.name, assignment, student)
            except MissingEntry:
                graded.append(Graded(student, 0.0, notebook.max_score, [], failed or "not in the gradebook", log))
                continue
            path = course / "autograded" / student / assignment / f"{notebook.name}.ipynb"
            present = set()
            if path.is_file():
                cells = nbformat.read(path, as_version=4).cells
                present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in cells}
            missing = [g.name for g in submission.grades
                       if g.cell.cell_type == "code" and g.name not in present and path.is_file()]
            graded.append(Graded(student, submission.score, submission.max_score, missing, failed, log))
    return graded


def grade(course: Path, assignment: str, jobs: int = 2, only: Sequence[str] = (), force: bool = False,
          out=sys.stdout, restore_missing: bool = False) -> list[Graded]:
    """Autograde every submission of ``assignment`` (or the students ``only``), ``jobs`` at a time, then print and
    return one line per student: score, and the check cells a submission lacks."""
    names = list(only) or students(course, assignment)
    if not names:
        raise ValueError(f"no submissions of {assignment!r} in {course / 'submitted'}/STUDENT/{assignment}/")
    # nbgrader adds a student to the gradebook when it first meets them: do that here, once, before the workers race.
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gb:
        for name in names:
            gb.update_or_create_student(name)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        runs = list(pool.map(lambda name: autograde_one(course, assignment, name, force, restore_missing),
                             names))
    results = [g for name, (error, log) in zip(names, runs) for g in summarise(course, assignment, name, error, log)]
    for result in results:
        print(result.line(), file=out)
    flagged = sum(bool(r.missing or r.failed) for r in results)
    names_graded = f"{len(names)} student{'s' if len(names) != 1 else ''}"
    print(f"{names_graded} graded, {jobs} at a time; {flagged} need a look (see INSTRUCTORS.md, "
          f"'Missing check cells')." if flagged else f"{names_graded} graded, {jobs} at a time.", file=out)
    return results


# -- a learner's own check before handing in ---------------------------------------------------------------------
def validate(notebook: Path, out=sys.stdout) -> int:
    """nbgrader's ``validate`` on ``notebook`` as grading runs it: the ``minidiff-grading`` kernel (``smoke``, one
    thread), ``CELL_TIMEOUT`` per cell, a skipped exercise failing its check, and each failure's message whole
    (nbgrader's own cuts every line at 90 characters). Prints nbgrader's report; returns how many checks fail."""
    from nbconvert.filters import strip_ansi
    from nbgrader.validator import Validator
    from traitlets.config import Config

    class WholeMessages(Validator):
        results: dict = {}

        def _indent(self, val: str) -> str:
            return "\n".join(self.indent + strip_ansi(line) for line in val.split("\n"))

        def validate(self, filename: str) -> dict:
            self.results = super().validate(filename)
            return self.results

    install_kernel()
    config = Config()
    config.Execute.kernel_name, config.Execute.timeout = KERNEL, CELL_TIMEOUT
    validator = WholeMessages(config=config)
    validator.stream = out
    validator.validate_and_print(str(notebook))
    return len(validator.results.get("failed", []))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.grading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("kernel", help=f"register the grading kernel {KERNEL!r} in this environment")
    gen = sub.add_parser("assignments", help="set up the course directory and generate the student versions")
    gen.add_argument("notebooks", nargs="*", help="stems or numbers (02, 02_closed_form); default: all")
    gen.add_argument("--course", type=Path, default=Path("course"), help="the nbgrader course directory")
    gen.add_argument("--solutions", type=Path, default=Path("solutions"), help="the solved notebooks")
    grd = sub.add_parser("grade", help="autograde every submission of an assignment in parallel; one line per student")
    grd.add_argument("assignment", help="e.g. 06_sampling")
    grd.add_argument("--course", type=Path, default=Path("course"), help="the nbgrader course directory")
    grd.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="submissions at a time (default: "
                     "the number of cores; each runs one torch thread)")
    grd.add_argument("--student", action="append", default=[], help="only this student (repeat for more)")
    grd.add_argument("--force", action="store_true", help="grade again a submission already autograded")
    grd.add_argument("--restore-missing", action="store_true", help="put back the check cells a submission lacks "
                     "(deleted) before grading it")
    val = sub.add_parser("validate", help="check a notebook as the grader will (the grading kernel, full messages)")
    val.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "kernel":
        print(f"kernel {KERNEL!r} ({', '.join(f'{k}={v}' for k, v in KERNEL_ENV.items())}) in {install_kernel()}")
        return 0
    if args.command == "validate":
        missing = [str(p) for p in args.notebooks if not p.is_file()]
        if missing:
            parser.error(f"notebooks must be files; not found: {', '.join(missing)}")
        return 1 if sum(validate(p) for p in args.notebooks) else 0
    if args.command == "grade":
        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1; got {args.jobs}")
        if not (args.course / "gradebook.db").is_file():
            parser.error(f"--course must be an nbgrader course with a gradebook (make assignments); got {args.course}")
        try:
            results = grade(args.course.resolve(), args.assignment, args.jobs, args.student, args.force,
                            restore_missing=args.restore_missing)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 1 if any(r.failed for r in results) else 0
    if not args.solutions.is_dir():
        parser.error(f"--solutions must be a directory; got {args.solutions}")
    try:
        for path in generate(args.course.resolve(), args.solutions.resolve(), args.notebooks):
            print(f"released {path}")
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
