"""Long loops show progress and long cells their time (issue 31): a ``progress`` argument on the library's
loops (None: a bar in a notebook or on a terminal, none in a log or a test) and the course's cell timer."""
import sys

import pytest
import torch

import minidiff as md
from minidiff import progress as progress_module
from minidiff.course import timing


class Zero(torch.nn.Module):
    target = "eps"

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


class ZeroFlow(Zero):
    target = "u"


@pytest.fixture
def no_delay(monkeypatch):
    """Bars appear at once (the library waits DELAY seconds before drawing one)."""
    monkeypatch.setattr(progress_module, "DELAY", 0.0)


def sample_all(progress):
    s = md.NoiseSchedule.cosine(20)
    g = torch.Generator().manual_seed(0)
    md.ddim_sample(Zero(), s, (2, 1, 4, 4), steps=5, generator=g, progress=progress)
    md.dpm_solver_sample(Zero(), s, (2, 1, 4, 4), steps=5, generator=g, progress=progress)
    md.ddpm_sample(Zero(), s, (2, 1, 4, 4), generator=g, progress=progress)
    md.samplers.sample("ddim", Zero(), s, (3, 1, 4, 4), steps=5, batch_size=2, generator=g, progress=progress)
    md.samplers.ddim_invert(Zero(), s, torch.zeros(2, 1, 4, 4), steps=5, progress=progress)
    md.flow_sample(ZeroFlow(), (2, 1, 4, 4), steps=7, generator=g, progress=progress)
    images, mask = torch.zeros(2, 1, 4, 4), torch.ones(1, 1, 4, 4)
    md.sdedit(Zero(), images, 0.5, steps=6, schedule=s, generator=g, progress=progress)
    md.inpaint(Zero(), images, mask, steps=5, schedule=s, generator=g, progress=progress)
    md.inpaint(ZeroFlow(), images, mask, steps=5, generator=g, progress=progress)


def test_progress_false_draws_nothing(no_delay, capsys):
    sample_all(False)
    assert capsys.readouterr() == ("", "")


def test_progress_true_draws_a_bar_per_loop(no_delay, capsys):
    sample_all(True)
    err = capsys.readouterr().err
    for name in ("DDIM: ", "DDIM inversion: ", "DPM-Solver++: ", "DDPM: ", "/20 ", "/5 ", "flow ODE: ", "/7 ",
                 "SDEdit: ", "/3 ", "inpaint: "):
        assert name in err, (name, err)


def test_progress_none_is_off_under_a_test_runner_and_on_in_a_kernel(no_delay, capsys, monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not progress_module.show_progress(None)        # stderr is captured: not a terminal
    sample_all(None)
    assert capsys.readouterr() == ("", "")
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert progress_module.show_progress(None) and not progress_module.show_progress(False)


def test_a_quick_loop_draws_no_bar_even_when_asked(capsys):
    for _ in progress_module.progress_bar(range(3), True, "quick"):
        pass
    assert capsys.readouterr() == ("", "")


def test_evaluate_model_passes_progress_down(no_delay, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(md.metrics, "sample", lambda *a, progress=None, **k: calls.append(progress) or
                        torch.zeros(1000, 1, 28, 28))
    monkeypatch.setattr(md.metrics, "evaluate", lambda x, y: {"fd": 1.0, "fd_floor": 1.0})
    md.metrics.evaluate_model(Zero(), md.NoiseSchedule.cosine(20), draws=2, progress=False)
    assert calls == [False, False] and capsys.readouterr() == ("", "")


def test_the_cell_timer_prints_once_for_a_long_cell_and_not_for_a_short_one(capsys):
    now = [0.0]
    timer = timing.CellTimer(threshold=10.0, clock=lambda: now[0])
    timer.post_run_cell()                      # the cell that installed it: no start, nothing to say
    for end in (12.34, 15.0):                  # a cell of 12.34 s, then one of 2.66 s
        timer.pre_run_cell()
        now[0] = end
        timer.post_run_cell()
    timer.post_run_cell()                      # a second post event without a start prints nothing
    assert capsys.readouterr().out == "cell took 12.3 s\n"


def test_time_cells_in_an_ipython_shell_installs_once_and_removes(capsys):
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    shell = interactiveshell.InteractiveShell.instance()
    try:
        timing.time_cells(0.0, shell)
        timing.time_cells(0.0, shell)          # installed again: it replaces the first, it does not add one
        shell.run_cell("x = 1")
        out = capsys.readouterr().out
        assert out.count("cell took") == 1, out
        timing.time_cells(None, shell)
        shell.run_cell("x = 2")
        assert "cell took" not in capsys.readouterr().out
    finally:
        timing.time_cells(None, shell)
        interactiveshell.InteractiveShell.clear_instance()


def test_outside_ipython_nothing_is_installed():
    assert timing.time_cells(0.0) is None


def test_a_kernel_prints_the_time_under_the_long_cell_only():
    """In a real Jupyter kernel the timer's line lands in the output of the cell that took long."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in (
        "import minidiff.course as mc\nmc.time_cells(0.5)", "import time\ntime.sleep(0.6)", "y = 1")])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    texts = ["".join(o.get("text", "") for o in cell.outputs) for cell in nb.cells]
    assert texts[0] == "" and texts[2] == ""
    assert texts[1].startswith("cell took 0.") and texts[1].count("cell took") == 1, texts
