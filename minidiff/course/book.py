r"""The course as a website: notebooks 01–08 (the solutions, executed) with the README as the front page.

    python -m minidiff.course.book                                  # make book: executes in `default`
    python -m minidiff.course.book --executed gpu_suite_out         # pages from the GPU suite's full run
    python -m minidiff.course.book --profile smoke --out /tmp/site  # what CI builds and tests

Each page comes from an executed copy of ``solutions/NN_*.ipynb`` named ``solutions_NN_*.ipynb``, the
name ``scripts/gpu_suite.sh`` gives them (``RUNNER=execute``). The first ``--executed`` folder holding a
copy whose cells are the solution's current ones wins; a notebook that none holds is executed here
(``scripts/execute_notebook.py``, in ``--profile``) into ``book/_build/executed/PROFILE/`` and reused
until the solution changes. Every copy carries its profile, machine and date (``minidiff.executed`` in
its metadata), and each page prints them, with links to the student notebook and to Colab.

Then Sphinx with myst-nb renders the pages (``book/conf.py``): math by MathJax served from the site
itself, figures embedded, nothing fetched when a page is viewed.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import nbformat

from ..checkpoint import atomic_write_text
from . import colab

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "book"
EXECUTOR = REPO / "scripts" / "execute_notebook.py"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = nbformat.v4.new_output("display_data", data={
    "text/html": '<p class="minidiff-widget">An interactive widget runs here when the notebook runs in Jupyter '
                 'or on Colab (it needs a live kernel).</p>',
    "text/plain": "An interactive widget runs here when the notebook runs in Jupyter or on Colab."})
PROFILE_WORDS = {
    "smoke": "CI's fastest settings: every code path runs, but models train only briefly and the numbers are rough",
    "default": "a learner's settings: short training on a CPU, then the shipped checkpoints",
    "full": "the GPU runner's settings: models trained to reference quality, asserted by the notebook",
}
# A tqdm progress bar as a notebook stores it: a widget view whose text is the bar when it was first drawn
# ("training:   0%|          | 0/160 [00:00<?, ?it/s]"). A page drops it: it is neither interactive nor
# finished.
PROGRESS_BAR = re.compile(r"\d+%\|.*\| *[\d.]+[kMG]?/(?:[\d.]+[kMG]?|\?) \[")
# <link>/<script> tags in an HTML output that load from elsewhere (matplotlib's animation player links Font
# Awesome from a CDN; the theme serves Font Awesome itself): dropped, so a page loads nothing from outside.
REMOTE_TAG = re.compile(r"""<(?:link|script)\b[^>]*\b(?:href|src)\s*=\s*["']?(?:https?:)?//[^>]*>(?:\s*</script>)?""",
                        re.IGNORECASE)
# A link to a heading, as Jupyter writes it: the heading's text with spaces as hyphens, e.g.
# (01_forward_process.ipynb#Notation-for-the-whole-course:-steps-in-the-math,-positions-in-the-code)
HEADING_LINK = re.compile(r"\]\(((?:\d\d_\w+\.ipynb)?)#([^)\s]+)\)")
MATHJAX_SKIP = ("localization", "extensions/a11y", "jax/output/SVG")   # unused by the HTML-CSS output


class BookError(RuntimeError):
    """An executed notebook is missing or failed, or Sphinx did."""


# -- which executed copy makes each page -----------------------------------------------------------
def executed_name(solution: Path) -> str:
    """``solutions/06_sampling.ipynb`` -> ``solutions_06_sampling.ipynb`` (gpu_suite.sh's name)."""
    return f"{solution.parent.name}_{solution.name}"


def cell_sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(type, source) of every cell but the Colab setup cell: what an executed copy must share with its source."""
    return [(c.cell_type, c.source) for c in nb.cells if c.get("id") != colab.SETUP_CELL_ID]


def provenance(nb: nbformat.NotebookNode) -> dict:
    """What scripts/execute_notebook.py recorded: profile, device, gpu, cpu, date, seconds, versions, ok."""
    return dict(nb.metadata.get("minidiff", {}).get("executed", {}))


def usable(copy_path: Path, solution: nbformat.NotebookNode, profile: Optional[str] = None) -> Optional[str]:
    """Why the executed copy at ``copy_path`` cannot make the solution's page (None when it can)."""
    if not copy_path.exists():
        return "missing"
    nb = nbformat.read(copy_path, as_version=4)
    record = provenance(nb)
    if cell_sources(nb) != cell_sources(solution):
        return "its cells differ from the solution's (executed from another version)"
    if record.get("ok") is False:
        return "a cell raised when it was executed"
    if profile is not None and record.get("profile") != profile:
        return f"executed in profile {record.get('profile')!r}, not {profile!r}"
    return None


def execute(solution: Path, target: Path, profile: str, timeout: int) -> None:
    """Run scripts/execute_notebook.py on ``solution`` in ``profile``; a failure is a BookError naming the log."""
    target.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MINIDIFF_PROFILE=profile, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)     # the kernel's inline backend draws the figures into the notebook
    log = target.with_suffix(".log")
    start = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, str(EXECUTOR), str(solution), str(target), "--timeout", str(timeout)],
                              cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BookError(f"executing {solution.name} in {profile!r} failed (exit {done.returncode}); see {log}")
    print(f"  executed {solution.name} in {profile!r}: {time.monotonic() - start:.0f} s", flush=True)


def executed_copies(solutions: list[Path], folders: list[Path], cache: Path, profile: str,
                    timeout: int = 600) -> dict[Path, Path]:
    """solution -> the executed copy that makes its page: the first usable one in ``folders``, else the one in
    ``cache`` (executed now in ``profile`` when missing or stale)."""
    chosen = {}
    for solution in solutions:
        nb = nbformat.read(solution, as_version=4)
        for folder in folders:
            reason = usable(folder / executed_name(solution), nb)
            if reason is None:
                chosen[solution] = folder / executed_name(solution)
                break
            print(f"  {folder / executed_name(solution)}: not used, {reason}")
        else:
            target = cache / executed_name(solution)
            if usable(target, nb, profile) is not None:
                execute(solution, target, profile, timeout)
            chosen[solution] = target
        print(f"page {solution.stem}: {chosen[solution]}", flush=True)
    return chosen


# -- the pages ---------------------------------------------------------------------------------------
def machine(record: dict) -> str:
    """'GPU: NVIDIA H200' or 'CPU: AMD EPYC …, 2 cores', from an executed copy's record."""
    if record.get("gpu"):
        return f"GPU: {record['gpu']}"
    return f"CPU: {record.get('cpu', 'not recorded')}"


def when(record: dict) -> str:
    """'2026-12-02 19:55 UTC' from the record's ISO date (which the executor writes in UTC)."""
    date = str(record.get("date", ""))
    return f"{date[:10]} {date[11:16]} UTC" if len(date) >= 16 else (date or "date not recorded")


def provenance_html(stem: str, record: dict) -> str:
    """The box at the top of each page: which run made it, and where to get and run the student version."""
    student = f"notebooks/{stem}.ipynb"
    if record:
        versions = ", ".join(f"{k} {record[k]}" for k in ("minidiff", "torch", "python") if record.get(k))
        commit = f", commit <code>{html.escape(record['commit'])}</code>" if record.get("commit") else ""
        ran = (f"Executed in the <strong><code>{html.escape(str(record.get('profile')))}</code></strong> profile "
               f"({html.escape(PROFILE_WORDS.get(record.get('profile'), 'unknown profile'))}) on "
               f"<strong>{html.escape(machine(record))}</strong>, {html.escape(when(record))}, "
               f"in {record.get('seconds', '?')} s ({html.escape(versions)}{commit}).")
    else:
        ran = "Executed copy without a record of its profile, machine or date (made before they were recorded)."
    return (f'<div class="minidiff-provenance">\n<p>This page is the notebook with every exercise solved. {ran}</p>\n'
            f'<p><a class="minidiff-colab" href="{html.escape(colab.colab_url(student))}">Open in Colab</a> · '
            f'<a class="minidiff-student" href="{student}" download>Download the student notebook</a> '
            f'(exercises blank) · <a class="minidiff-source" href="{html.escape(colab.blob_url(student))}">'
            f"the student notebook in the repository</a></p>\n</div>")


def heading_slug(anchor: str) -> str:
    """The site's anchor of a heading (GitHub's slug, ``myst_heading_slug_func = "github"`` in book/conf.py):
    lower case, spaces as hyphens, other punctuation dropped. Jupyter's anchor (spaces as hyphens) gives the same."""
    return re.sub(r"[^\w\- ]", "", anchor.lower().replace(" ", "-"))


def site_links(markdown: str) -> str:
    """Links to headings rewritten from Jupyter's anchors to the site's, so that they resolve on both."""
    return HEADING_LINK.sub(lambda m: f"]({m.group(1)}#{heading_slug(m.group(2))})", markdown)


def is_progress_bar(output: nbformat.NotebookNode) -> bool:
    """Whether ``output`` is a tqdm bar drawn as a notebook widget (``PROGRESS_BAR``)."""
    data = output.get("data", {})
    return WIDGET_VIEW in data and bool(PROGRESS_BAR.search(str(data.get("text/plain", ""))))


def page(executed: nbformat.NotebookNode, stem: str) -> nbformat.NotebookNode:
    """The executed notebook as a page: the Colab cell and HTML tags that load from elsewhere removed, progress
    bars dropped, each other widget view replaced by a note (a widget needs a kernel), links to headings given
    the site's anchors, the provenance box after the title cell."""
    nb = copy.deepcopy(executed)
    nb.cells = [c for c in nb.cells if c.get("id") != colab.SETUP_CELL_ID]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = site_links(cell.source)
        if cell.cell_type == "code":   # a live widget needs a kernel; each one has a static figure beside it
            cell.outputs = [copy.deepcopy(WIDGET_NOTE) if WIDGET_VIEW in o.get("data", {}) else o
                            for o in cell.outputs if not is_progress_bar(o)]
            for output in cell.outputs:
                if "text/html" in output.get("data", {}):
                    output.data["text/html"] = REMOTE_TAG.sub("", output.data["text/html"])
    box = nbformat.v4.new_markdown_cell(provenance_html(stem, provenance(executed)), id="minidiff-provenance")
    nb.cells.insert(1, box)
    nb.metadata.pop("widgets", None)
    return nb


def front_page(readme: str, stems: list[str], records: dict[str, dict]) -> str:
    """The README (its links to repository files made absolute, its notebook names linked to their pages), then
    where each page came from, and the contents."""
    def link(match: re.Match) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        return f"[{text}]({colab.blob_url(target)})"
    body = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", link, readme)
    body = re.sub(r"`(\w+)\.ipynb`", lambda m: f"[`{m.group(1)}.ipynb`]({m.group(1)}.ipynb)"
                  if m.group(1) in stems else m.group(0), body)     # the README's notebook table links to the pages
    rows = "\n".join(f"| [{stem}]({stem}.ipynb) | `{r.get('profile', '?')}` | {machine(r) if r else 'not recorded'} | "
                     f"{when(r)} |" for stem, r in ((s, records[s]) for s in stems))
    toc = "\n".join(stems)
    return (f"{body.rstrip()}\n\n## Where each page of this site came from\n\n"
            f"Each page is a solution notebook executed before the site was built; the run is printed at its top.\n\n"
            f"| page | profile | machine | executed |\n|---|---|---|---|\n{rows}\n\n"
            f"```{{toctree}}\n:caption: The notebooks\n:maxdepth: 1\n\n{toc}\n```\n")


def mathjax_source() -> Path:
    """MathJax 2.7's files, as the jupyter-server-mathjax wheel ships them."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise BookError("jupyter-server-mathjax is missing: pip install -e '.[book]' (make book does)") from exc
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(pages: dict[str, nbformat.NotebookNode], records: dict[str, dict], student: Path, src: Path) -> None:
    """Sphinx's source folder ``src``: conf.py and static files, index.md, one .ipynb per page, the student
    notebooks under _extra/notebooks/ and MathJax under _static/mathjax/."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK, src, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    shutil.copytree(mathjax_source(), src / "_static" / "mathjax",
                    ignore=lambda folder, names: [n for n in names if any(
                        (Path(folder) / n).as_posix().endswith(skip) for skip in MATHJAX_SKIP)])
    (src / "_extra" / "notebooks").mkdir(parents=True)
    for stem, nb in pages.items():
        nbformat.write(nb, src / f"{stem}.ipynb")
        shutil.copyfile(student / f"{stem}.ipynb", src / "_extra" / "notebooks" / f"{stem}.ipynb")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(front_page(readme, list(pages), records), encoding="utf-8")


def sphinx(src: Path, out: Path, warnings: Path) -> None:
    """Build the HTML site from ``src`` into ``out``; Sphinx's warnings go to the file ``warnings``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "-w", str(warnings),
                           str(src), str(out)], cwd=REPO, env=env)
    if done.returncode != 0:
        raise BookError(f"sphinx-build exited {done.returncode}; warnings in {warnings}")
    count = len([line for line in warnings.read_text().splitlines() if "WARNING" in line])
    print(f"site: {out / 'index.html'} ({count} Sphinx warnings, in {warnings})")


def build(out: Path, folders: list[Path], profile: str, solutions: Path = REPO / "solutions",
          student: Path = REPO / "notebooks", work: Path = BOOK / "_build", timeout: int = 600) -> Path:
    """The whole site in ``out``; returns the path of its front page."""
    paths = sorted(solutions.glob("*.ipynb"))
    if not paths:
        raise BookError(f"no notebooks in {solutions}")
    if colab.PLACEHOLDER in colab.repository_url():
        print(f"note: the repository URL is still the placeholder ({colab.repository_url()}): set [project.urls] "
              f"Repository in pyproject.toml so the Colab links work")
    copies = executed_copies(paths, folders, work / "executed" / profile, profile, timeout)
    executed = {p.stem: nbformat.read(copies[p], as_version=4) for p in paths}
    records = {stem: provenance(nb) for stem, nb in executed.items()}
    stage({stem: page(nb, stem) for stem, nb in executed.items()}, records, student, work / "src")
    sphinx(work / "src", out, work / "sphinx-warnings.txt")
    atomic_write_text(out / "provenance.json", json.dumps(records, indent=1) + "\n")
    return out / "index.html"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.course.book", description=__doc__.split("\n")[0])
    parser.add_argument("--executed", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of executed copies (solutions_NN_*.ipynb), e.g. gpu_suite_out; repeatable")
    parser.add_argument("--profile", choices=sorted(PROFILE_WORDS), default="default",
                        help="the profile to execute the notebooks that no --executed folder holds (default: default)")
    parser.add_argument("--out", type=Path, default=BOOK / "_build" / "html", help="where the site goes")
    parser.add_argument("--work", type=Path, default=BOOK / "_build",
                        help="where executed copies are cached and Sphinx's source is staged")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run")
    args = parser.parse_args(argv)
    for folder in args.executed:
        if not folder.is_dir():
            parser.error(f"--executed must be a folder of executed notebooks; got {folder}")
    start = time.monotonic()
    try:
        index = build(args.out.resolve(), [f.resolve() for f in args.executed], args.profile,
                      work=args.work.resolve(), timeout=args.timeout)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"built {index} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
