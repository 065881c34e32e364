r"""The course as an nbgrader course: a grading kernel and a course directory built from solutions/.

    python -m minidiff.course.grading kernel                     # register the kernel `minidiff-grading`
    python -m minidiff.course.grading assignments                # course/: config, source/, release/
    python -m minidiff.course.grading assignments 02_closed_form --course /tmp/course

Grading always runs in the ``smoke`` profile, one torch thread: the kernel ``minidiff-grading`` (this
environment's Python with ``MINIDIFF_PROFILE=smoke`` and ``OMP_NUM_THREADS=1``) is what the course's
``nbgrader_config.py`` names, so a learner's own kernel ("Python 3 (ipykernel)") keeps whatever profile they chose.
nbgrader's commands call ``alembic``, so they run with this environment's ``bin/`` first on PATH.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

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
    """The course directory ``course`` with its nbgrader_config.py (and the grading kernel registered)."""
    course.mkdir(parents=True, exist_ok=True)
    install_kernel()
    path = course / "nbgrader_config.py"
    path.write_text(CONFIG.format(course_id=COURSE_ID, kernel=KERNEL, timeout=CELL_TIMEOUT))
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.grading", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("kernel", help=f"register the grading kernel {KERNEL!r} in this environment")
    gen = sub.add_parser("assignments", help="set up the course directory and generate the student versions")
    gen.add_argument("notebooks", nargs="*", help="stems or numbers (02, 02_closed_form); default: all")
    gen.add_argument("--course", type=Path, default=Path("course"), help="the nbgrader course directory")
    gen.add_argument("--solutions", type=Path, default=Path("solutions"), help="the solved notebooks")
    args = parser.parse_args(argv)
    if args.command == "kernel":
        print(f"kernel {KERNEL!r} ({', '.join(f'{k}={v}' for k, v in KERNEL_ENV.items())}) in {install_kernel()}")
        return 0
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
