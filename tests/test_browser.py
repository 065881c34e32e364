"""A real-browser test: JupyterLab serves a notebook, Debian's Chromium (driven by Playwright) runs it,
moves an ipywidgets slider and checks that the picture redrawn by the kernel changed.

Two tests share one JupyterLab server and one browser (a module-scoped fixture):

* ``test_widget_roundtrip_in_real_browser``: a small generated notebook (ipywidgets only, no minidiff),
  a fast canary for the browser machinery itself;
* ``test_learners_first_session_in_notebook_01``: a learner's first session as ``make lab`` sets it up:
  JupyterLab serves the repository with nbgrader's tools hidden, the learner's own copy of notebook 01
  (made by ``minidiff.course.lab.workspace``, git-ignored) runs, an exercise check gives its feedback,
  ``t_slider`` (``VBox(IntSlider, Image, Label)``) redraws x_t when t moves, the notebook is saved, and
  ``git status`` is what it was before.

Both skip, with the reason printed, where Playwright, ``/usr/bin/chromium`` (``make browser`` installs
it) or notebook 01 is missing. Nothing is downloaded: Playwright drives the system Chromium with
flags that keep it off the network, and JupyterLab runs with news and update checks off. The notebook
runs from a git-ignored copy (``my_notebooks/browser-test/``, removed afterwards), so the repository's
notebooks are never written.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_01 = REPO / "notebooks" / "01_forward_process.ipynb"
# Where the tests' notebooks go: inside the learner's git-ignored working folder, so the server can serve
# the repository itself (as `make lab` does) and git status must not change.
TEST_FOLDER = "my_notebooks/browser-test"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]
SCREENSHOT = Path("/tmp/browser_nb01.png")   # full page of notebook 01 after the slider moved
SERVER_START_S = 60        # JupyterLab must answer /api/status within this
RUN_ALL_S = 90             # every cell of a notebook must have run within this (smoke profile)
REDRAW_S = 20              # the picture must change within this after the slider moved
PROMPT = ".jp-CodeCell .jp-InputArea-prompt"   # "[ ]:" not run, "[*]:" queued or running, "[3]:" ran

pytestmark = pytest.mark.browser

# JupyterLab user settings: no toasts (news, updates) over the page, no autosave of the copied notebook,
# every cell in the DOM (no windowing), so the widget can be found wherever it is.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none", "autoStartDefaultKernel": True},   # and no "Select Kernel" dialog
}

# The canary notebook: a slider whose value picks the colour of a small PNG (ipywidgets + Pillow only).
CANARY_SOURCE = '''\
import io
import ipywidgets as widgets
import numpy as np
from PIL import Image

def png(t):
    a = np.zeros((32, 64, 3), np.uint8)
    a[..., 0] = 25 * t
    a[:, : 6 * t + 4, 1] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="png")
    return buf.getvalue()

slider = widgets.IntSlider(value=0, min=0, max=9, description="t")
image = widgets.Image(value=png(0), format="png", width=256)
slider.observe(lambda change: setattr(image, "value", png(change["new"])), names="value")
widgets.VBox([slider, image, widgets.Label("canary")])
'''


def _skip(reason: str) -> None:
    print(f"SKIPPED test_browser: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(cells: list[str], kernel: str = "python3") -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": kernel, "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None,
                   "outputs": [], "source": src} for i, src in enumerate(cells)],
    }


class Lab:
    """A JupyterLab server on 127.0.0.1 serving ``root`` and one headless Chromium driven by Playwright."""

    def __init__(self, base: Path, root: Path = REPO):
        self.base = base
        self.root = root
        self.shots = base / "screenshots"
        self.log_path = base / "jupyterlab.log"
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._playwright = None
        self.browser = None

    # -- server -----------------------------------------------------------------------------------
    def add_notebook(self, relpath: str, nb: dict) -> str:
        """Write ``nb`` under the served root, with a kernel this server has; return its path."""
        name = (nb.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"
        self._ensure_kernelspec(name)
        nb.setdefault("metadata", {}).setdefault("kernelspec", {"name": name, "display_name": name,
                                                                 "language": "python"})
        for cell in nb.get("cells", []):   # a fresh page: "[n]:" prompts then mean "ran in this test"
            if cell.get("cell_type") == "code":
                cell["outputs"], cell["execution_count"] = [], None
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(nb, indent=1))
        return relpath

    def _ensure_kernelspec(self, name: str) -> None:
        """A kernel spec ``name`` that runs this Python, so JupyterLab never asks which kernel to use."""
        spec = self.base / "jupyter_path" / "kernels" / name
        if not spec.exists():
            spec.mkdir(parents=True)
            (spec / "kernel.json").write_text(json.dumps({
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": name, "language": "python"}))

    def start_server(self) -> None:
        settings = self.base / "user_settings"
        for rel, values in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        for sub in ("workspaces", "config", "runtime", "ipython", "screenshots"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        from minidiff.course.lab import learner_config  # nbgrader hidden, as in `make lab`
        self._ensure_kernelspec("python3")
        env = dict(os.environ)
        env.update({
            "MINIDIFF_PROFILE": "smoke", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "JUPYTER_CONFIG_DIR": str(self.base / "config"), "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
            "JUPYTER_PATH": os.pathsep.join(filter(None, [str(self.base / "jupyter_path"),
                                                          os.environ.get("JUPYTER_PATH")])),
            "IPYTHONDIR": str(self.base / "ipython"),
            "JUPYTER_CONFIG_PATH": str(learner_config(str(self.base / "prefix"))),
        })
        env.pop("MPLBACKEND", None)   # the kernel picks the inline backend itself
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
               "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")   # CI containers run as root
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- browser ----------------------------------------------------------------------------------
    def start_browser(self) -> None:
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                        args=CHROMIUM_ARGS, timeout=30_000)

    def close(self) -> None:
        for step in (lambda: self.browser and self.browser.close(),
                     lambda: self._playwright and self._playwright.stop()):
            try:
                step()
            except Exception as e:  # teardown goes on whatever happens
                print(f"browser teardown: {e!r}")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # the server shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:   # whatever of its process group is left (kernels), by the group id of our own child
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.proc.poll() is None:
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        _skip(f"the Python package playwright is not importable ({e}); pip install -e '.[course]'")
    if not CHROMIUM.exists():
        _skip(f"{CHROMIUM} is missing; `make browser` (bash scripts/install_browser.sh) installs Debian's chromium")
    import shutil
    status_before = _git_status()
    shutil.rmtree(REPO / TEST_FOLDER, ignore_errors=True)
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        server.start_server()
        server.start_browser()
        yield server
    finally:
        server.close()
        shutil.rmtree(REPO / TEST_FOLDER, ignore_errors=True)
    assert _git_status() == status_before, "the browser tests changed what git status shows"


def _git_status() -> str:
    """``git status --porcelain`` of the repository ("" where it is not a git checkout)."""
    done = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


# -- driving JupyterLab ---------------------------------------------------------------------------
def open_and_run_all(lab: Lab, relpath: str, name: str, expect_stop: bool = False):
    """Open ``relpath`` in JupyterLab, run all its cells (menu Run → Run All Cells), wait until all ran.

    ``expect_stop``: a cell is meant to raise; return (page, notebook, that cell) instead of failing."""
    page = lab.browser.new_page(viewport={"width": 1400, "height": 1000})
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.set_default_timeout(30_000)
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook")
    try:
        # A workspace of its own per test: JupyterLab would otherwise reopen the other tests' notebooks.
        page.goto(f"{lab.url}/lab/workspaces/{name}/tree/{relpath}?reset&token={lab.token}",
                  wait_until="domcontentloaded")
        notebook.locator(".jp-CodeCell").first.wait_for(state="visible", timeout=60_000)
        _wait_kernel_idle(page, timeout_s=60)
        for attempt in range(2):   # a click lost to a late re-layout is retried once
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            try:
                page.wait_for_function(f"(nb) => [...nb.querySelectorAll({PROMPT!r})].some(p => /\\[(\\*|\\d+)\\]/"
                                       ".test(p.textContent))", arg=notebook.element_handle(), timeout=15_000)
                break
            except Exception:
                if attempt:
                    raise
        page.wait_for_function(f"""(nb) => {{
            const ps = [...nb.querySelectorAll({PROMPT!r})].map(p => p.textContent);
            return ps.some(p => /\\[\\d+\\]/.test(p)) && !ps.some(p => p.includes('*')); }}""",
                               arg=notebook.element_handle(), timeout=RUN_ALL_S * 1000)
        _wait_kernel_idle(page, timeout_s=30)
        prompts = notebook.locator(PROMPT).all_inner_texts()
        if not all(re.search(r"\[\d+\]", p) for p in prompts):
            # Run All stops at the first cell that raised: the last cell that ran shows the traceback.
            ran = [i for i, p in enumerate(prompts) if re.search(r"\[\d+\]", p)]
            cell = notebook.locator(".jp-CodeCell").nth(ran[-1])
            if expect_stop:
                return page, notebook, cell
            raise AssertionError(f"{name}: code cell {ran[-1] + 1} of {len(prompts)} raised, the rest did not run:"
                                 f"\n{cell.locator('.jp-OutputArea').inner_text()[-3000:]}")
    except Exception:
        _dump(page, lab, name, messages)
        page.close()
        raise
    page.dump = lambda: _dump(page, lab, name, messages)   # for the checks that follow
    if expect_stop:
        _dump(page, lab, name, messages)
        page.close()
        raise AssertionError(f"{name}: every cell ran, but one was meant to stop Run All")
    return page, notebook


def _wait_kernel_idle(page, timeout_s: float) -> None:
    """The status bar's kernel item reads ``<kernel> | Idle`` (not ``No Kernel | ...``, not ``Busy``).

    (The toolbar's execution indicator says ``idle`` already while the kernel is still starting.)
    """
    page.wait_for_function(
        """() => { const bar = document.querySelector('#jp-main-statusbar');
                   return bar !== null && /^(?!No Kernel).+ \\| Idle$/m.test(bar.innerText); }""",
        timeout=timeout_s * 1000)


def _dump(page, lab: Lab, name: str, messages: list[str]) -> None:
    """What a failure needs: a screenshot, the browser's errors, the server's log."""
    path = Path(f"/tmp/browser_{name}_failure.png")
    try:
        page.screenshot(path=str(path), full_page=True)
        print(f"failure screenshot: {path}")
    except Exception as e:
        print(f"no failure screenshot: {e!r}")
    print("browser errors:\n" + "\n".join(messages[-20:]))
    print(f"JupyterLab log ({lab.log_path}), tail:\n" + lab.log_tail())


def slider_box(notebook):
    """The first ``VBox`` holding an ``IntSlider`` and an ``Image`` as its own children (``t_slider``'s)."""
    return notebook.locator(".widget-vbox:has(> .widget-hslider):has(> .widget-image)").first


class SliderBox:
    """``VBox(IntSlider, Image, ...)`` as rendered by ipywidgets 8: moves the slider, watches the picture."""

    def __init__(self, page, box, lab: Lab, name: str):
        self.page, self.box, self.lab, self.name = page, box, lab, name
        box.wait_for(state="visible", timeout=30_000)
        box.scroll_into_view_if_needed()
        self.image = box.locator(":scope > .widget-image")                        # <img src="blob:...">
        self.readout = box.locator(":scope > .widget-hslider .widget-readout")    # contenteditable value
        self.handle = box.locator(":scope > .widget-hslider .noUi-handle")        # noUiSlider's handle
        self.caption = box.locator(":scope > .widget-label")
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=self.image.element_handle())
        self.value = self.readout.inner_text().strip()
        self.src = self.image.get_attribute("src")
        self.png = self.shot("0_start")

    def shot(self, tag: str) -> bytes:
        path = self.lab.shots / f"{self.name}_{tag}.png"
        png = self.image.screenshot(path=str(path))
        print(f"{self.name}: t = {self.readout.inner_text().strip()}, image screenshot {path}")
        return png

    def press_end(self) -> str:
        """Focus the handle and press End (the keyboard way to move a noUiSlider to its max)."""
        self.handle.focus()
        self.handle.press("End")
        return self._check_redraw("1_end")

    def type_value(self, value: int) -> str:
        """Click the readout, select its text, type ``value`` and press Enter."""
        self.readout.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(str(value))
        self.page.keyboard.press("Enter")
        return self._check_redraw(f"2_typed_{value}")

    def _check_redraw(self, tag: str) -> str:
        """The readout shows a new value, the kernel sent a new PNG (new src) and it looks different."""
        page, old_value, old_src = self.page, self.value, self.src
        try:
            page.wait_for_function("([r, old]) => r.textContent.trim() !== old",
                                   arg=[self.readout.element_handle(), old_value], timeout=REDRAW_S * 1000)
            page.wait_for_function("([img, old]) => img.getAttribute('src') !== old && img.complete "
                                   "&& img.naturalWidth > 0", arg=[self.image.element_handle(), old_src],
                                   timeout=REDRAW_S * 1000)
        except Exception:
            page.dump()
            raise AssertionError(f"{self.name}: after {tag} the slider reads {self.readout.inner_text()!r} "
                                 f"(was {old_value!r}) and the image src changed: "
                                 f"{self.image.get_attribute('src') != old_src}; waited {REDRAW_S} s")
        page.wait_for_timeout(300)   # the new picture paints
        self.value, self.src = self.readout.inner_text().strip(), self.image.get_attribute("src")
        png = self.shot(tag)
        assert png != self.png, f"{self.name}: the image looks the same after {tag} (t {old_value} -> {self.value})"
        self.png = png
        return self.value


# -- tests ------------------------------------------------------------------------------------------
def test_widget_roundtrip_in_real_browser(lab):
    """Canary: ipywidgets slider → kernel → Image, in a generated notebook (no minidiff)."""
    relpath = lab.add_notebook(f"{TEST_FOLDER}/canary.ipynb", _notebook([CANARY_SOURCE]))
    page, notebook = open_and_run_all(lab, relpath, "canary")
    try:
        widget = SliderBox(page, slider_box(notebook), lab, "canary")
        assert widget.value == "0"
        assert widget.press_end() == "9"
        assert widget.type_value(4) == "4"
    finally:
        page.close()


def test_learners_first_session_in_notebook_01(lab):
    """A learner's first session, as ``make lab`` sets it up: their own copy of notebook 01 (made by
    ``workspace``, git-ignored) opens in JupyterLab without nbgrader's tools, runs, a blank exercise's check
    says so and carries on, ``t_slider`` redraws x_t when t moves, the notebook is saved into the learner's
    copy, and the repository is as clean as before (the fixture checks ``git status`` at the end)."""
    from minidiff.course.lab import workspace
    if not NOTEBOOK_01.exists():
        _skip(f"{NOTEBOOK_01.relative_to(REPO)} does not exist yet (make notebooks)")
    copies = workspace(REPO, target=TEST_FOLDER)
    copy = REPO / TEST_FOLDER / NOTEBOOK_01.name
    assert copy in copies and copy.read_bytes() == NOTEBOOK_01.read_bytes()
    relpath = f"{TEST_FOLDER}/{NOTEBOOK_01.name}"
    page, notebook = open_and_run_all(lab, relpath, "nb01")
    try:
        menus = page.locator("#jp-MainMenu").inner_text()
        assert "Nbgrader" not in menus and "Validate" not in page.locator(".jp-Toolbar").first.inner_text(), menus
        feedback = notebook.locator(".jp-OutputArea-output", has_text="not attempted yet").first.inner_text()
        assert "using minidiff's reference implementation" in feedback, feedback
        widget = SliderBox(page, slider_box(notebook), lab, "nb01")
        assert widget.value == "0"
        t_max = int(widget.press_end())
        assert t_max > 0
        assert re.match(rf"t = {t_max}\b", widget.caption.inner_text()), widget.caption.inner_text()
        t = t_max // 4
        assert widget.type_value(t) == str(t)
        assert re.match(rf"t = {t}\b", widget.caption.inner_text()), widget.caption.inner_text()
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        print(f"nb01: full page screenshot {SCREENSHOT}")
        page.keyboard.press("Control+s")
        deadline = time.monotonic() + 20
        while copy.read_bytes() == NOTEBOOK_01.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.25)
    finally:
        page.close()
    saved = json.loads(copy.read_text())
    assert any(c.get("outputs") for c in saved["cells"] if c["cell_type"] == "code"), "the learner's copy was not saved"


NOTEBOOK_02 = REPO / "notebooks" / "02_closed_form.ipynb"


def _with_exercise_body(nb: dict, function: str, body: str) -> dict:
    """``nb`` with the stub of exercise ``function`` replaced by ``body`` (as a learner would type it)."""
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and source.startswith(f"def {function}(") and "NotImplementedError" in source:
            header = source.splitlines()[0]
            cell["source"] = header + "\n" + body
            return nb
    raise AssertionError(f"no stub of {function} in the notebook")


def test_exercise_feedback_in_notebook_02(lab):
    """A plausible wrong answer in JupyterLab: Run All stops at the check, and what the learner sees first
    is the feedback itself (no traceback frames from inside minidiff), naming the mistake in the notebook's
    words and saying how to carry on."""
    if not NOTEBOOK_02.exists():
        _skip(f"{NOTEBOOK_02.relative_to(REPO)} does not exist yet (make notebooks)")
    nb = _with_exercise_body(json.loads(NOTEBOOK_02.read_text()), "alphas_cumprod",
                             "    return torch.cumprod(betas, dim=0)   # a learner's mistake: the β's, not 1 − β")
    relpath = lab.add_notebook(f"{TEST_FOLDER}/02_wrong.ipynb", nb)
    page, notebook, cell = open_and_run_all(lab, relpath, "nb02_wrong", expect_stop=True)
    try:
        assert "check_alphas_cumprod" in cell.locator(".jp-InputArea").inner_text()   # stopped at the check
        output = cell.locator(".jp-OutputArea")
        output.scroll_into_view_if_needed()
        cell.screenshot(path=str(lab.shots / "nb02_feedback.png"))
        print(f"nb02: the check cell's screenshot {lab.shots / 'nb02_feedback.png'}")
        feedback = output.inner_text().strip()
    finally:
        page.close()
    first = feedback.splitlines()[0]
    assert first.startswith("ExerciseError: alphas_cumprod is not right yet"), feedback[:500]
    assert "Traceback" not in feedback and "File " not in feedback and "minidiff/course" not in feedback, feedback
    assert "you multiplied the β's themselves; ᾱ multiplies α = 1 − β" in feedback, feedback
    assert "mc.exercises.hint('alphas_cumprod', 2)" in feedback and "use_reference('alphas_cumprod')" in feedback
    print("nb02 feedback as shown in JupyterLab:\n" + feedback)
