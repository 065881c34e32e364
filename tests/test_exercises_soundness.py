"""The checks cannot be fooled by minidiff's own answer, cannot hang or be escaped, grade each exercise on its
own, and change no loaded module while they run (issues 28, 29 and 36)."""
import sys
import time

import pytest
import torch

import minidiff as md
import minidiff.course as mc
from minidiff.course.exercises import ExerciseError, core

ex = mc.exercises


def q_step_ok(x_prev, t, s, noise):
    beta = md.extract(s.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


# -- routes to minidiff's own answer, each refused and named -----------------------------------------------
def test_a_default_argument_bound_at_definition_is_refused():
    def forward_chain(x0, s, steps, noise, _chain=md.q_chain):
        return _chain(x0, s, steps, noise)
    with pytest.raises(ExerciseError, match=r"forward_chain calls minidiff's own md\.q_chain: this exercise asks you"):
        ex.check_forward_chain(forward_chain)


def test_the_checks_own_reference_is_refused():
    def forward_chain(x0, s, steps, noise):
        return ex.EXERCISES["forward_chain"].reference(x0, s, steps, noise)
    with pytest.raises(ExerciseError, match=r"forward_chain calls minidiff's own md\.q_chain"):
        ex.check_forward_chain(forward_chain)

    def posterior_mean(x0, x_t, t, s):
        return ex.EXERCISES["posterior_mean"].reference(x0, x_t, t, s)
    with pytest.raises(ExerciseError, match=r"posterior_mean calls the checks' own answer "
                                            r"\(mc\.exercises\.EXERCISES\['posterior_mean'\]\.reference\)"):
        ex.check_posterior_mean(posterior_mean)


def test_a_call_at_any_depth_and_through_any_alias_is_refused():
    alias = sys.modules["minidiff.diffusion"].q_step
    helper = lambda *a: alias(*a)
    with pytest.raises(ExerciseError, match=r"q_step calls minidiff's own md\.q_step"):
        ex.check_q_step(lambda x, t, s, n: helper(x, t, s, n))


def test_reading_alphas_cumprod_from_a_schedule_is_refused():
    with pytest.raises(ExerciseError, match=r"alphas_cumprod calls minidiff's own md\.NoiseSchedule"):
        ex.check_alphas_cumprod(lambda betas: md.NoiseSchedule(betas).alphas_cumprod)
    with pytest.raises(ExerciseError, match=r"alphas_cumprod calls minidiff's own md\.NoiseSchedule"):
        ex.check_alphas_cumprod(lambda betas: md.schedules.NoiseSchedule(betas).alphas_cumprod)
    assert ex.check_alphas_cumprod(lambda betas: torch.cumprod(1 - betas, 0)) is not None


def test_switching_the_watch_off_is_refused():
    def q_step(x_prev, t, s, noise):
        sys.setprofile(None)
        return md.q_step(x_prev, t, s, noise)
    with pytest.raises(ExerciseError, match=r"q_step switches off the check's watch on its calls"):
        ex.check_q_step(q_step)
    assert sys.getprofile() is None


def test_swallowing_the_refusal_does_not_help():
    def q_step(x_prev, t, s, noise):
        try:
            return md.q_step(x_prev, t, s, noise)
        except BaseException:
            return q_step_ok(x_prev, t, s, noise)
    with pytest.raises(ExerciseError, match=r"q_step calls minidiff's own md\.q_step"):
        ex.check_q_step(q_step)


def test_no_module_is_changed_while_a_check_runs():
    seen = []

    def q_step(x_prev, t, s, noise):
        seen.append((md.q_step, sys.modules["minidiff.diffusion"].q_step, globals().get("md")))
        return q_step_ok(x_prev, t, s, noise)
    ex.check_q_step(q_step)
    assert all(a is md.diffusion.q_step and b is md.diffusion.q_step and m is md for a, b, m in seen)
    assert sys.getprofile() is None


def test_the_reference_through_a_checks_own_wrapper_is_allowed():
    """reparameterise's check calls minidiff's version itself, around the learner's call: not the learner's doing."""
    assert ex.check_reparameterise(lambda m, lv, n: m + (0.5 * lv).exp() * n) is not None


# -- hangs and escapes ----------------------------------------------------------------------------------------
def test_a_function_that_never_returns_is_stopped(monkeypatch):
    monkeypatch.setattr(core, "TIME_LIMIT_S", 0.5)
    start = time.perf_counter()
    with pytest.raises(ExerciseError, match=r"q_sample: your function did not return within 0\.5 s on case 1 of 5"):
        ex.check_q_sample(lambda x0, t, s, noise: time.sleep(1e9))

    def spin(x0, t, s, noise):
        while True:
            pass
    with pytest.raises(ExerciseError, match=r"did not return within 0\.5 s on case 1 of 5"):
        ex.check_q_sample(spin)
    assert time.perf_counter() - start < 10


def test_sys_exit_and_keyboard_interrupt_become_check_failures():
    with pytest.raises(ExerciseError, match=r"q_sample called sys\.exit \(or raised SystemExit\) on case 1 of 5: "
                                            r".*SystemExit\(0\)\. A function must return its answer"):
        ex.check_q_sample(lambda *a: sys.exit(0))

    def interrupted(*a):
        raise KeyboardInterrupt
    with pytest.raises(ExerciseError, match=r"q_sample was interrupted \(KeyboardInterrupt\) on case 1 of 5"):
        ex.check_q_sample(interrupted)


# -- each exercise graded on its own -------------------------------------------------------------------------
def forward_chain(x0, s, steps, noise):
    kept, x = {0: x0}, x0
    for i in range(max(steps)):
        x = q_step(x, i, s, noise[i])
        kept[i + 1] = x
    return torch.stack([kept[k] for k in steps])


def q_step(x_prev, t, s, noise):                        # wrong: ᾱ for α
    abar = md.extract(s.alphas_cumprod, t, x_prev)
    return abar.sqrt() * x_prev + (1 - abar).sqrt() * noise


def test_a_right_chain_over_a_wrong_q_step_passes_and_names_q_step(capsys):
    assert ex.check_forward_chain(forward_chain) is forward_chain
    out = capsys.readouterr().out
    assert "✓ forward_chain: correct on 5 test cases." in out
    assert "With your own q_step it does not give these answers (case 1 differs): q_step above is not right yet" in out
    assert q_step.__code__.co_names and globals()["q_step"] is q_step          # the learner's namespace untouched


def test_a_right_chain_over_a_blank_q_step_passes_under_grading(monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    scope = {"torch": torch}
    exec("def q_step(x_prev, t, s, noise):\n    raise NotImplementedError('q_step')\n" + _source(forward_chain), scope)
    assert ex.check_forward_chain(scope["forward_chain"], hidden=True) is None
    assert "hidden tests pass" in capsys.readouterr().out


def test_a_wrong_chain_is_still_wrong_with_minidiffs_q_step():
    scope = {"torch": torch, "q_step": q_step}
    exec(_source(forward_chain).replace("noise[i]", "noise[0]"), scope)
    with pytest.raises(ExerciseError, match=r"(?s)forward_chain is not right yet.*you used noise\[0\] at every step"
                                            r".*This check runs it with minidiff's q_step, not yours"):
        ex.check_forward_chain(scope["forward_chain"])


def _source(fn):
    import inspect
    return inspect.getsource(fn)


# -- the graded call: a fresh copy of the checks, and nothing changed in memory ---------------------------------
def _graded(name, fn):
    """The hidden region's call. It raises the fresh copy's ExerciseError, an AssertionError like ours."""
    import runpy
    return runpy.run_module("minidiff.course.grade")["hidden"](name, fn)


def test_the_graded_call_passes_right_answers_and_fails_blank_ones(capsys):
    assert _graded("q_step", q_step_ok) is None
    assert "✓ q_step: hidden tests pass" in capsys.readouterr().out

    def blank(x_prev, t, s, noise):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="q_step was not attempted"):
        _graded("q_step", blank)
    assert not [k for k in sys.modules if "_graded_course" in k]


def test_replacing_a_check_scores_zero(monkeypatch):
    monkeypatch.setattr(ex, "check_q_step", lambda fn, hidden=False: fn)
    with pytest.raises(AssertionError, match=r"q_step: the checks were changed in this notebook "
                                            r"\(mc\.exercises\.check_q_step\), so this check scores 0"):
        _graded("q_step", q_step)


def test_replacing_every_check_in_a_loop_scores_zero(monkeypatch):
    for key in [k for k in dir(ex) if k.startswith("check_")]:
        monkeypatch.setattr(ex, key, lambda fn, hidden=False: fn)
    with pytest.raises(AssertionError, match="the checks were changed in this notebook"):
        _graded("forward_chain", forward_chain)


@pytest.mark.parametrize("tamper", ["private_helper", "code", "tolerance", "registry", "cases", "hidden_seed"])
def test_changing_what_the_checks_rely_on_scores_zero(monkeypatch, tamper):
    if tamper == "private_helper":
        monkeypatch.setattr(core, "forbidden", lambda name: {})
    elif tamper == "code":
        monkeypatch.setattr(core.compare, "__code__", (lambda *a, **k: None).__code__)
    elif tamper == "tolerance":
        monkeypatch.setitem(core.IMAGE_TOLERANCE, "atol", 1e9)
    elif tamper == "registry":
        monkeypatch.setitem(ex.EXERCISES, "q_step", ex.EXERCISES["forward_chain"])
    elif tamper == "cases":
        monkeypatch.setattr(core, "_IMAGE_CASES", core._IMAGE_CASES[:1])
    else:                                       # the hidden cases drawn from a seed the learner chose
        monkeypatch.setattr(core, "hidden_seed", lambda: "known")
    with pytest.raises(AssertionError, match="the checks were changed in this notebook"):
        _graded("q_step", q_step_ok)


def test_replacing_minidiffs_own_function_scores_zero(monkeypatch):
    monkeypatch.setattr(md.diffusion, "q_step", q_step)            # the reference would agree with anything
    with pytest.raises(AssertionError, match=r"q_step: minidiff's own md\.diffusion\.q_step was changed in this "
                                            r"notebook, so this check scores 0"):
        _graded("q_step", q_step)


def test_internal_routes_are_refused_by_the_graded_call_too():
    def forward_chain(x0, s, steps, noise, _chain=md.q_chain):
        return _chain(x0, s, steps, noise)
    with pytest.raises(AssertionError, match=r"forward_chain calls minidiff's own md\.q_chain"):
        _graded("forward_chain", forward_chain)

    def via_registry(x0, s, steps, noise):
        return ex.EXERCISES["forward_chain"].reference(x0, s, steps, noise)
    with pytest.raises(AssertionError, match=r"forward_chain calls minidiff's own md\.q_chain"):
        _graded("forward_chain", via_registry)
    with pytest.raises(AssertionError, match=r"alphas_cumprod calls minidiff's own md\.NoiseSchedule"):
        _graded("alphas_cumprod", lambda b: md.NoiseSchedule(b).alphas_cumprod)


def test_the_library_and_checks_in_memory_match_their_files():
    import runpy
    grade = runpy.run_module("minidiff.course.grade")
    import minidiff.latent
    import minidiff.metrics
    import minidiff.pretrained
    import minidiff.samplers
    import minidiff.train  # noqa: F401
    assert grade["library_changed"]() == []
    with grade["_fresh_exercises"]() as fresh:
        assert grade["checks_changed"](fresh) == []


def test_a_right_ddim_loop_over_a_wrong_ddim_step_passes_and_names_ddim_step(capsys):
    """Issue 29: a correct loop failed through a wrong step with "t must be in [0, 999] … got −1"."""
    scope = {"torch": torch, "md": md}
    exec("def ddim_step(x_t, eps, t, t_prev, s, eta, noise):\n"          # indexes ᾱ at t_prev, even at −1
         "    abar, abar_prev = s.alphas_cumprod[t], s.alphas_cumprod[t_prev]\n"
         "    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()\n"
         "    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps\n"
         "def ddim_loop(model, s, x_T, steps, eta=0.0, y=None, generator=None):\n"
         "    T = s.num_steps\n"
         "    ts = [round(T - i * T / steps) - 1 for i in range(steps)]\n"
         "    x = x_T\n"
         "    with torch.no_grad():\n"
         "        for t, t_prev in zip(ts, ts[1:] + [-1]):\n"
         "            eps, _ = md.samplers.predict_eps(model, x, t, s, y)\n"
         "            noise = torch.randn(x.shape, generator=generator)\n"
         "            x = ddim_step(x, eps, t, t_prev, s, eta, noise)\n"
         "    return x\n", scope)
    assert ex.check_ddim_loop(scope["ddim_loop"]) is scope["ddim_loop"]
    out = capsys.readouterr().out
    assert "✓ ddim_loop: correct on 5 test cases." in out
    assert "With your own ddim_step it does not give these answers" in out and "ddim_step above is not right yet" in out
