"""The course's website, built as CI builds it and opened in a real browser.

One module-scoped build from the solutions executed in the ``smoke`` profile, the same executed copies that
tests/test_notebooks.py gives its verdict on (tests/conftest.py: each notebook runs once per session), then Sphinx
(minidiff.course.book), into a temporary folder. Then:

* every page is there, says which profile and machine made it, and links to its student notebook (the committed
  one) and Colab; the front page is the course's landing page; solutions are folded, markers and hidden tests gone;
* Debian's Chromium (Playwright, as in tests/test_browser.py) opens the pages of notebooks 01 and 06 from a
  server on 127.0.0.1 with every other address blocked, and checks that a figure image loads, that MathJax
  typeset the equations (no raw TeX left, no MathJax error) and that "Open in Colab" points at the student
  notebook, with no console error and no failed request; the landing page, the glossary and the last page load
  with no console error and no 404. Screenshots: /tmp/site_01_forward_process.png, /tmp/site_06_sampling.png.

MINIDIFF_SITE_EXECUTED (folders, separated by ':') lends smoke-executed copies to reuse while developing.
Skipped, with the reason, where the `book` extra (Sphinx, myst-nb, jupyter-server-mathjax), Playwright or
/usr/bin/chromium is missing.
"""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import re
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import PROFILE
from test_browser import CHROMIUM, CHROMIUM_ARGS, _skip

from minidiff.course import book, colab

REPO = Path(__file__).resolve().parents[1]
STEMS = sorted(p.stem for p in (REPO / "solutions").glob("*.ipynb"))
BROWSER_PAGES = ("01_forward_process", "06_sampling")
pytestmark = pytest.mark.notebooks      # it executes the solutions (or takes tests/test_notebooks.py's copies)
MATHJAX_S = 60          # MathJax must have typeset a page within this


@pytest.fixture(scope="module")
def site(tmp_path_factory, notebook_runs) -> Path:
    missing = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme", "jupyter_server_mathjax")
               if importlib.util.find_spec(m) is None]
    if missing:
        _skip(f"the site's tools are not installed ({', '.join(missing)}): pip install -e '.[book]' (make test does)")
    tmp = tmp_path_factory.mktemp("site")
    lent = [Path(p) for p in os.environ.get("MINIDIFF_SITE_EXECUTED", "").split(os.pathsep) if p]
    if not lent:    # the copies tests/test_notebooks.py executes for its verdict (made here if it has not yet)
        solutions = sorted((REPO / "solutions").glob("*.ipynb"))
        failed = [path.name for path, (_, record) in notebook_runs.get_all(solutions).items() if not record.get("ok")]
        if failed:
            pytest.fail(f"the site needs every solution executed; {', '.join(failed)} raised "
                        f"(tests/test_notebooks.py says where)", pytrace=False)
        lent = [notebook_runs.folder]
    index = book.build(tmp / "html", lent, PROFILE, work=tmp / "work")
    return index.parent


def html(site: Path, stem: str) -> str:
    return (site / f"{stem}.html").read_text(encoding="utf-8")


# -- the files ----------------------------------------------------------------------------------------------
def test_every_notebook_has_a_page_made_in_smoke_with_its_links(site):
    assert STEMS and all((site / f"{stem}.html").exists() for stem in STEMS)
    records = json.loads((site / "provenance.json").read_text())
    assert set(records) == set(STEMS)
    for stem in STEMS:
        page, record = html(site, stem), records[stem]
        assert record["profile"] == PROFILE and record["ok"] and record["cpu"], (stem, record)
        assert 'class="minidiff-provenance"' in page and f"<code>{PROFILE}</code>" in page
        assert colab.colab_url(f"notebooks/{stem}.ipynb") in page
        assert f'href="notebooks/{stem}.ipynb"' in page
        student = f"notebooks/{stem}.ipynb"
        assert (site / student).read_bytes() == book.student_download(REPO / student)   # the committed one
        assert "google.colab" not in page, "the Colab setup cell is not shown on the site"


def test_front_page_is_the_landing_page_with_every_notebook_the_glossary_and_the_last_page(site):
    index = html(site, "index")
    assert "What you will be able to do" in index and "Where each page came from" in index
    assert "make test" not in index, "the README, not the landing page, is the repository's page"
    for stem in STEMS:
        assert f'href="{stem}.html"' in index
    assert "Glossary of symbols" in html(site, "glossary") and "How to contribute" in html(site, "next")


def test_solved_pages_fold_solutions_and_hide_markers_and_hidden_tests(site):
    for stem in STEMS:
        page = html(site, stem)
        for marker in ("### BEGIN SOLUTION", "### END SOLUTION", "HIDDEN TESTS", "runpy", "minidiff.course.grade"):
            assert marker not in page, (stem, marker)
        solved = nbformat.read(REPO / "solutions" / f"{stem}.ipynb", as_version=4)
        if any("### BEGIN SOLUTION" in c.source for c in solved.cells):
            assert "Show the solution" in page and "tag_minidiff-solution" in page, stem


def test_pages_keep_figures_and_math_for_the_browser(site):
    for stem in BROWSER_PAGES:
        page = html(site, stem)
        assert re.search(r'<img [^>]*src="_images/[^"]+\.png"', page), f"{stem}: no figure"
        assert '<span class="math notranslate nohighlight">' in page, f"{stem}: no inline math"
    assert (site / "_static" / "mathjax" / "MathJax.js").exists()


# -- in a real browser ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(site):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _skip(f"the Python package playwright is not importable ({e}); pip install -e '.[course]'")
    if not CHROMIUM.exists():
        _skip(f"{CHROMIUM} is missing; `make browser` (bash scripts/install_browser.sh) installs Debian's chromium")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                              timeout=30_000)
        yield chromium, f"http://127.0.0.1:{server.server_address[1]}"
        chromium.close()
    finally:
        playwright.stop()
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):   # noqa: A002 (the base class's name)
        pass


@pytest.mark.browser
@pytest.mark.parametrize("stem", ["index", "glossary", "next"])
def test_course_pages_in_chromium_have_no_console_error_and_no_404(browser, stem):
    chromium, base = browser
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    try:
        page.goto(f"{base}/{stem}.html", wait_until="load")
        page.wait_for_function("() => !document.querySelector('.math') || (window.MathJax && MathJax.Hub && "
                               "MathJax.Hub.queue.pending === 0)", timeout=MATHJAX_S * 1000)
        page.wait_for_timeout(500)
        assert problems == [], problems
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.parametrize("stem", BROWSER_PAGES)
def test_page_in_chromium_has_a_figure_typeset_math_and_the_colab_link(browser, stem):
    chromium, base = browser
    page = chromium.new_page(viewport={"width": 1300, "height": 900})
    outside, failed = [], []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base)
               else (outside.append(route.request.url), route.abort()))
    page.on("console", lambda m: failed.append(f"console error: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("response", lambda response: failed.append(f"{response.status} {response.url}")
            if response.status >= 400 else None)
    try:
        page.goto(f"{base}/{stem}.html", wait_until="load")

        figure = page.locator("div.cell_output img").first
        figure.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=figure.element_handle())

        page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 && "
                               "document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
                               timeout=MATHJAX_S * 1000)
        typeset = page.evaluate("document.querySelectorAll('.MathJax, .MathJax_Display').length")
        raw = page.evaluate(r"""[...document.querySelectorAll('span.math, div.math')]
                                .filter(e => /\\\(|\\\[/.test(e.textContent)).length""")
        errors = page.evaluate("document.querySelectorAll('.MathJax_Error, merror').length")
        width = page.evaluate("document.querySelector('.MathJax').getBoundingClientRect().width")
        assert typeset > 0 and raw == 0 and errors == 0 and width > 0, (typeset, raw, errors, width)

        link = page.locator("a.minidiff-colab")
        assert link.get_attribute("href") == colab.colab_url(f"notebooks/{stem}.ipynb")
        student = page.request.get(f"{base}/{page.locator('a.minidiff-student').get_attribute('href')}")
        assert student.ok and nbformat.reads(student.text(), as_version=4).cells[0].id == colab.SETUP_CELL_ID

        assert outside == [], f"the page asked for addresses outside the site: {outside}"
        assert failed == [], f"requests that failed: {failed}"
        page.screenshot(path=f"/tmp/site_{stem}.png")
        print(f"{stem}: {typeset} equations typeset; screenshot /tmp/site_{stem}.png")
    finally:
        page.close()
