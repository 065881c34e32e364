"""The site builder's parts (minidiff.course.book), on small notebooks made here: which executed copy makes a
page, what a page adds and removes, the front page. tests/test_site.py builds the real site and opens it."""
import json

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


def test_front_page_makes_repository_links_absolute_and_lists_each_pages_run():
    readme = ("# minidiff\n\nSee [INSTRUCTORS.md](INSTRUCTORS.md), [the site](https://x.org) and [below](#data).\n"
              "| 01 | `01_a.ipynb` | `09_z.ipynb` |\n")
    text = book.front_page(readme, ["01_a", "06_b"], {"01_a": RECORD, "06_b": {}})
    assert "| 01 | [`01_a.ipynb`](01_a.ipynb) | `09_z.ipynb` |" in text
    assert f"[INSTRUCTORS.md]({colab.blob_url('INSTRUCTORS.md')})" in text
    assert "[the site](https://x.org)" in text and "[below](#data)" in text
    assert "| [01_a](01_a.ipynb) | `full` | GPU: NVIDIA H200 | 2026-12-01 10:20 UTC |" in text
    assert "| [06_b](06_b.ipynb) | `?` | not recorded |" in text
    assert "```{toctree}" in text and text.rstrip().endswith("01_a\n06_b\n```")


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
