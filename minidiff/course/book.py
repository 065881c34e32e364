r"""The course as a website: a landing page, notebooks 01, 02, … (the solutions, executed), a glossary of symbols
and a page on where to go next.

    python -m minidiff.course.book                                  # make book: executes in `default`
    python -m minidiff.course.book --executed gpu_suite_out         # pages from the GPU suite's full run
    python -m minidiff.course.book --profile smoke --out /tmp/site  # what CI builds and tests
    python -m minidiff.course.book --no-solutions                   # make book SOLUTIONS=0: no answer key

Each page comes from an executed copy of ``solutions/NN_*.ipynb`` named ``solutions_NN_*.ipynb``, the
name ``scripts/gpu_suite.sh`` gives them (``RUNNER=execute``). The first ``--executed`` folder holding a
copy whose cells are the solution's current ones wins; a notebook that none holds is executed here
(``scripts/execute_notebook.py``, in ``--profile``) into ``book/_build/executed/PROFILE/`` and reused
until the solution changes. Every copy carries its profile, machine and date (``minidiff.executed`` in
its metadata), and each page prints them, with links to the student notebook and to Colab. On a page each
exercise's solution is folded under "Show the solution", without nbgrader's markers, and the hidden tests
are not shown at all. With ``--no-solutions`` the pages come from the student notebooks (``notebooks/``,
executed the same way, as ``notebooks_NN_*.ipynb``): the exercises are blank and no solution is on the site.

The front page is the course's landing page (``book/pages/index.md``, with the notebooks found, each with a
learner's time, filled in); the glossary is notebook 01's notation section; ``book/pages/next.md`` ends the
course. The student notebook a page offers for download is the one in the repository's last commit.

Then Sphinx with myst-nb renders the pages (``book/conf.py``): math by MathJax served from the site
itself, figures embedded, nothing fetched when a page is viewed.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
import math
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
from . import colab, nbgen

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "book"
PAGES = BOOK / "pages"              # the landing page and the last page, templates filled in by the builder
TIMES = REPO / "benchmarks" / "results" / "notebook_times_cpu.jsonl"   # benchmarks/notebook_times.py's runs
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


def provenance_html(stem: str, record: dict, solved: bool = True) -> str:
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
    what = ("This page is the notebook with every exercise solved (each solution folded: "
            "<em>Show the solution</em>)." if solved else
            "This page is the student notebook: its exercises are blank, and each check goes on with minidiff's "
            "own implementation.")
    return (f'<div class="minidiff-provenance">\n<p>{what} {ran}</p>\n'
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


# -- exercises on a page: each solution folded, the hidden tests gone ------------------------------------
SOLUTION_TAG = "minidiff-solution"
SHOW, HIDE = "Show the solution", "Hide the solution"
# myst-nb folds a cell's code under a <details> whose summary is these prompts (cell-level config, key "mystnb")
FOLDED = {"code_prompt_show": SHOW, "code_prompt_hide": HIDE}
GRADER_CALL = re.compile(r"^.*runpy\.run_module\(\s*[\"']minidiff\.course\.grade[\"']\s*\).*$\n?", re.MULTILINE)
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->(.*?)<!-- END SOLUTION -->", re.DOTALL)


def has_solution(source: str) -> bool:
    return any(line.strip().startswith(nbgen.BEGIN) for line in source.split("\n"))


def without_markers(source: str) -> str:
    """A solved code cell without nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines."""
    return "\n".join(line for line in source.split("\n")
                     if not line.strip().startswith((nbgen.BEGIN, nbgen.END)))


def without_hidden_tests(source: str, where: str) -> str:
    """A check cell without its hidden-test region (markers included) or any call of the grader's hidden checks."""
    return GRADER_CALL.sub("", nbgen.strip_hidden_tests(source, where)).rstrip("\n")


def folded_answer(markdown: str) -> str:
    """A written answer (``<!-- BEGIN SOLUTION -->`` … ``<!-- END SOLUTION -->``) inside a folded block."""
    return MD_SOLUTION.sub(lambda m: f'\n\n<details class="{SOLUTION_TAG}">\n<summary>{SHOW}</summary>\n\n'
                                     f"{m.group(1).strip()}\n\n</details>\n\n", markdown)


def solutions_folded(cell: nbformat.NotebookNode, where: str) -> nbformat.NotebookNode:
    """``cell`` as a page shows it: an exercise's code folded under "Show the solution" without the markers, a check
    without its hidden tests, a written answer folded."""
    if cell.cell_type == "markdown":
        cell.source = folded_answer(cell.source)
    elif cell.cell_type == "code":
        cell.source = without_hidden_tests(cell.source, where)
        if has_solution(cell.source):
            cell.source = without_markers(cell.source)
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "hide-input", SOLUTION_TAG]
            cell.metadata["mystnb"] = {**cell.metadata.get("mystnb", {}), **FOLDED}
    return cell


def is_progress_bar(output: nbformat.NotebookNode) -> bool:
    """Whether ``output`` is a tqdm bar drawn as a notebook widget (``PROGRESS_BAR``)."""
    data = output.get("data", {})
    return WIDGET_VIEW in data and bool(PROGRESS_BAR.search(str(data.get("text/plain", ""))))


def page(executed: nbformat.NotebookNode, stem: str, solved: bool = True) -> nbformat.NotebookNode:
    """The executed notebook as a page: the Colab cell and HTML tags that load from elsewhere removed, progress
    bars dropped, each other widget view replaced by a note (a widget needs a kernel), links to headings given
    the site's anchors, each solution folded and the hidden tests removed, the provenance box after the title
    cell."""
    nb = copy.deepcopy(executed)
    nb.cells = [c for c in nb.cells if c.get("id") != colab.SETUP_CELL_ID]
    for i, cell in enumerate(nb.cells):
        solutions_folded(cell, f"{stem} cell {i}")
        if cell.cell_type == "markdown":
            cell.source = site_links(cell.source)
        if cell.cell_type == "code":   # a live widget needs a kernel; each one has a static figure beside it
            cell.outputs = [copy.deepcopy(WIDGET_NOTE) if WIDGET_VIEW in o.get("data", {}) else o
                            for o in cell.outputs if not is_progress_bar(o)]
            for output in cell.outputs:
                if "text/html" in output.get("data", {}):
                    output.data["text/html"] = REMOTE_TAG.sub("", output.data["text/html"])
    box = nbformat.v4.new_markdown_cell(provenance_html(stem, provenance(executed), solved), id="minidiff-provenance")
    nb.cells.insert(1, box)
    nb.metadata.pop("widgets", None)
    return nb


# -- the student notebook a page offers -----------------------------------------------------------------
def committed(path: Path) -> Optional[bytes]:
    """The file at ``path`` as the last commit of its git repository holds it; None outside git or if untracked."""
    try:
        done = subprocess.run(["git", "-C", str(path.parent), "show", f"HEAD:./{path.name}"], capture_output=True)
    except OSError:             # no git on this machine
        return None
    return done.stdout if done.returncode == 0 else None


def student_download(path: Path) -> bytes:
    """The student notebook a page links to: the committed one (a learner's autosave or an edit not yet committed
    never reaches the site), or where git does not know it, the file without outputs."""
    text = committed(path)
    if text is not None:
        if path.exists() and path.read_bytes() != text:
            print(f"note: {path.name} differs from the last commit; the site offers the committed version")
        return text
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return (nbformat.writes(nb) + "\n").encode()


# -- the landing page, the glossary, the last page -----------------------------------------------------------
# A learner's time for a notebook, estimated (benchmarks/notebook_times.py measures only the machine's part):
READ_WORDS_PER_MIN = 120        # prose with equations: about half of an ordinary reading speed
READ_CODE_LINES_PER_MIN = 10    # code read, not skimmed
MIN_PER_EXERCISE = 15           # INSTRUCTORS.md estimates 5–30 minutes for each; most are 10–20
ESTIMATE = (f"reading the prose at {READ_WORDS_PER_MIN} words a minute (about half an ordinary reading speed: "
            f"the text is full of equations) and the code at {READ_CODE_LINES_PER_MIN} lines a minute, "
            f"{MIN_PER_EXERCISE} minutes for each exercise (INSTRUCTORS.md estimates 5 to 30 for each; a first "
            f"try, the check's answer, a fix), plus the notebook's measured run in the `default` profile on a 2-core "
            f"CPU (`benchmarks/notebook_times.py`; [benchmarks/RESULTS.md]({colab.blob_url('benchmarks/RESULTS.md')}))"
            f", rounded up to 5 minutes. An estimate, not a measurement of learners: take it as the order of magnitude")


def notebook_title(nb: nbformat.NotebookNode, stem: str) -> str:
    """The notebook's first heading (``01 · The forward process: …``), or its file name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


def exercise_count(nb: nbformat.NotebookNode) -> int:
    """Exercises in a solution notebook (its solution regions) or a student one (its stubs)."""
    stub = nbgen.STUB.split("{name}")[0]
    return sum(c.source.count(nbgen.BEGIN) + c.source.count(stub) if c.cell_type == "code" else
               c.source.count(nbgen.MD_MARKERS[0]) + c.source.count(nbgen.ANSWER) for c in nb.cells)


def measured_run(stem: str, times: Path = TIMES) -> Optional[float]:
    """Seconds of the latest complete run of ``notebooks/STEM.ipynb`` in ``default`` on a CPU, if one was measured."""
    seconds = None
    if times.exists():
        for line in times.read_text(encoding="utf-8").splitlines():
            run = json.loads(line) if line.strip() else {}
            if (run.get("notebook") == f"notebooks/{stem}.ipynb" and run.get("profile") == "default"
                    and run.get("ok")):
                seconds = float(run["wall_s"])        # the file is in time order: the last one wins
    return seconds


def learner_minutes(nb: nbformat.NotebookNode, run_seconds: Optional[float]) -> int:
    """A learner's time for ``nb`` in minutes (``ESTIMATE`` says how), rounded up to 5."""
    words = sum(len(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    code = sum(len(c.source.splitlines()) for c in nb.cells
               if c.cell_type == "code" and c.get("id") != colab.SETUP_CELL_ID)
    minutes = (words / READ_WORDS_PER_MIN + code / READ_CODE_LINES_PER_MIN + MIN_PER_EXERCISE * exercise_count(nb)
               + (run_seconds or 0) / 60)
    return 5 * math.ceil(minutes / 5)


def duration(minutes: int) -> str:
    """75 -> 'about 1 h 15 min'."""
    hours, rest = divmod(minutes, 60)
    return "about " + (f"{hours} h {rest} min" if hours and rest else f"{hours} h" if hours else f"{rest} min")


def notebook_table(notebooks: dict[str, nbformat.NotebookNode], times: Path = TIMES) -> str:
    """One row per notebook found: its title linked to its page, exercises, measured run, a learner's time."""
    rows, total = [], 0
    for stem, nb in notebooks.items():
        run = measured_run(stem, times)
        minutes = learner_minutes(nb, run)
        total += minutes
        rows.append(f"| [{notebook_title(nb, stem)}]({stem}.ipynb) | {exercise_count(nb)} | "
                    f"{f'{run:.0f} s' if run is not None else 'not measured yet'} | {duration(minutes)} |")
    return ("| notebook | exercises | run time (`default` profile, 2-core CPU) | your time (estimate) |\n"
            "|---|---|---|---|\n" + "\n".join(rows) + f"\n\nIn all {duration(total)}, in sittings of your choosing.")


def provenance_table(stems: list[str], records: dict[str, dict]) -> str:
    rows = "\n".join(f"| [{stem}]({stem}.ipynb) | `{r.get('profile', '?')}` | {machine(r) if r else 'not recorded'} | "
                     f"{when(r)} |" for stem, r in ((s, records[s]) for s in stems))
    return f"| page | profile | machine | executed |\n|---|---|---|---|\n{rows}"


SOLUTIONS_TEXT = {
    True: ("On this site every page is a notebook with its exercises **solved**: each solution is folded under "
           "*Show the solution* below its exercise, so that you can try first. In the repository the same notebooks "
           "are in `solutions/`, and your versions, exercises blank, in `notebooks/` (`make lab` copies them to "
           "`my_notebooks/`). Each exercise is followed by a check that tells you what is wrong, or that you got it."),
    False: ("This site shows the **student notebooks**: the exercises are blank, and no solution is published here "
            "(the course that published it keeps its answer key; ask your instructor). Each exercise is followed by a "
            "check that tells you what is wrong, or that you got it; an exercise you skip falls back to minidiff's "
            "own implementation, so every page runs to the end."),
}


def fill(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{{name}}`` replaced; a name left unfilled is a BookError."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    if left := re.findall(r"\{\{(\w+)\}\}", template):
        raise BookError(f"unfilled placeholders in a page template: {', '.join(left)}")
    return template


def landing_page(notebooks: dict[str, nbformat.NotebookNode], records: dict[str, dict], solved: bool = True,
                 times: Path = TIMES) -> str:
    """The site's front page (``book/pages/index.md``): the notebooks found, with a learner's time each, the
    solutions' place, where to ask, where each page came from, the contents."""
    stems = list(notebooks)
    toc = "\n".join([*stems, "glossary", "next"])
    repo = colab.repository_url()
    return fill((PAGES / "index.md").read_text(encoding="utf-8"), {
        "notebooks": notebook_table(notebooks, times), "estimate": ESTIMATE, "solutions": SOLUTIONS_TEXT[solved],
        "repository": repo, "name": colab.github_repo(repo)[1], "issues": f"{repo}/issues",
        "colab_first": colab.colab_url(f"notebooks/{stems[0]}.ipynb"),
        "provenance": provenance_table(stems, records),
        "toctree": f"```{{toctree}}\n:caption: The course\n:maxdepth: 1\n:hidden:\n\n{toc}\n```"})


NOTATION_HEADING = "Notation for the whole course"


def glossary_page(first: nbformat.NotebookNode, stem: str) -> str:
    """The glossary: notebook 01's notation section (from its heading to the next heading), as it is in the notebook."""
    for cell in first.cells:
        lines = cell.source.splitlines() if cell.cell_type == "markdown" else []
        at = next((i for i, line in enumerate(lines) if line.startswith("#") and NOTATION_HEADING in line), None)
        if at is None:
            continue
        level = len(lines[at]) - len(lines[at].lstrip("#"))
        end = next((j for j in range(at + 1, len(lines))
                    if lines[j].startswith("#") and len(lines[j]) - len(lines[j].lstrip("#")) <= level), len(lines))
        anchor = heading_slug(lines[at].lstrip("#").strip())
        body = site_links("\n".join(lines[at + 1:end]).strip())
        return (f"# Glossary of symbols\n\nThe course's notation, as [notebook {stem[:2]}]({stem}.ipynb#{anchor}) "
                f"states it (this page is made from that notebook's section each time the site is built, so the two "
                f"always agree).\n\n{body}\n")
    raise BookError(f"{stem} has no heading '{NOTATION_HEADING}': the glossary page is made from it")


def next_page(notebooks: dict[str, nbformat.NotebookNode]) -> str:
    """The last page (``book/pages/next.md``): what you can do now, what to read next, how to contribute."""
    titles = "\n".join(f"- [{notebook_title(nb, stem)}]({stem}.ipynb)" for stem, nb in notebooks.items())
    repo = colab.repository_url()
    return fill((PAGES / "next.md").read_text(encoding="utf-8"),
                {"notebooks": titles, "repository": repo, "issues": f"{repo}/issues"})


def mathjax_source() -> Path:
    """MathJax 2.7's files, as the jupyter-server-mathjax wheel ships them."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise BookError("jupyter-server-mathjax is missing: pip install -e '.[book]' (make book does)") from exc
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def stage(pages: dict[str, nbformat.NotebookNode], sources: dict[str, nbformat.NotebookNode],
          records: dict[str, dict], student: Path, src: Path, solved: bool = True, times: Path = TIMES) -> None:
    """Sphinx's source folder ``src``: conf.py and static files, index.md (the landing page), glossary.md, next.md,
    one .ipynb per page, the student notebooks under _extra/notebooks/ and MathJax under _static/mathjax/."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK, src, ignore=shutil.ignore_patterns("_build", "__pycache__", "pages"))
    shutil.copytree(mathjax_source(), src / "_static" / "mathjax",
                    ignore=lambda folder, names: [n for n in names if any(
                        (Path(folder) / n).as_posix().endswith(skip) for skip in MATHJAX_SKIP)])
    (src / "_extra" / "notebooks").mkdir(parents=True)
    for stem, nb in pages.items():
        nbformat.write(nb, src / f"{stem}.ipynb")
        (src / "_extra" / "notebooks" / f"{stem}.ipynb").write_bytes(student_download(student / f"{stem}.ipynb"))
    first = next(iter(sources))
    (src / "index.md").write_text(landing_page(sources, records, solved, times), encoding="utf-8")
    (src / "glossary.md").write_text(glossary_page(sources[first], first), encoding="utf-8")
    (src / "next.md").write_text(next_page(sources), encoding="utf-8")


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
          student: Path = REPO / "notebooks", work: Path = BOOK / "_build", timeout: int = 600,
          solved: bool = True, times: Path = TIMES) -> Path:
    """The whole site in ``out``; returns the path of its front page. ``solved=False``: the pages are the student
    notebooks (from ``student``, executed), and no solution is on the site."""
    paths = sorted((solutions if solved else student).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise BookError(f"no notebooks in {solutions if solved else student}")
    if colab.PLACEHOLDER in colab.repository_url():
        print(f"note: the repository URL is still the placeholder ({colab.repository_url()}): set [project.urls] "
              f"Repository in pyproject.toml so the Colab links work")
    copies = executed_copies(paths, folders, work / "executed" / profile, profile, timeout)
    executed = {p.stem: nbformat.read(copies[p], as_version=4) for p in paths}
    records = {stem: provenance(nb) for stem, nb in executed.items()}
    sources = {p.stem: nbformat.read(p, as_version=4) for p in paths}
    stage({stem: page(nb, stem, solved) for stem, nb in executed.items()}, sources, records, student,
          work / "src", solved, times)
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
    parser.add_argument("--no-solutions", action="store_true",
                        help="pages from the student notebooks (exercises blank): a site without the answer key")
    args = parser.parse_args(argv)
    for folder in args.executed:
        if not folder.is_dir():
            parser.error(f"--executed must be a folder of executed notebooks; got {folder}")
    start = time.monotonic()
    try:
        index = build(args.out.resolve(), [f.resolve() for f in args.executed], args.profile,
                      work=args.work.resolve(), timeout=args.timeout, solved=not args.no_solutions)
    except BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"built {index} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
