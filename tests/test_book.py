"""The site builder's parts (minidiff.course.book), on small notebooks made here: which executed copy makes a
page, what a page adds and removes (solutions folded, hidden tests gone), the student notebook it offers, the landing
page, the glossary, the last page; then a whole small site built by Sphinx, with and without the solutions, and
opened in Chromium. tests/test_site.py builds the real site from the executed notebooks and opens it."""
import json
import subprocess

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from minidiff.course import book, colab

RECORD = {"profile": "full", "device": "cuda", "gpu": "NVIDIA H200", "cpu": "AMD EPYC, 16 cores",
          "date": "2026-12-01T10:20:30+00:00", "seconds": 210.4, "python": "3.12.3", "torch": "2.11.0",
          "minidiff": "0.1.0", "commit": "abc123", "ok": True}


def solution():
    return new_notebook(cells=[new_code_cell(colab.setup_cell_source(), id=colab.SETUP_CELL_ID),
                               new_markdown_cell("# 06 · Sampling\n\nIntro.", id="c00"),
                               new_code_cell("print(1)", id="c01")])


def executed(nb, record=RECORD):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells[2].outputs = [new_output("stream", text="1\n"),
                           new_output("execute_result", data={book.WIDGET_VIEW: {"model_id": "x"},
                                                              "text/plain": "IntSlider()"}, execution_count=1)]
    if record is not None:
        nb.metadata["minidiff"] = {"executed": dict(record)}
    return nb


def test_executed_name_is_gpu_suites():
    assert book.executed_name(book.REPO / "solutions" / "06_sampling.ipynb") == "solutions_06_sampling.ipynb"


def test_usable_accepts_a_matching_copy_and_says_why_not_otherwise(tmp_path):
    sol, path = solution(), tmp_path / "solutions_06.ipynb"
    assert book.usable(path, sol) == "missing"
    nbformat.write(executed(sol), path)
    assert book.usable(path, sol) is None
    assert book.usable(path, sol, profile="full") is None
    assert "not 'smoke'" in book.usable(path, sol, profile="smoke")

    changed = solution()
    changed.cells[2].source = "print(2)"
    assert "cells differ" in book.usable(path, changed)

    other_url = solution()                     # only the Colab cell differs: the copy still makes the page
    other_url.cells[0].source = colab.setup_cell_source("https://github.com/fork/minidiff")
    assert book.usable(path, other_url) is None

    nbformat.write(executed(sol, RECORD | {"ok": False}), path)
    assert "raised" in book.usable(path, sol)


def test_executed_copies_prefer_the_first_folder_that_holds_a_usable_copy(tmp_path, monkeypatch):
    (tmp_path / "solutions").mkdir()
    sol_path = tmp_path / "solutions" / "06_sampling.ipynb"
    nbformat.write(solution(), sol_path)
    gpu, cache = tmp_path / "gpu_suite_out", tmp_path / "cache"
    gpu.mkdir()
    ran = []
    monkeypatch.setattr(book, "execute", lambda sol, target, profile, timeout: ran.append((sol.name, profile)))
    copies = book.executed_copies([sol_path], [gpu], cache, "default")
    assert copies == {sol_path: cache / "solutions_06_sampling.ipynb"}
    assert ran == [("06_sampling.ipynb", "default")], "none in gpu_suite_out: executed here"

    nbformat.write(executed(solution()), gpu / "solutions_06_sampling.ipynb")
    ran.clear()
    assert book.executed_copies([sol_path], [gpu], cache, "default") == {sol_path: gpu / "solutions_06_sampling.ipynb"}
    assert ran == []


def test_page_drops_the_colab_cell_replaces_widget_views_and_adds_the_provenance_box():
    page = book.page(executed(solution()), "06_sampling")
    assert [c.get("id") for c in page.cells] == ["c00", "minidiff-provenance", "c01"]
    assert [o.output_type for o in page.cells[2].outputs] == ["stream", "display_data"]
    note = page.cells[2].outputs[1].data
    assert book.WIDGET_VIEW not in note and "widget" in note["text/html"]
    box = page.cells[1].source
    for text in ("<code>full</code>", "GPU: NVIDIA H200", "2026-12-01 10:20 UTC", "210.4 s", "torch 2.11.0",
                 "abc123", 'href="notebooks/06_sampling.ipynb" download',
                 colab.colab_url("notebooks/06_sampling.ipynb"), "Open in Colab"):
        assert text in box, text


def test_page_drops_progress_bars_but_not_other_widgets():
    view = {book.WIDGET_VIEW: {"version_major": 2, "version_minor": 0, "model_id": "abc"}}
    bars = ["training:   0%|          | 0/160 [00:00<?, ?it/s]", "DDIM:  40%|████      | 4/10 [00:01<00:01, 3.1it/s]",
            "  0%|          | 0/1.00k [00:00<?, ?it/s]"]
    nb = executed(solution())
    nb.cells[2].outputs = ([new_output("display_data", data={**view, "text/plain": bar}) for bar in bars]
                           + [new_output("display_data", data={**view, "text/plain": "IntSlider(value=3)"}),
                              new_output("stream", name="stdout", text="cell took 12.3 s\n")])
    outputs = book.page(nb, "06_sampling").cells[2].outputs
    assert [o.output_type for o in outputs] == ["display_data", "stream"]
    assert "widget" in outputs[0].data["text/html"] and outputs[1].text == "cell took 12.3 s\n"


def test_page_drops_html_tags_that_load_from_elsewhere():
    html = ('<link rel="stylesheet"\nhref="https://maxcdn.example/fa.css">\n<script src="//cdn.example/x.js"></script>'
            '<link rel="stylesheet" href="_static/local.css"><script>var a = 1;</script><p>kept</p>')
    nb = executed(solution())
    nb.cells[2].outputs = [new_output("display_data", data={"text/html": html, "text/plain": "<HTML>"})]
    got = book.page(nb, "06_sampling").cells[2].outputs[0].data["text/html"]
    assert got == '\n<link rel="stylesheet" href="_static/local.css"><script>var a = 1;</script><p>kept</p>'


def test_provenance_box_names_the_cpu_and_a_missing_record():
    cpu = book.provenance_html("01_a", RECORD | {"gpu": None, "device": "cpu", "profile": "smoke"})
    assert "CPU: AMD EPYC, 16 cores" in cpu and "<code>smoke</code>" in cpu and "rough" in cpu
    assert "without a record" in book.provenance_html("01_a", {})


def test_cli_rejects_a_missing_executed_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        book.main(["--executed", str(tmp_path / "nowhere")])
    assert "--executed must be a folder" in capsys.readouterr().err


def test_links_to_headings_get_the_sites_anchors():
    """Jupyter links to a heading by its text with spaces as hyphens; the site (myst, GitHub slugs) by the lower-case
    slug without punctuation. The page rewrites the first into the second, in every notebook's links."""
    jupyter = "(01_forward_process.ipynb#Notation-for-the-whole-course:-steps-in-the-math,-positions-in-the-code)"
    site = "(01_forward_process.ipynb#notation-for-the-whole-course-steps-in-the-math-positions-in-the-code)"
    assert book.site_links(f"see [notebook 01]{jupyter}.") == f"see [notebook 01]{site}."
    assert book.site_links("[up](#Common-pitfalls)") == "[up](#common-pitfalls)"
    assert book.site_links("[out](https://example.org/page#Keep-Case)") == "[out](https://example.org/page#Keep-Case)"
    assert book.heading_slug("Zero terminal SNR: the last step is not quite noise") == \
        "zero-terminal-snr-the-last-step-is-not-quite-noise"
    conf = (book.BOOK / "conf.py").read_text()
    assert 'myst_heading_slug_func = "github"' in conf


def test_every_heading_link_in_the_notebooks_points_at_a_heading():
    """Each Jupyter-style link to a heading (#Anchor, in this notebook or another) names a heading that exists."""
    import re
    headings = {}
    for path in sorted((book.REPO / "solutions").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        headings[path.name] = {line.lstrip("#").strip().replace(" ", "-") for c in nb.cells if c.cell_type == "markdown"
                               for line in c.source.splitlines() if line.startswith("#")}
    for path in sorted((book.REPO / "solutions").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            for target, anchor in re.findall(r"\]\(((?:\d\d_\w+\.ipynb)?)#([^)\s]+)\)", cell.source):
                assert anchor in headings[target or path.name], f"{path.name} links to {target or path.name}#{anchor}"


# -- solutions on a page (issue 31, item 5) ------------------------------------------------------------------------
EXERCISE = ("def q_step(x_prev, t, s, noise):\n    \"\"\"One step.\"\"\"\n    ### BEGIN SOLUTION\n"
            "    beta = s.betas[t]  # the secret\n    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise\n"
            "    ### END SOLUTION")
CHECK = ("q_step = mc.exercises.check_q_step(q_step)   # yours if right\n### BEGIN HIDDEN TESTS\n"
         "import runpy; runpy.run_module(\"minidiff.course.grade\")[\"hidden\"](\"q_step\", q_step)\n"
         "### END HIDDEN TESTS")
ANSWER = "Why? <!-- BEGIN SOLUTION -->Because **variance** is kept.<!-- END SOLUTION -->"
NOTATION = ("## One step\n\nText.\n\n### Notation for the whole course: steps in the math, positions in the code\n\n"
            "| symbol | meaning |\n|---|---|\n| $\\beta_t$ | variance of step $t$ |\n\n"
            "## Next section\n\nNot glossary.")


def exercise_notebook(title="# 01 · The forward process: noise"):
    return new_notebook(cells=[new_code_cell(colab.setup_cell_source(), id=colab.SETUP_CELL_ID),
                               new_markdown_cell(f"{title}\n\nIntro words here.", id="c00"),
                               new_markdown_cell(NOTATION, id="c01"),
                               new_code_cell(EXERCISE, id="c02"), new_code_cell(CHECK, id="c03"),
                               new_markdown_cell(ANSWER, id="c04"), new_code_cell("print(1)", id="c05")])


def test_page_folds_each_solution_and_drops_the_hidden_tests():
    page = book.page(executed(exercise_notebook()), "01_forward_process")
    cells = {c.get("id"): c for c in page.cells}
    solved = cells["c02"]
    assert "BEGIN SOLUTION" not in solved.source and "END SOLUTION" not in solved.source
    assert "beta = s.betas[t]  # the secret" in solved.source and solved.source.startswith("def q_step(")
    assert {"hide-input", book.SOLUTION_TAG} <= set(solved.metadata.tags)
    assert solved.metadata.mystnb == {"code_prompt_show": "Show the solution", "code_prompt_hide": "Hide the solution"}
    check = cells["c03"]
    assert check.source == "q_step = mc.exercises.check_q_step(q_step)   # yours if right"
    assert "hide-input" not in check.metadata.get("tags", [])
    answer = cells["c04"].source
    assert "<!--" not in answer and '<details class="minidiff-solution">' in answer
    assert "<summary>Show the solution</summary>" in answer and "Because **variance** is kept." in answer
    assert "solved" in cells["minidiff-provenance"].source


def test_a_stray_grader_call_is_removed_too():
    source = 'x = 1\nimport runpy; runpy.run_module("minidiff.course.grade")["hidden"]("q", q)\ny = 2'
    assert book.without_hidden_tests(source, "here") == "x = 1\ny = 2"


def test_student_page_says_its_exercises_are_blank():
    box = book.provenance_html("01_a", RECORD, solved=False)
    assert "student notebook" in box and "blank" in box and "solved" not in box


# -- the student notebook a page offers ----------------------------------------------------------------------------
def test_download_is_the_committed_notebook_not_a_learners_autosave(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    path = tmp_path / "01_a.ipynb"
    nbformat.write(solution(), path)
    subprocess.run([*git, "add", "01_a.ipynb"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    committed = path.read_bytes()
    nbformat.write(executed(solution()), path)           # autosaved with outputs
    assert path.read_bytes() != committed
    assert book.student_download(path) == committed


def test_download_outside_git_is_the_file_without_outputs(tmp_path):
    path = tmp_path / "01_a.ipynb"
    nbformat.write(executed(solution()), path)
    nb = nbformat.reads(book.student_download(path).decode(), as_version=4)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")


def test_the_repositorys_download_is_its_committed_student_notebook():
    path = book.REPO / "notebooks" / "01_forward_process.ipynb"
    head = subprocess.run(["git", "-C", str(book.REPO), "show", "HEAD:notebooks/01_forward_process.ipynb"],
                          capture_output=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert book.student_download(path) == head.stdout


# -- landing page, learner's time, glossary, last page (issue 31, items 5 and 7) ------------------------------------
def test_learner_time_counts_reading_code_exercises_and_the_measured_run(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell(" ".join(["word"] * 1200)), new_code_cell("\n".join(["x = 1"] * 50)),
                             new_code_cell(EXERCISE)])
    assert book.exercise_count(nb) == 1
    # 1,200 words / 120 + 56 lines / 10 + 15 per exercise + 90 s = 10 + 5.6 + 15 + 1.5 = 32.1 -> 35
    assert book.learner_minutes(nb, 90.0) == 35 and book.learner_minutes(nb, None) == 35
    assert book.duration(35) == "about 35 min" and book.duration(60) == "about 1 h" and book.duration(75) == \
        "about 1 h 15 min"
    student = new_notebook(cells=[new_code_cell("def f():\n    " + book.nbgen.STUB.format(name="f")),
                                  new_markdown_cell(book.nbgen.ANSWER)])
    assert book.exercise_count(student) == 2
    times = tmp_path / "times.jsonl"
    times.write_text("\n".join(json.dumps(r) for r in [
        {"notebook": "notebooks/01_a.ipynb", "profile": "default", "ok": True, "wall_s": 50.0},
        {"notebook": "notebooks/01_a.ipynb", "profile": "smoke", "ok": True, "wall_s": 5.0},
        {"notebook": "notebooks/01_a.ipynb", "profile": "default", "ok": False, "wall_s": 9.0},
        {"notebook": "notebooks/01_a.ipynb", "profile": "default", "ok": True, "wall_s": 33.1}]) + "\n")
    assert book.measured_run("01_a", times) == 33.1 and book.measured_run("02_b", times) is None
    table = book.notebook_table({"01_a": exercise_notebook("# 01 · First"), "02_b": nb}, times)
    assert "| [01 · First](01_a.ipynb) | 2 | 33 s | about " in table
    assert "| [02_b](02_b.ipynb) | 1 | not measured yet | about 35 min |" in table


def test_landing_page_lists_every_notebook_present_with_its_time_and_what_a_learner_looks_for():
    paths = sorted((book.REPO / "solutions").glob("[0-9][0-9]_*.ipynb"))
    notebooks = {p.stem: nbformat.read(p, as_version=4) for p in paths}
    text = book.landing_page(notebooks, {stem: RECORD for stem in notebooks})
    for stem, nb in notebooks.items():      # from the files: a notebook 09 appears when its file does
        assert f"| [{book.notebook_title(nb, stem)}]({stem}.ipynb) |" in text, stem
        assert f"\n{stem}\n" in text.split("```{toctree}")[1]
    for heading in ("## What you will be able to do", "## Before you start", "## The notebooks",
                    "## How to run the notebooks", "## Where the solutions are", "## Where to ask"):
        assert heading in text
    repo = colab.repository_url()
    assert f"{repo}/issues" in text and colab.colab_url(f"notebooks/{paths[0].stem}.ipynb") in text
    assert "words a minute" in text and "benchmarks/RESULTS.md" in text         # how the times were estimated
    assert "glossary.md" in text and "next.md" in text and "{{" not in text
    assert "Show the solution" in text and "no solution is published" in book.landing_page(notebooks, {
        stem: {} for stem in notebooks}, solved=False)
    assert "make test" not in text, "the landing page is for learners; the README is the repository's page"


def test_glossary_is_notebook_01s_notation_section():
    nb = nbformat.read(book.REPO / "solutions" / "01_forward_process.ipynb", as_version=4)
    text = book.glossary_page(nb, "01_forward_process")
    section = next(c.source for c in nb.cells if c.cell_type == "markdown" and book.NOTATION_HEADING in c.source)
    table = [line for line in section.split(f"### {book.NOTATION_HEADING}")[1].splitlines() if line.startswith("|")]
    assert table and all(line in text for line in table), "the glossary holds every row of notebook 01's tables"
    assert text.startswith("# Glossary of symbols") and "01_forward_process.ipynb#notation-for-the-whole-course" in text
    small = book.glossary_page(exercise_notebook(), "01_a")
    assert "variance of step $t$" in small and "Not glossary" not in small
    with pytest.raises(book.BookError, match="Notation for the whole course"):
        book.glossary_page(solution(), "01_a")


def test_last_page_lists_the_notebooks_papers_and_how_to_contribute():
    text = book.next_page({"01_a": exercise_notebook("# 01 · First"), "02_b": solution()})
    assert "- [01 · First](01_a.ipynb)" in text and "- [06 · Sampling](02_b.ipynb)" in text
    for cited in ("arXiv:2006.11239", "arXiv:2010.02502", "arXiv:2207.12598", "arXiv:2112.10752"):
        assert cited in text
    assert "## How to contribute" in text and f"{colab.repository_url()}/issues" in text and "{{" not in text


# -- a whole small site, built by Sphinx as `make book` builds it, with and without the solutions --------------------
def _executed_copy(nb):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    code = [c for c in nb.cells if c.cell_type == "code" and c.get("id") != colab.SETUP_CELL_ID]
    code[-1].outputs = [new_output("stream", text="1\n")]
    nb.metadata["minidiff"] = {"executed": dict(RECORD)}
    return nb


@pytest.fixture(scope="module")
def small_sites(tmp_path_factory):
    """Two notebooks (01_a with two exercises, a hidden test, a written answer and the notation section; 02_b), their
    student versions made by nbgen, executed copies lent as gpu_suite_out would lend them; the site built twice."""
    import importlib.util
    missing = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme", "jupyter_server_mathjax")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the site's tools are not installed ({', '.join(missing)}): pip install -e '.[book]'")
    tmp = tmp_path_factory.mktemp("small_site")
    solutions, student, lent = tmp / "solutions", tmp / "notebooks", tmp / "lent"
    for folder in (solutions, student, lent):
        folder.mkdir()
    for stem, nb in (("01_a", exercise_notebook()), ("02_b", solution())):
        nbformat.write(nb, solutions / f"{stem}.ipynb")
        nbformat.write(book.nbgen.student_notebook(nb, stem), student / f"{stem}.ipynb")
        for folder in (solutions, student):
            source = nbformat.read(folder / f"{stem}.ipynb", as_version=4)
            nbformat.write(_executed_copy(source), lent / book.executed_name(folder / f"{stem}.ipynb"))
    sites = {}
    for solved in (True, False):
        out = tmp / ("solved" if solved else "student")
        book.build(out, [lent], "smoke", solutions=solutions, student=student, work=tmp / f"work-{solved}",
                   solved=solved, times=tmp / "no_times.jsonl")
        sites[solved] = out
    return sites, student


def test_small_site_front_page_is_the_landing_page_with_glossary_and_last_page(small_sites):
    (sites, _) = small_sites
    index = (sites[True] / "index.html").read_text(encoding="utf-8")
    for text in ("What you will be able to do", "Before you start", "Where the solutions are", "Where to ask",
                 'href="01_a.html"', 'href="02_b.html"', 'href="glossary.html"', 'href="next.html"',
                 f"{colab.repository_url()}/issues", "not measured yet"):
        assert text in index, text
    glossary = (sites[True] / "glossary.html").read_text(encoding="utf-8")
    assert "Glossary of symbols" in glossary and "variance of step" in glossary
    assert "How to contribute" in (sites[True] / "next.html").read_text(encoding="utf-8")
    assert 'rel="icon"' in index and (sites[True] / "_static" / "favicon.svg").exists()


def test_small_site_folds_solutions_and_shows_no_markers_or_hidden_tests(small_sites):
    (sites, student) = small_sites
    page = (sites[True] / "01_a.html").read_text(encoding="utf-8")
    assert page.count("Show the solution") >= 2 and "<details" in page           # the code and the written answer
    assert "the secret" in page and "variance</strong> is kept" in page
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS", "runpy", "minidiff.course.grade"):
        assert marker not in page, marker
    download = sites[True] / "notebooks" / "01_a.ipynb"
    assert 'href="notebooks/01_a.ipynb" download' in page
    assert download.read_bytes() == book.student_download(student / "01_a.ipynb")
    assert "raise NotImplementedError" in download.read_text() and "the secret" not in download.read_text()


def test_site_without_solutions_holds_no_solution_anywhere(small_sites):
    (sites, _) = small_sites
    files = [p for p in sites[False].rglob("*") if p.is_file() and p.suffix in (".html", ".ipynb", ".txt", ".js", ".md")
             and "mathjax" not in p.parts]
    assert any(p.name == "01_a.html" for p in files)
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for secret in ("the secret", "variance** is kept", "variance</strong> is kept", "Show the solution"):
            assert secret not in text, (path, secret)
    index = (sites[False] / "index.html").read_text(encoding="utf-8")
    assert "no solution is published" in index
    page = (sites[False] / "01_a.html").read_text(encoding="utf-8")
    assert "NotImplementedError" in page and "student notebook" in page


@pytest.mark.browser
def test_small_site_in_chromium_no_console_error_no_404_math_on_the_baseline(small_sites):
    """Every page: no console error (MathJax's about:blank font, the theme's mode), no response ≥ 400 (the favicon),
    no failed request; inline math on the text's baseline; the solution folded until its summary is clicked."""
    import functools
    import http.server
    import threading
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"playwright is not importable ({e})")
    from test_browser import CHROMIUM, CHROMIUM_ARGS
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; `make browser` installs it")
    (sites, _) = small_sites
    handler = functools.partial(_QuietHandler, directory=str(sites[True]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            for name in ("index.html", "01_a.html", "glossary.html", "next.html"):
                page = chromium.new_page(viewport={"width": 1300, "height": 900})
                problems = []
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.goto(f"{base}/{name}", wait_until="load")
                page.wait_for_function("() => !document.querySelector('.math') || (window.MathJax && MathJax.Hub && "
                                       "MathJax.Hub.queue.pending === 0)", timeout=60_000)   # a page without math
                                                                                              # loads no MathJax
                page.wait_for_timeout(500)
                if name in ("01_a.html", "glossary.html"):
                    offsets = page.evaluate(BASELINE_JS)
                    assert offsets and all(abs(o) <= 1 for o in offsets), (name, offsets)
                if name == "01_a.html":
                    folded = page.locator("div.tag_minidiff-solution details").first
                    assert folded.evaluate("e => !e.open") and not page.get_by_text("the secret").is_visible()
                    folded.locator("summary").click()
                    assert page.get_by_text("the secret").is_visible()
                assert problems == [], (name, problems)
                page.close()
            chromium.close()
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):   # noqa: A002 (the base class's name)
        pass


# How far (px) each typeset inline formula's first glyph sits from the baseline of the text around it: a zero-size
# inline-block before the formula sits on the line's baseline, one inside the glyph's span on the glyph's.
BASELINE_JS = """() => [...document.querySelectorAll('article span.math')].filter(m => m.querySelector('.MathJax'))
  .map(m => {
    const mark = () => { const s = document.createElement('span');
                         s.style.cssText = 'display:inline-block;width:0;height:0'; return s; };
    const line = mark(), glyph = mark(), jax = m.querySelector('.MathJax');
    m.parentNode.insertBefore(line, m);
    (jax.querySelector('.mi, .mn, .mo') || jax).appendChild(glyph);
    const offset = glyph.getBoundingClientRect().bottom - line.getBoundingClientRect().bottom;
    line.remove(); glyph.remove();
    return Math.round(offset * 10) / 10;
  })"""


def test_make_book_is_quiet_and_passes_solutions_0_on():
    """`make book` installs the book extra without echoing setuptools' editable-install warning block (issue 31), and
    `make book SOLUTIONS=0` builds the site without the solutions (issue 29)."""
    import re
    make = (book.REPO / "Makefile").read_text()
    recipe = re.search(r"^\$\(BOOK_STAMP\):.*\n((?:\t.*\n)+)", make, re.M).group(1).splitlines()
    assert all(line.startswith("\t@") for line in recipe), recipe
    install = next(line for line in recipe if "pip install" in line)
    assert "--quiet" in install and 'PYTHONWARNINGS="ignore:Editable installation"' in install
    runs = {}
    for solutions in ("0", "1"):
        done = subprocess.run(["make", "-n", "book", f"SOLUTIONS={solutions}", "BOOK_STAMP=pyproject.toml"],
                              cwd=book.REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[solutions] = done.stdout
    assert "--no-solutions" in runs["0"] and "--no-solutions" not in runs["1"]
