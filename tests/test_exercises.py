"""Exercise checks: right answers pass, stubs fall back to the reference, typical mistakes are explained."""
import math
import math as _math
import re

import pytest
import torch
import torch.nn.functional as _F

import minidiff as md
import minidiff.course as mc
from minidiff.course import exercises as ex
from minidiff.course.exercises import Case, ExerciseError


def coef(table, t, x):
    """table[t] in x's dtype, shaped (B, 1, 1, 1) to broadcast over an image batch (as a learner writes it)."""
    return table[t].to(x.dtype).reshape(-1, *(1,) * (x.ndim - 1))


def first_hint(name):
    return ex.EXERCISES[name].hints[0]


def assert_explained(check, fn, case, description, *fragments):
    """``check(fn)`` raises ExerciseError naming ``case`` and ``description``, expected vs got, and the hint."""
    with pytest.raises(ExerciseError, match=f"case {case} of 5") as excinfo:
        check(fn)
    message = str(excinfo.value)
    for fragment in (description, "expected", "got", "Hint: ", *fragments):
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    return message


# -- learner-style correct solutions --------------------------------------------------------------
def q_step_ok(x_prev, t, s, noise):
    return coef(s.alphas, t, x_prev).sqrt() * x_prev + coef(s.betas, t, x_prev).sqrt() * noise


def q_sample_ok(x0, t, s, noise):
    abar = coef(s.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def posterior_mean_ok(x0, x_t, t, s):
    """Casts every table to float32 first: near t = 0, 1 − ᾱ_t is then ~1e-3 off, and still accepted."""
    abar, abar_prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    return abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t


def cosine_ok(num_steps, s=0.008, max_beta=0.999):
    u = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def alphas_cumprod_ok(betas):
    out, running = [], 1.0
    for beta in betas.tolist():
        running *= 1 - beta
        out.append(running)
    return torch.tensor(out, dtype=torch.float64)


def forward_chain_ok(x0, s, steps, noise):
    """Runs only as far as needed, keeps a dict of clones, casts nothing."""
    kept, x = {0: x0.clone()}, x0
    for i in range(max(steps)):                 # position i: x_i -> x_{i+1}
        x = q_step_ok(x, i, s, noise[i])
        kept[i + 1] = x.clone()
    return torch.stack([kept[k] for k in steps])


def convert_prediction_ok(output, x_t, t, s, target):
    a, b = coef(s.sqrt_alphas_cumprod, t, x_t), coef(s.sqrt_one_minus_alphas_cumprod, t, x_t)
    if target == "eps":
        eps, x0 = output, (x_t - b * output) / a
    elif target == "x0":
        eps, x0 = (x_t - a * output) / b, output
    else:
        x0, eps = a * x_t - b * output, b * x_t + a * output
    return eps, x0, a * eps - b * x0


CHECKS = {  # check -> (minidiff's reference, a learner's correct solution)
    ex.check_q_step: (md.q_step, q_step_ok),
    ex.check_q_sample: (md.q_sample, q_sample_ok),
    ex.check_alphas_cumprod: (lambda betas: torch.cumprod(1 - betas, 0), alphas_cumprod_ok),
    ex.check_posterior_mean: (ex.use_reference("posterior_mean"), posterior_mean_ok),   # minidiff's own: allowed
    ex.check_cosine_schedule: (ex.use_reference("cosine_schedule"), cosine_ok),
    ex.check_forward_chain: (md.q_chain, forward_chain_ok),
    ex.check_convert_prediction: (ex.use_reference("convert_prediction"), convert_prediction_ok),
}
NAMES = {ex.check_q_step: "q_step", ex.check_q_sample: "q_sample", ex.check_alphas_cumprod: "alphas_cumprod",
         ex.check_posterior_mean: "posterior_mean", ex.check_cosine_schedule: "cosine_schedule",
         ex.check_forward_chain: "forward_chain", ex.check_convert_prediction: "convert_prediction"}


# -- every check: pass, not attempted, crash ---------------------------------------------------------
@pytest.mark.parametrize("check", list(CHECKS), ids=list(NAMES.values()))
@pytest.mark.parametrize("which", ["reference", "learner"])
def test_correct_function_passes_and_is_returned(check, which, capsys):
    fn = CHECKS[check][0 if which == "reference" else 1]
    assert check(fn) is fn
    assert capsys.readouterr().out == f"✓ {NAMES[check]}: correct on 5 test cases.\n"


@pytest.mark.parametrize("check", list(CHECKS), ids=list(NAMES.values()))
def test_stub_falls_back_to_the_reference(check, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise '{NAMES[check]}': replace this line with your implementation.")

    returned = check(stub)
    out = capsys.readouterr().out
    assert out.startswith(f"{NAMES[check]}: not attempted yet — using minidiff's reference implementation")
    assert "(Replace the raise in the exercise cell to try it.)" in out
    assert returned is not stub
    assert check(returned) is returned                     # the fallback is right on every case
    if check in (ex.check_q_step, ex.check_q_sample):
        assert returned is CHECKS[check][0]


@pytest.mark.parametrize("check", list(CHECKS), ids=list(NAMES.values()))
def test_under_nbgrader_a_skipped_exercise_fails_its_check(check, monkeypatch):
    """For a learner a stub falls back; under autograde (NBGRADER_EXECUTION set) it must score 0."""
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise '{NAMES[check]}': replace this line with your implementation.")

    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match=f"{NAMES[check]} was not attempted.*scores 0"):
        check(stub)


@pytest.mark.parametrize("check", list(CHECKS), ids=list(NAMES.values()))
def test_any_other_exception_is_explained_and_chained(check):
    def crashes(*args, **kwargs):
        raise KeyError("no such table")

    with pytest.raises(ExerciseError, match="raised an error on case 1 of 5") as excinfo:
        check(crashes)
    assert "KeyError: 'no such table'" in str(excinfo.value) and "Hint: " in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, KeyError)


# -- forward_chain and convert_prediction (algorithms, not one formula) ------------------------------
def test_forward_chain_explains_the_order_of_steps_and_labels():
    def keeps_after_position(x0, s, steps, noise):     # kept[i] after the step at position i: one step late
        kept, x = {0: x0}, x0
        for i in range(s.num_steps):
            x = q_step_ok(x, i, s, noise[i])
            kept[i] = x
        return torch.stack([kept[k] for k in steps])
    with pytest.raises(ExerciseError, match="case 1 of 5") as excinfo:
        ex.check_forward_chain(keeps_after_position)
    message = str(excinfo.value)
    assert re.search(r"at entry \d \(the image after \d steps\), image \d, channel 0, row \d, column \d", message)
    assert "each image is one step too far" in message and "Hint: " in message


def test_forward_chain_with_one_noise_or_in_place_is_named():
    def one_noise(x0, s, steps, noise):
        return forward_chain_ok(x0, s, steps, noise[:1].expand_as(noise))
    assert _mistake(ex.check_forward_chain, one_noise).startswith("you used noise[0] at every step")

    def in_place(x0, s, steps, noise):
        kept, x = {0: x0}, x0.clone()
        for i in range(max(steps)):
            x.mul_(coef(s.alphas, i, x).sqrt()).add_(coef(s.betas, i, x).sqrt() * noise[i])
            kept[i + 1] = x
        return torch.stack([kept[k] if k else x for k in steps])
    assert _mistake(ex.check_forward_chain, in_place).startswith("every kept image is the last one")


def test_forward_chain_may_not_call_q_chain_but_may_call_q_step(capsys):
    with pytest.raises(ExerciseError, match="calls minidiff's own md.q_chain"):
        ex.check_forward_chain(lambda x0, s, steps, noise: md.q_chain(x0, s, steps, noise))
    def with_md_q_step(x0, s, steps, noise):                # md.q_step stays allowed: it is exercise 1's
        return torch.stack([_chain_to(x0, s, k, noise) for k in steps])
    assert ex.check_forward_chain(with_md_q_step) is with_md_q_step


def _chain_to(x0, s, k, noise):
    x = x0
    for i in range(k):
        x = md.q_step(x, i, s, noise[i])
    return x


def test_convert_prediction_names_the_v_mistakes():
    def v_sign(output, x_t, t, s, target):
        eps, x0, v = convert_prediction_ok(output, x_t, t, s, target)
        return eps, x0, -v
    assert _mistake(ex.check_convert_prediction, v_sign).startswith("v has the wrong sign")

    def from_v_swapped(output, x_t, t, s, target):
        if target != "v":
            return convert_prediction_ok(output, x_t, t, s, target)
        a, b = coef(s.sqrt_alphas_cumprod, t, x_t), coef(s.sqrt_one_minus_alphas_cumprod, t, x_t)
        eps, x0 = a * x_t - b * output, b * x_t + a * output
        return eps, x0, a * eps - b * x0
    message = _mistake(ex.check_convert_prediction, from_v_swapped)
    assert message.startswith("from v, ε and x0 are swapped")


def test_convert_prediction_says_which_output_is_wrong():
    def x0_wrong(output, x_t, t, s, target):
        eps, x0, v = convert_prediction_ok(output, x_t, t, s, target)
        return eps, x0 + 1, v
    with pytest.raises(ExerciseError, match=r"case 1 of 5: .*target='eps'\n  x0: wrong values") as excinfo:
        ex.check_convert_prediction(x0_wrong)
    assert "(t = 0, step 1)" in str(excinfo.value)
    with pytest.raises(ExerciseError, match=r"calls minidiff's own md.predict_eps_from_v"):
        ex.check_convert_prediction(lambda o, x, t, s, target: convert_prediction_ok(o, x, t, s, target)
                                    if target != "v" else (md.predict_eps_from_v(x, t, o, s),
                                                           md.predict_x0_from_v(x, t, o, s), o))


# -- q_step ---------------------------------------------------------------------------------------
def test_q_step_with_alphas_cumprod_instead_of_alphas():
    def wrong(x_prev, t, s, noise):   # ᾱ_t = α_t only at t = 0, so case 1 passes
        return coef(s.alphas_cumprod, t, x_prev).sqrt() * x_prev + coef(s.betas, t, x_prev).sqrt() * noise
    message = assert_explained(ex.check_q_step, wrong, 2, "x_prev shape (3, 1, 8, 8), t=tensor([0, 10, 999])",
                               "wrong values", "largest abs error", "tolerance")
    assert first_hint('q_step') in message


def test_q_step_without_square_roots():
    def wrong(x_prev, t, s, noise):
        return coef(s.alphas, t, x_prev) * x_prev + coef(s.betas, t, x_prev) * noise
    assert_explained(ex.check_q_step, wrong, 1, "x_prev shape (2, 1, 4, 4), t=0", "wrong values")


def test_q_step_left_in_float64():
    def wrong(x_prev, t, s, noise):
        return s.alphas[t].sqrt().reshape(-1, 1, 1, 1) * x_prev + s.betas[t].sqrt().reshape(-1, 1, 1, 1) * noise
    assert_explained(ex.check_q_step, wrong, 1, "t=0",
                     "wrong dtype: expected torch.float32, got torch.float64", ".to(x.dtype)")


def test_q_step_wrong_shape():
    def wrong(x_prev, t, s, noise):
        return q_step_ok(x_prev, t, s, noise).squeeze(1)
    assert_explained(ex.check_q_step, wrong, 1, "x_prev shape (2, 1, 4, 4)",
                     "wrong shape: expected (2, 1, 4, 4), got (2, 4, 4)")


def test_q_step_without_broadcast_crashes_with_a_clear_message():
    def wrong(x_prev, t, s, noise):   # (B,) against (B, C, H, W) lines B up with W
        return s.alphas[t].float().sqrt() * x_prev + s.betas[t].float().sqrt() * noise
    with pytest.raises(ExerciseError, match="raised an error on case 2 of 5") as excinfo:
        ex.check_q_step(wrong)
    assert "t=tensor([0, 10, 999])" in str(excinfo.value) and "RuntimeError" in str(excinfo.value)


def test_q_step_that_draws_its_own_noise():
    def wrong(x_prev, t, s, noise):
        return q_step_ok(x_prev, t, s, torch.randn_like(x_prev))
    state = torch.random.get_rng_state()
    assert_explained(ex.check_q_step, wrong, 1, "noise shape (2, 1, 4, 4)", "wrong values")
    assert torch.equal(torch.random.get_rng_state(), state), "a check must not move the global RNG"


# -- alphas_cumprod -------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong, case, problem", [
    (lambda betas: torch.cumsum(1 - betas, 0), 1, "wrong values"),
    (lambda betas: torch.cumprod(betas, 0), 1, "wrong values"),
    (lambda betas: torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, 0)[:-1]]), 1, "wrong values"),
    (lambda betas: torch.cumprod(1 - betas, 0).float(), 1, "wrong dtype: expected torch.float64, got torch.float32"),
    (lambda betas: torch.cumprod(1 - betas, 0)[:-1], 1, "wrong shape: expected (10,), got (9,)"),
], ids=["cumsum", "cumprod_of_betas", "shifted_by_one", "float32", "one_short"])
def test_alphas_cumprod_mistakes(wrong, case, problem):
    message = assert_explained(ex.check_alphas_cumprod, wrong, case, "betas of the linear schedule, T=10", problem)
    assert first_hint('alphas_cumprod') in message


# -- q_sample -------------------------------------------------------------------------------------
def test_q_sample_with_alphas_instead_of_alphas_cumprod():
    def wrong(x0, t, s, noise):
        a = coef(s.alphas, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise
    message = assert_explained(ex.check_q_sample, wrong, 2, "x0 shape (3, 1, 8, 8), t=tensor([0, 10, 999])",
                               "wrong values")
    assert first_hint('q_sample') in message


def test_q_sample_off_by_one_in_t():
    def wrong(x0, t, s, noise):       # t − 1 wraps around to T − 1 at t = 0
        return q_sample_ok(x0, t - 1, s, noise)
    assert_explained(ex.check_q_sample, wrong, 1, "x0 shape (2, 1, 4, 4), t=0, schedule=linear (T=1000)",
                     "wrong values", "at image ", "(t = 0, step 1), channel 0, row ",
                     "you indexed at t − 1")


def test_q_sample_without_square_roots():
    def wrong(x0, t, s, noise):
        abar = coef(s.alphas_cumprod, t, x0)
        return abar * x0 + (1 - abar) * noise
    assert_explained(ex.check_q_sample, wrong, 1, "t=0", "wrong values")


def test_q_sample_t_plus_one():
    def wrong(x0, t, s, noise):       # one step too far: wrong already at t = 0
        return q_sample_ok(x0, t + 1, s, noise)
    assert_explained(ex.check_q_sample, wrong, 1, "t=0", "wrong values")


def test_q_sample_t_plus_one_on_batches_only_crashes_at_the_last_step():
    def wrong(x0, t, s, noise):
        return q_sample_ok(x0, t if isinstance(t, int) else t + 1, s, noise)
    with pytest.raises(ExerciseError, match="q_sample raised an error on case 2 of 5") as excinfo:
        ex.check_q_sample(wrong)
    assert "t=tensor([0, 10, 999])" in str(excinfo.value) and "IndexError" in str(excinfo.value)



# -- posterior_mean -------------------------------------------------------------------------------
def test_posterior_mean_with_coefficients_swapped():
    def wrong(x0, x_t, t, s):
        return posterior_mean_ok(x_t, x0, t, s)
    message = assert_explained(ex.check_posterior_mean, wrong, 1, "x0 shape (2, 1, 4, 4), x_t shape (2, 1, 4, 4)",
                               "wrong values")
    assert first_hint('posterior_mean') in message


def test_posterior_mean_with_alphas_cumprod_of_t_minus_one():
    def wrong(x0, x_t, t, s):         # right for t ≥ 1, wraps around at t = 0
        abar, abar_prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod, t - 1, x0)
        beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
        return abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    assert_explained(ex.check_posterior_mean, wrong, 1, "t=0", "wrong values")


def test_posterior_mean_with_alphas_cumprod_instead_of_prev():
    def wrong(x0, x_t, t, s):
        abar = coef(s.alphas_cumprod, t, x0)
        beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
        return abar.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar) / (1 - abar) * x_t
    assert_explained(ex.check_posterior_mean, wrong, 1, "t=0", "wrong values")


# -- cosine_schedule ------------------------------------------------------------------------------
def test_cosine_without_offset():
    def wrong(num_steps, s=0.008, max_beta=0.999):
        return cosine_ok(num_steps, 0.0, max_beta)
    message = assert_explained(ex.check_cosine_schedule, wrong, 1, "num_steps=10", "wrong values")
    assert first_hint('cosine_schedule') in message


def test_cosine_without_clipping():
    def wrong(num_steps, s=0.008, max_beta=0.999):
        return cosine_ok(num_steps, s, max_beta=1.0)
    message = assert_explained(ex.check_cosine_schedule, wrong, 1, "num_steps=10", "wrong values")
    assert "at index (9,): expected 0.999, got 1" in message


def test_cosine_from_python_floats_is_float32():
    def wrong(num_steps, s=0.008, max_beta=0.999):
        return torch.tensor(cosine_ok(num_steps, s, max_beta).tolist())
    assert_explained(ex.check_cosine_schedule, wrong, 1, "num_steps=10",
                     "wrong dtype: expected torch.float64, got torch.float32")


def test_cosine_with_t_points_instead_of_t_plus_one():
    def wrong(num_steps, s=0.008, max_beta=0.999):
        return cosine_ok(num_steps - 1, s, max_beta)
    assert_explained(ex.check_cosine_schedule, wrong, 1, "num_steps=10", "wrong shape: expected (10,), got (9,)")


def test_cosine_ignoring_its_arguments_fails_on_the_case_that_sets_them():
    def wrong(num_steps, s=0.008, max_beta=0.999):
        return cosine_ok(num_steps)
    assert_explained(ex.check_cosine_schedule, wrong, 4, "num_steps=100, s=0.02", "wrong values")


# -- the generic core -----------------------------------------------------------------------------
@pytest.fixture
def posterior_cases():
    return ex.image_cases(("x0", "x_t", "t", "schedule"))


def test_tuple_outputs_are_compared_element_by_element(posterior_cases, capsys):
    names = ("mean", "variance")
    assert ex.check("q_posterior", md.q_posterior, md.q_posterior, posterior_cases, "h", output_names=names)

    def wrong_variance(x0, x_t, t, s):
        mean, variance = md.q_posterior(x0, x_t, t, s)
        return mean, variance * 2
    with pytest.raises(ExerciseError, match="variance: wrong values"):
        ex.check("q_posterior", wrong_variance, md.q_posterior, posterior_cases, "h", output_names=names)
    with pytest.raises(ExerciseError, match=r"expected a tuple \(mean, variance\), got a Tensor"):
        ex.check("q_posterior", posterior_mean_ok, md.q_posterior, posterior_cases, "h", output_names=names)


def test_nan_is_reported_as_a_wrong_value():
    cases = [Case("x=[1, 2]", (torch.tensor([1.0, 2.0]),))]
    with pytest.raises(ExerciseError, match=r"1 of 2 entries differ.*at index \(1,\): expected 2, got nan"):
        ex.check("identity", lambda x: torch.tensor([1.0, float("nan")]), lambda x: x, cases, "h")


def test_a_function_that_overwrites_its_input_in_place_is_caught():
    """Issue 28 case 23: the caller's tensor changed is named, even when the returned values are right."""
    cases = [Case("x=[1, 2]", (torch.tensor([1.0, 2.0]),))]
    with pytest.raises(ExerciseError, match=r"double overwrote its input x in place on case 1 of 1: x=\[1, 2\]"):
        ex.check("double", lambda x: x.mul_(2), lambda x: 2 * x, cases, "h")
    x0_before = [c.args[0].clone() for c in ex.image_cases(("x0", "t", "schedule", "noise"))]

    def q_sample(x0, t, s, noise):
        abar = md.extract(s.alphas_cumprod, t, x0)
        return x0.mul_(abar.sqrt()).add_(noise * (1 - abar).sqrt())
    with pytest.raises(ExerciseError, match=r"q_sample overwrote its input x0 in place on case 1 of 5"):
        ex.check_q_sample(q_sample)
    assert all(torch.equal(a, c.args[0]) for a, c in zip(x0_before, ex.image_cases(("x0", "t", "schedule", "noise"))))


def test_bad_arguments_to_check():
    with pytest.raises(TypeError, match="q_step: the check expects your function; got int"):
        ex.check_q_step(3)
    with pytest.raises(ValueError, match="at least one Case"):
        ex.check("f", lambda: 0, lambda: 0, [], "h")


def test_exercise_error_is_an_assertion_error():
    assert issubclass(ExerciseError, AssertionError)


# -- notebook 04 --------------------------------------------------------------------------------
def _embedding(t, dim, max_period=10000, sines_first=False, no_log=False):
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32) / half
    freqs = max_period ** (-exponent) if no_log else torch.exp(-_math.log(max_period) * exponent)
    angles = t.float()[:, None] * freqs[None, :]
    parts = [torch.sin(angles), torch.cos(angles)] if sines_first else [torch.cos(angles), torch.sin(angles)]
    return torch.cat(parts, dim=1)


def test_check_timestep_embedding_accepts_right_and_rejects_wrong(capsys):
    assert mc.exercises.check_timestep_embedding(_embedding) is _embedding
    assert "correct on 5 test cases" in capsys.readouterr().out
    with pytest.raises(mc.exercises.ExerciseError,
                       match=r"(?s)timestep_embedding is not right yet.*expected.*got.*the sines come first"):
        mc.exercises.check_timestep_embedding(
            lambda t, dim, max_period=10000: _embedding(t, dim, max_period, sines_first=True))
    with pytest.raises(mc.exercises.ExerciseError, match=r"(?s)wrong shape: expected \(3, 2\), got \(3, 1\)"):
        mc.exercises.check_timestep_embedding(lambda t, dim, max_period=10000: _embedding(t, dim)[:, :1])


def test_check_timestep_embedding_not_attempted(capsys):
    def stub(t, dim, max_period=10000):
        raise NotImplementedError("Exercise 'timestep_embedding': replace this line with your implementation.")
    assert mc.exercises.check_timestep_embedding(stub) is md.timestep_embedding
    assert "not attempted yet" in capsys.readouterr().out


def _film(h, emb, layer, silu=True, one_plus=True):
    scale, shift = layer(_F.silu(emb) if silu else emb).chunk(2, dim=1)
    scale = (1 + scale) if one_plus else scale
    return h * scale[:, :, None, None] + shift[:, :, None, None]


def test_check_inject_time(capsys):
    assert mc.exercises.check_inject_time(_film) is _film
    for wrong in (lambda h, e, layer: _film(h, e, layer, silu=False),
                  lambda h, e, layer: _film(h, e, layer, one_plus=False)):
        with pytest.raises(mc.exercises.ExerciseError,
                           match=r"(?s)inject_time is not right yet, on case 1 of 3.*emb_layer=Linear\(8, 8\).*Hint"):
            mc.exercises.check_inject_time(wrong)
    before = torch.random.get_rng_state()
    mc.exercises.check_inject_time(_film)
    assert torch.equal(before, torch.random.get_rng_state()), "a check must not move the notebook's RNG"


# -- notebook 05 --------------------------------------------------------------------------------
def _loss(model, x0, t, noise, s, model_sees=None, target=None, reduce="mean"):
    x_t = md.q_sample(x0, t, s, noise)
    out = model(x_t if model_sees is None else model_sees(x0, x_t), t)
    err = (out - (noise if target is None else target(x0))) ** 2
    return err.mean() if reduce == "mean" else err.sum()


def test_check_training_loss(capsys):
    assert mc.exercises.check_training_loss(_loss) is _loss
    assert "correct on 2 test cases" in capsys.readouterr().out
    wrongs = [lambda m, x0, t, n, s: _loss(m, x0, t, n, s, model_sees=lambda x0, x_t: x0),
              lambda m, x0, t, n, s: _loss(m, x0, t, n, s, target=lambda x0: x0),
              lambda m, x0, t, n, s: _loss(m, x0, t, n, s, reduce="sum")]
    for wrong in wrongs:
        with pytest.raises(mc.exercises.ExerciseError,
                           match=r"(?s)training_loss is not right yet, on case 1 of 2: "
                                 r"model=a small stand-in for a U-Net.*expected.*got.*common mistake"):
            mc.exercises.check_training_loss(wrong)
    def stub(*args):
        raise NotImplementedError
    assert mc.exercises.check_training_loss(stub) is not stub
    assert "not attempted yet" in capsys.readouterr().out


# -- notebook 06 --------------------------------------------------------------------------------
def _ddpm(x_t, eps, t, s, noise, last_noise=False, variance=None):
    beta, alpha, abar = s.betas[t].float(), s.alphas[t].float(), s.alphas_cumprod[t].float()
    mean = (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()
    if t == 0 and not last_noise:
        return mean
    sigma2 = beta if variance is None else variance[t].float()
    return mean + sigma2.sqrt() * noise


def _ddim(x_t, eps, t, t_prev, s, eta, noise, prev_is_one=True):
    abar = s.alphas_cumprod.float()
    abar_t = abar[t]
    abar_prev = abar[t_prev] if t_prev >= 0 else (torch.tensor(1.0) if prev_is_one else abar[0])
    x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
    return abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps + sigma * noise


def test_check_ddpm_step(capsys):
    assert mc.exercises.check_ddpm_step(_ddpm) is _ddpm
    with pytest.raises(mc.exercises.ExerciseError,
                       match=r"(?s)ddpm_step is not right yet, on case 6 of 6: "
                             r".*t=0.*noise was added at position 0 too.*Algorithm 2"):
        mc.exercises.check_ddpm_step(lambda *a: _ddpm(*a, last_noise=True))
    with pytest.raises(mc.exercises.ExerciseError, match=r"(?s)ddpm_step is not right yet, on case 1 of 6"):
        mc.exercises.check_ddpm_step(lambda x_t, eps, t, s, n: _ddpm(x_t, eps, t, s, n, variance=s.alphas))


def test_check_ddim_step(capsys):
    assert mc.exercises.check_ddim_step(_ddim) is _ddim
    with pytest.raises(mc.exercises.ExerciseError,
                       match=r"(?s)ddim_step is not right yet, on case 2 of 6: .*t_prev=-1"
                             r".*you used s.alphas_cumprod\[0\], the ᾱ of step 1; "
                             r"position −1 is step 0, where ᾱ' = ᾱ_0 = 1"):
        mc.exercises.check_ddim_step(lambda *a: _ddim(*a, prev_is_one=False))
    with pytest.raises(mc.exercises.ExerciseError, match=r"(?s)ddim_step is not right yet, on case 3 of 6: .*eta=1.0"):
        mc.exercises.check_ddim_step(lambda x_t, eps, t, tp, s, eta, n: _ddim(x_t, eps, t, tp, s, 0.0, n))


def _ddim_loop(model, s, x_T, steps, eta=0.0, y=None, generator=None, spacing="trailing"):
    """A learner's loop: its own positions, minidiff's conversion to ε, the learner's own step."""
    T = s.num_steps
    if spacing == "trailing":
        positions = [round(T - k * T / steps) - 1 for k in range(steps)]
    else:
        positions = [k * (T // steps) for k in reversed(range(steps))]
    x = x_T
    for t, t_prev in zip(positions, positions[1:] + [-1]):
        eps, _ = md.samplers.predict_eps(model, x, t, s, y)
        x = _ddim(x, eps, t, t_prev, s, eta, torch.randn(x.shape, generator=generator))
    return x


def test_check_ddim_loop_passes_a_learners_loop_and_names_the_common_mistakes(capsys):
    assert ex.check_ddim_loop(_ddim_loop) is _ddim_loop
    assert capsys.readouterr().out == "✓ ddim_loop: correct on 5 test cases.\n"
    with pytest.raises(ExerciseError,
                       match=r'(?s)ddim_loop is not right yet, on case 1 of 5: .*the toy.*positions are "leading"'):
        ex.check_ddim_loop(lambda *a: _ddim_loop(*a, spacing="leading"))
    descriptions = " | ".join(m.description for m in ex.EXERCISES["ddim_loop"].mistakes)
    for named in ('positions are "leading"', "one step short of x_0", "raw output was used as eps",
                  "eta was not passed on", "the labels y were not passed"):
        assert named in descriptions


def test_check_ddim_loop_blocks_minidiffs_loop_falls_back_and_fails_when_graded(capsys, monkeypatch):
    def calls_minidiff(model, s, x_T, steps, eta=0.0, y=None, generator=None):
        return md.ddim_sample(model, s, x_T.shape, steps, eta, y=y, generator=generator, x_T=x_T)
    with pytest.raises(ExerciseError, match="ddim_loop calls minidiff's own md.ddim_sample"):
        ex.check_ddim_loop(calls_minidiff)

    def own_positions_from_minidiff(model, s, x_T, steps, eta=0.0, y=None, generator=None):
        md.samplers.ddim_timesteps(s.num_steps, steps)
    with pytest.raises(ExerciseError, match="calls minidiff's own md.samplers.ddim_timesteps"):
        ex.check_ddim_loop(own_positions_from_minidiff)

    def stub(*args, **kwargs):
        raise NotImplementedError
    fallback = ex.check_ddim_loop(stub)
    assert fallback is not stub and ex.check_ddim_loop(fallback) is fallback
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match="ddim_loop was not attempted.*scores 0"):
        ex.check_ddim_loop(stub)


def _dpm(x_t, x0, t, t_next, s, x0_last=None, t_last=None, lam_scale=0.5, swapped=False):
    """A learner's DPM-Solver++(2M) step: float32 coefficients, plain indexing."""
    if t_next == -1:
        return x0
    lam = lam_scale * s.log_snr.float()
    h = lam[t_next] - lam[t]
    sigma, alpha = s.sqrt_one_minus_alphas_cumprod.float(), s.sqrt_alphas_cumprod.float()
    d = x0
    if x0_last is not None:
        r = (lam[t] - lam[t_last]) / h
        new, old = (x0_last, x0) if swapped else (x0, x0_last)
        d = (1 + 1 / (2 * r)) * new - 1 / (2 * r) * old
    return sigma[t_next] / sigma[t] * x_t - alpha[t_next] * torch.expm1(-h) * d


def test_check_dpm_solver_step_passes_a_learners_step_and_names_the_common_mistakes(capsys):
    assert ex.check_dpm_solver_step(_dpm) is _dpm
    assert ex.check_dpm_solver_step(_dpm, hidden=True) is None
    assert capsys.readouterr().out == ("✓ dpm_solver_step: correct on 6 test cases.\n"
                                       "✓ dpm_solver_step: hidden tests pass (5 more cases).\n")
    with pytest.raises(ExerciseError, match=r"(?s)dpm_solver_step is not right yet, on case 1 of 6: .*t_next=949.*"
                                            r"λ was taken as the log SNR"):
        ex.check_dpm_solver_step(lambda *a: _dpm(*a, lam_scale=1.0))
    with pytest.raises(ExerciseError, match=r"(?s)on case 2 of 6: .*t_last=999.*weights of x0 and x0_last are swapped"):
        ex.check_dpm_solver_step(lambda *a: _dpm(*a, swapped=True))


@pytest.mark.parametrize("mistake", ex.nb06_sampling.DPM_SOLVER_STEP_MISTAKES, ids=lambda m: m.description[:30])
@pytest.mark.parametrize("hidden", [False, True])
def test_check_dpm_solver_step_recognises_each_mistake(mistake, hidden):
    wrong = lambda *a: mistake.wrong(*a)             # a learner's function, not minidiff's
    with pytest.raises(ExerciseError, match="dpm_solver_step is not right yet") as excinfo:
        ex.check_dpm_solver_step(wrong, hidden=hidden)
    assert f"This looks like a common mistake: {mistake.description}." in str(excinfo.value)


def test_check_dpm_solver_step_mistakes_are_named_in_the_notebooks_words():
    descriptions = " | ".join(m.description for m in ex.EXERCISES["dpm_solver_step"].mistakes)
    for named in ("½·s.log_snr", "σ ratio is inverted", "e^{h} − 1", "the factor is −h", "r is inverted",
                  "x0_last was ignored", "weights of x0 and x0_last are swapped", "s.sqrt_alphas_cumprod[t]",
                  "t_next = −1"):
        assert named in descriptions
    hints = ex.EXERCISES["dpm_solver_step"].hints
    assert len(hints) == 3 and "expm1" not in hints[0] and "log_snr" not in hints[0]


def test_check_dpm_solver_step_blocks_minidiffs_step_falls_back_and_fails_when_graded(capsys, monkeypatch):
    def calls_minidiff(x_t, x0, t, t_next, s, x0_last=None, t_last=None):
        return md.dpm_solver_step(x_t, x0, t, t_next, s, x0_last, t_last)
    with pytest.raises(ExerciseError, match="dpm_solver_step calls minidiff's own md.dpm_solver_step"):
        ex.check_dpm_solver_step(calls_minidiff)

    def stub(*args, **kwargs):
        raise NotImplementedError
    fallback = ex.check_dpm_solver_step(stub)
    assert fallback is not stub and "not attempted yet" in capsys.readouterr().out
    assert ex.check_dpm_solver_step(fallback) is fallback
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match="dpm_solver_step was not attempted.*scores 0"):
        ex.check_dpm_solver_step(stub)


# -- notebook 07 ---------------------------------------------------------------------------------
def _guided(model, x_t, t, y, null_label, w):
    out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_label)]))
    cond, uncond = out.chunk(2)
    return uncond + w * (cond - uncond)


def test_guided_prediction_accepts_one_batched_pass_and_refuses_two():
    assert ex.check_guided_prediction(_guided) is _guided

    def two_passes(model, x_t, t, y, null_label, w):
        return md.guidance.cfg_mix(model(x_t, t, y), model(x_t, t, torch.full_like(y, null_label)), w)
    with pytest.raises(ExerciseError, match=r"called the model 2 time\(s\).*once, on the batch of 4"):
        ex.check_guided_prediction(two_passes)

    def mixed_from_the_conditional(model, x_t, t, y, null_label, w):       # c + w(c − u): w = 0 is not unconditional
        cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]),
                             torch.cat([y, torch.full_like(y, null_label)])).chunk(2)
        return cond + w * (cond - uncond)
    with pytest.raises(ExerciseError,
                       match=r"(?s)not right yet.*wrong values.*you started from the conditional output"):
        ex.check_guided_prediction(mixed_from_the_conditional)


def test_drop_labels_check_passes_the_reference_and_names_each_mistake():
    def learners(y, p, null):
        return torch.where(torch.rand(y.shape) < p, torch.full_like(y, null), y)
    assert ex.check_drop_labels(learners) is learners
    reference = ex.use_reference("drop_labels")
    assert ex.check_drop_labels(reference) is reference

    def ours(y, p, null):                                                  # calls minidiff's: refused
        return md.guidance.drop_labels(y, p, null)
    with pytest.raises(ExerciseError, match="drop_labels calls minidiff's own md.drop_labels"):
        ex.check_drop_labels(ours)

    def whole_batch(y, p, null):
        return torch.full_like(y, null) if torch.rand(()) < p else y.clone()
    with pytest.raises(ExerciseError, match="whole batch was dropped at once"):
        ex.check_drop_labels(whole_batch)

    def in_place(y, p, null):
        y[torch.rand(y.shape) < p] = null
        return y
    with pytest.raises(ExerciseError, match=r"y itself was modified \(in place\)"):
        ex.check_drop_labels(in_place)

    def keep_probability(y, p, null):                                      # p read as the chance to keep
        return torch.where(torch.rand(y.shape) < p, y, torch.full_like(y, null))
    with pytest.raises(ExerciseError, match="p_uncond=0 keeps every label"):
        ex.check_drop_labels(keep_probability)


def test_exercise_checks_fall_back_to_the_reference_when_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError
    for check in (ex.check_guided_prediction, ex.check_drop_labels, ex.check_rescaled_guidance):
        assert check(stub) is not stub
    assert capsys.readouterr().out.count("not attempted yet") == 3


def test_rescaled_guidance_check_wants_each_images_own_spread():
    def per_image(cond, uncond, w, phi):
        x = uncond + w * (cond - uncond)
        sd = lambda z: z.flatten(1).std(dim=1).view(-1, *[1] * (z.ndim - 1))
        return phi * x * sd(cond) / sd(x) + (1 - phi) * x
    assert ex.check_rescaled_guidance(per_image) is per_image

    def whole_batch(cond, uncond, w, phi):
        x = uncond + w * (cond - uncond)
        return phi * x * cond.std() / x.std() + (1 - phi) * x
    with pytest.raises(ExerciseError, match="each image's own standard deviation"):
        ex.check_rescaled_guidance(whole_batch)


# -- notebook 08 ---------------------------------------------------------------------------------
def _reparameterise(mean, logvar, noise, sigma=lambda logvar: torch.exp(0.5 * logvar)):
    return mean + sigma(logvar) * noise


def test_reparameterise_check_passes_the_right_answer_and_explains_the_mistakes(capsys):
    assert ex.check_reparameterise(_reparameterise) is _reparameterise
    assert ex.check_reparameterise(md.nn.reparameterise) is md.nn.reparameterise
    assert capsys.readouterr().out.count("✓ reparameterise: correct on 5 test cases.") == 2
    variance_as_sigma = lambda m, lv, n: _reparameterise(m, lv, n, sigma=torch.exp)          # exp(logvar) = σ²
    no_noise = lambda m, lv, n: m.clone()
    own_noise = lambda m, lv, n: _reparameterise(m, lv, torch.randn_like(m))
    for wrong, named in ((variance_as_sigma, "exp(logvar) as σ"), (no_noise, "z = μ is the mean"),
                         (own_noise, "you drew your own noise")):            # named since issue 30 (item 12)
        with pytest.raises(ExerciseError, match=r"(?s)reparameterise is not right yet, on case 1 of 5: mean shape "
                                                r"\(2, 4, 8, 8\).*wrong values.*expected.*got") as excinfo:
            ex.check_reparameterise(wrong)
        assert named in str(excinfo.value) and ("common mistake" in str(excinfo.value)) == bool(named)


def test_reparameterise_check_wants_gradients_to_reach_mean_and_logvar():
    detached = lambda m, lv, n: _reparameterise(m, lv, n).detach()
    with pytest.raises(ExerciseError,
                       match=r"right values, but no gradient reaches mean or logvar.*\n  Hint: A sample"):
        ex.check_reparameterise(detached)
    sigma_detached = lambda m, lv, n: _reparameterise(m, lv, n, sigma=lambda lv: torch.exp(0.5 * lv.detach()))
    with pytest.raises(ExerciseError, match="no gradient reaches logvar:"):
        ex.check_reparameterise(sigma_detached)


def _kl(mean, logvar, reduce="sum", half=0.5, log_sign=-1, variance=torch.exp):
    per_element = half * (mean ** 2 + variance(logvar) - 1 + log_sign * logvar)
    return per_element.sum(dim=(1, 2, 3)) if reduce == "sum" else per_element.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("wrong, case, problem", [
    (lambda m, lv: _kl(m, lv, reduce="mean"), 2, "expected 16, got 0.5"),            # mean over C·H·W
    (lambda m, lv: _kl(m, lv, half=1.0), 2, "expected 16, got 32"),                  # the ½ forgotten
    (lambda m, lv: _kl(m, lv, log_sign=+1), 3, "got 35.09"),                         # + log σ²
    (lambda m, lv: _kl(m, lv, variance=lambda lv: torch.exp(0.5 * lv)), 3, "got -3.09"),   # σ for σ²
    (lambda m, lv: _kl(m, lv).sum(), 1, "wrong shape: expected (2,), got ()"),       # summed over the batch too
])
def test_kl_divergence_check_explains_the_typical_mistakes(wrong, case, problem):
    with pytest.raises(ExerciseError, match=f"kl_divergence is not right yet, on case {case} of 5") as excinfo:
        ex.check_kl_divergence(wrong)
    message = str(excinfo.value)
    assert problem in message and f"Hint: {first_hint('kl_divergence')}" in message, message


def test_kl_divergence_check_passes_the_right_answer(capsys):
    assert ex.check_kl_divergence(_kl) is _kl
    assert ex.check_kl_divergence(md.nn.kl_divergence) is md.nn.kl_divergence
    assert capsys.readouterr().out.count("✓ kl_divergence: correct on 5 test cases.") == 2


@pytest.mark.parametrize("check", [ex.check_reparameterise, ex.check_kl_divergence])
def test_autoencoder_checks_fall_back_to_the_reference_when_not_attempted(check, capsys, monkeypatch):
    def stub(*args):
        raise NotImplementedError
    returned = check(stub)
    assert returned is not stub and "not attempted yet" in capsys.readouterr().out
    assert check(returned) is returned                     # the fallback is right on every case
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match="was not attempted.*scores 0"):
        check(stub)


# -- issue 16: feedback first, tiered hints, mistakes, positions, hidden tests, delegation, later cells ---
def q_sample_alphas(x0, t, s, noise):                  # ᾱ_t mixed up with α_t
    a = coef(s.alphas, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def test_render_traceback_is_the_message_alone_and_ends_with_a_way_on():
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_q_sample(q_sample_alphas)
    lines = excinfo.value._render_traceback_()
    text = "\n".join(lines)
    assert lines[0].startswith("ExerciseError: q_sample is not right yet, on case 2 of 5")
    assert "Traceback" not in text and "File " not in text and "minidiff/course" not in text
    assert "mc.exercises.hint('q_sample', 2) shows the formula." in text
    assert lines[-1].strip() == "q_sample = mc.exercises.use_reference('q_sample')"
    assert "raise NotImplementedError" in text and excinfo.value.exercise == "q_sample"


def test_use_reference_gives_minidiffs_version(capsys):
    assert ex.use_reference("q_sample") is md.q_sample
    assert "using minidiff's reference implementation for now" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"name must be one of the exercises \[.*'q_sample'.*\]; got 'nope'"):
        ex.use_reference("nope")


def test_hints_come_in_tiers_for_every_exercise(capsys):
    names = {"q_step", "forward_chain", "alphas_cumprod", "q_sample", "posterior_mean", "convert_prediction",
             "cosine_schedule", "timestep_embedding",
             "inject_time", "training_loss", "ddpm_step", "ddim_step", "ddim_loop", "dpm_solver_step",
             "guided_prediction", "drop_labels",
             "rescaled_guidance", "reparameterise", "kl_divergence", "zero_terminal_snr", "receptive_field",
             "ema_update", "min_snr_loss", "conditional_flow", "euler_sample", "logit_normal", "reflow_loss"}
    assert set(ex.EXERCISES) == names == {n[len("check_"):] for n in dir(ex) if n.startswith("check_")} - {"properties"}
    for name in names:
        levels = [ex.hint(name, level) for level in (1, 2, 3)]
        assert len(set(levels)) == 3 and all(levels)
        assert ex.hint(name) == levels[0]
    assert ex.hint("q_sample", 2) == ex.HINT_Q_SAMPLE and "s.alphas_cumprod[t]" in ex.HINT_Q_SAMPLE
    assert "√" not in ex.hint("q_sample", 1)                 # the idea, not the formula
    out = capsys.readouterr().out
    assert ("q_sample, hint 2 of 3: t is a position (step t + 1): return √ᾱ·x0" in out
            and "mc.exercises.hint('q_sample', 3) says more." in out)
    with pytest.raises(ValueError, match=r"level must be one of \[1, 2, 3\].*got 4"):
        ex.hint("q_sample", 4)
    with pytest.raises(ValueError, match=r"name must be one of the exercises.*got 'q_smaple'"):
        ex.hint("q_smaple")


def test_error_shows_the_first_hint_only():
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_q_sample(q_sample_alphas)
    message = str(excinfo.value)
    assert f"Hint: {first_hint('q_sample')}" in message and ex.HINT_Q_SAMPLE not in message


def _mistake(check, wrong):
    with pytest.raises(ExerciseError) as excinfo:
        check(wrong)
    message = str(excinfo.value)
    assert "This looks like a common mistake: " in message, message
    return message.split("This looks like a common mistake: ")[1].split("\n")[0]


@pytest.mark.parametrize("check, wrong, named", [
    (ex.check_q_sample, q_sample_alphas, "you used s.alphas[t] (α, one step) where the jump needs ᾱ"),
    (ex.check_q_sample, lambda x0, t, s, n: q_sample_ok(x0, t - 1, s, n), "you indexed at t − 1"),
    (ex.check_q_sample, lambda x0, t, s, n: q_sample_ok(n, t, s, x0), "the coefficients are swapped"),
    (ex.check_q_sample,
     lambda x0, t, s, n: coef(s.alphas_cumprod, t, x0) * x0 + (1 - coef(s.alphas_cumprod, t, x0)) * n,
     "the square roots are missing"),
    (ex.check_q_step, lambda x, t, s, n: coef(s.alphas_cumprod, t, x).sqrt() * x + coef(s.betas, t, x).sqrt() * n,
     "you used s.alphas_cumprod[t]"),
    (ex.check_posterior_mean, lambda x0, x_t, t, s: posterior_mean_ok(x_t, x0, t, s), "the coefficients are swapped"),
    (ex.check_ddpm_step, lambda *a: _ddpm(*a, last_noise=True), "noise was added at position 0 too"),
    (ex.check_kl_divergence, lambda m, lv: _kl(m, lv, reduce="mean"), "you averaged over each image's latent elements"),
    (ex.check_kl_divergence, lambda m, lv: _kl(m, lv, half=1.0), "the ½ is missing"),
    (ex.check_kl_divergence, lambda m, lv: _kl(m, lv, variance=lambda lv: torch.exp(0.5 * lv)),
     "you used σ = exp(½·logvar) where the formula has σ² = exp(logvar)"),
    (ex.check_reparameterise, lambda m, lv, n: m + torch.exp(lv) * n, "you used exp(logvar) as σ"),
    (ex.check_reparameterise, lambda m, lv, n: m + lv * n, "you used logvar itself as σ"),
], ids=["alphas", "t_minus_1", "swapped", "no_roots", "q_step_abar", "posterior_swapped", "ddpm_noise_at_0",
        "kl_mean", "kl_no_half", "kl_sigma", "reparam_variance", "reparam_logvar"])
def test_common_mistakes_are_named(check, wrong, named):
    assert _mistake(check, wrong).startswith(named)


def test_every_listed_mistake_is_recognised_by_its_own_check(capsys):
    for name, exercise in ex.EXERCISES.items():
        check = getattr(ex, f"check_{name}")
        for mistake in exercise.mistakes:
            learner = lambda *a, _wrong=mistake.wrong, **k: _wrong(*a, **k)       # a learner's own function
            messages = []
            for hidden in (False, True):                # some show only in the hidden cases (B = W, say)
                try:
                    check(learner, hidden=hidden)
                except ExerciseError as error:
                    messages.append(str(error))
            assert any(mistake.description in m for m in messages), (name, mistake.description, messages)


def test_an_unknown_mistake_is_not_misnamed():
    def no_noise_drawn_own(x0, t, s, noise):
        return q_sample_ok(x0, t, s, torch.randn_like(x0))
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_q_sample(no_noise_drawn_own)
    assert "common mistake" not in str(excinfo.value)


def test_shape_errors_point_to_extract():
    def flat(x0, t, s, noise):                         # (B,) against (B, C, H, W)
        abar = s.alphas_cumprod[t].float()
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    with pytest.raises(ExerciseError, match=r"(?s)raised an error on case 2 of 5.*md.extract\(table, t, x\)"):
        ex.check_q_sample(flat)
    with pytest.raises(ExerciseError,
                       match=r"(?s)on case 1 of 4: x0 shape \((\d), 1, \d, \1\).*not shaped per image.*md.extract"):
        ex.check_q_sample(flat, hidden=True)           # drawn with B = W: it broadcasts silently, over the columns


def test_positions_are_given_as_image_t_channel_row_column():
    with pytest.raises(ExerciseError,
                       match=r"at image \d \(t = \d+, step \d+\), channel \d, row \d, column \d: expected"):
        ex.check_q_sample(q_sample_alphas)
    with pytest.raises(ExerciseError, match=r"at image \d, channel \d, row \d, column \d: expected"):
        ex.check_reparameterise(lambda m, lv, n: m + lv * n)              # no t: the image alone
    labels = ex.t_labels(torch.tensor([0, 10, 999]), 3)
    assert labels == ("t = 0, step 1", "t = 10, step 11", "t = 999, step 1000")
    assert ex.position((2, 0, 3, 5), labels) == "image 2 (t = 999, step 1000), channel 0, row 3, column 5"
    assert ex.position((1, 2, 0, 3, 5), ("t = 0", "t = 10")) == "entry 1 (t = 10), image 2, channel 0, row 3, column 5"
    assert ex.position((9,)) == "index (9,)"


def test_hidden_cases_run_more_cases_and_fail_when_not_attempted(capsys, monkeypatch):
    for check, (_, learner) in CHECKS.items():   # passing hidden tests return nothing: the call ends a graded
        assert check(learner, hidden=True) is None    # cell, and nbgrader reads a shown output as partial credit
    out = capsys.readouterr().out
    assert "✓ q_sample: hidden tests pass (4 more cases)." in out
    visible = {c.description for c in ex.image_cases(("x0", "t", "schedule", "noise"))}
    hidden = {c.description for c in ex.image_cases(("x0", "t", "schedule", "noise"), hidden=True)}
    assert hidden and not visible & hidden

    def stub(*args, **kwargs):
        raise NotImplementedError
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    with pytest.raises(ExerciseError, match="q_sample was not attempted.*the hidden tests score 0"):
        ex.check_q_sample(stub, hidden=True)
    with pytest.raises(ExerciseError, match="minidiff's own.*scores 0"):
        ex.check_q_sample(ex.use_reference("q_sample"), hidden=True)
    for check in (ex.check_drop_labels, ex.check_kl_divergence, ex.check_reparameterise, ex.check_ddpm_step):
        with pytest.raises(ExerciseError, match="was not attempted.*hidden tests score 0"):
            check(stub, hidden=True)


def test_hidden_checks_pass_learner_solutions(capsys):
    assert ex.check_ddpm_step(_ddpm, hidden=True) is None
    assert ex.check_ddim_step(_ddim, hidden=True) is None
    assert ex.check_ddim_loop(_ddim_loop, hidden=True) is None
    assert ex.check_kl_divergence(_kl, hidden=True) is None
    assert ex.check_reparameterise(_reparameterise, hidden=True) is None
    assert ex.check_guided_prediction(_guided, hidden=True) is None
    assert ex.check_timestep_embedding(_embedding, hidden=True) is None
    assert ex.check_inject_time(_film, hidden=True) is None
    assert ex.check_training_loss(_loss, hidden=True) is None
    assert capsys.readouterr().out.count("hidden tests pass") == 9


def test_calling_minidiffs_own_version_is_refused_and_then_restored():
    with pytest.raises(ExerciseError, match=r"q_sample calls minidiff's own md.q_sample: this exercise asks you "
                                            r"to write it yourself"):
        ex.check_q_sample(lambda x0, t, s, noise: md.q_sample(x0, t, s, noise))
    with pytest.raises(ExerciseError, match="calls minidiff's own md.q_sample"):
        ex.check_q_sample(lambda x0, t, s, noise: md.diffusion.q_sample(x0, t, s, noise))
    with pytest.raises(ExerciseError, match="calls minidiff's own md.NoiseSchedule.cosine"):
        ex.check_cosine_schedule(lambda n, s=0.008, max_beta=0.999: md.NoiseSchedule.cosine(n, s, max_beta).betas)
    with pytest.raises(ExerciseError, match="calls minidiff's own md.nn.autoencoder.kl_divergence"):
        ex.check_kl_divergence(lambda m, lv: md.nn.kl_divergence(m, lv))
    assert md.q_sample is md.diffusion.q_sample and md.q_sample.__name__ == "q_sample"
    assert isinstance(md.NoiseSchedule.__dict__["cosine"], classmethod)
    assert md.losses.q_sample is md.q_sample                                # internal bindings restored too
    assert ex.check_training_loss(_loss) is _loss                          # md.q_sample is allowed there


def test_calling_minidiffs_version_through_a_global_name_is_refused():
    namespace = {"md": md}
    exec("from minidiff import q_sample as jump\n"
         "def q_sample(x0, t, s, noise):\n"
         "    return jump(x0, t, s, noise)\n", namespace)
    with pytest.raises(ExerciseError, match="calls minidiff's own md.q_sample"):
        ex.check_q_sample(namespace["q_sample"])
    assert namespace["jump"] is md.q_sample


def test_failed_exercises_are_remembered_until_they_pass():
    ex._FAILED.clear()
    assert ex.later_cell_note() is None
    with pytest.raises(ExerciseError):
        ex.check_q_sample(q_sample_alphas)
    assert ex.later_cell_note() == "note: exercise 'q_sample' above is not right yet; this cell may depend on it."
    ex.check_q_sample(q_sample_ok)
    assert ex.later_cell_note() is None


def test_later_cells_get_a_note_under_ipython(capsys):
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    ex._FAILED.clear()
    shell = interactiveshell.InteractiveShell.instance()
    shell.colors = "nocolor"
    try:
        shell.user_ns.update(md=md, ex=ex, q_sample_alphas=q_sample_alphas, q_sample_ok=q_sample_ok)
        shell.run_cell("ex.check_q_sample(q_sample_alphas)")
        out, err = capsys.readouterr()
        assert "ExerciseError: q_sample is not right yet" in out and "Traceback" not in out
        assert "note:" not in out + err                                     # the check's own error: no note
        assert shell.custom_exceptions == (Exception,)
        shell.run_cell("raise RuntimeError('a later cell')")
        out, err = capsys.readouterr()
        assert "RuntimeError: a later cell" in out
        assert "note: exercise 'q_sample' above is not right yet; this cell may depend on it." in err
        ex._install_note_handler()                                          # idempotent
        shell.run_cell("ex.check_q_sample(q_sample_ok)")
        shell.run_cell("raise RuntimeError('fine now')")
        out, err = capsys.readouterr()
        assert "RuntimeError: fine now" in out and "note:" not in err
    finally:
        shell.set_custom_exc((), None)
        interactiveshell.InteractiveShell.clear_instance()
        ex._FAILED.clear()


def test_outside_ipython_recording_a_failure_installs_nothing():
    assert ex._ipython() is None                                             # no shell here
    with pytest.raises(ExerciseError):
        ex.check_q_sample(q_sample_alphas)                                  # records, installs nothing, no error
    assert "q_sample" in ex._FAILED
    ex._FAILED.clear()


# -- notebook 05: the EMA update -------------------------------------------------------------------
def _ema(ema_model, model, decay):
    """A learner's EMA update: parameters averaged in place without a graph, buffers copied."""
    with torch.no_grad():
        for p_ema, p in zip(ema_model.parameters(), model.parameters()):
            p_ema.mul_(decay).add_(p, alpha=1 - decay)
        for b_ema, b in zip(ema_model.buffers(), model.buffers()):
            b_ema.copy_(b)


def test_ema_update_check_passes_a_learner_and_the_trainers_update(capsys):
    assert ex.check_ema_update(_ema) is _ema
    assert ex.check_ema_update(_ema, hidden=True) is None
    lerp = lambda e, m, d: _ema(e, m, d)
    assert ex.check_ema_update(lerp) is lerp
    out = capsys.readouterr().out
    assert out.count("✓ ema_update: correct on 4 test cases.") == 2 and "hidden tests pass (2 more cases)" in out


@pytest.mark.parametrize("wrong, named", [
    (lambda e, m, d: _ema(e, m, 1 - d), "decay and 1 − decay are swapped"),
    (lambda e, m, d: _ema(m, e, d), "the wrong model was updated"),
    (lambda e, m, d: None, "the EMA's weights did not change"),
], ids=["swapped", "wrong_model", "rebound"])
def test_ema_update_mistakes_are_named(wrong, named):
    assert _mistake(ex.check_ema_update, wrong).startswith(named)


def test_ema_update_without_no_grad_is_refused_with_the_reason():
    def recorded(ema_model, model, decay):
        for p_ema, p in zip(ema_model.parameters(), model.parameters()):
            p_ema.mul_(decay).add_(p, alpha=1 - decay)          # p requires grad: p_ema joins its graph
        for b_ema, b in zip(ema_model.buffers(), model.buffers()):
            b_ema.copy_(b)
    with pytest.raises(ExerciseError, match=r"right numbers, but afterwards the EMA's parameters .* autograd graph.*"
                                            r"torch.no_grad\(\)"):
        ex.check_ema_update(recorded)


def test_ema_update_not_attempted_falls_back_and_fails_under_nbgrader(capsys, monkeypatch):
    def stub(ema_model, model, decay):
        raise NotImplementedError("Exercise 'ema_update': replace this line with your implementation.")
    fallback = ex.check_ema_update(stub)
    assert "ema_update: not attempted yet" in capsys.readouterr().out
    ema_model, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema_model.parameters(), model.parameters())]
    fallback(ema_model, model, 0.9)                       # the Trainer's own update, for the later cells
    for got, want in zip(ema_model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want.detach())
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match="ema_update was not attempted.*scores 0"):
        ex.check_ema_update(stub)
    with pytest.raises(ExerciseError, match="minidiff's own.*scores 0"):
        ex.check_ema_update(fallback)


def test_ema_update_may_not_call_the_trainers_own():
    with pytest.raises(ExerciseError, match=r"ema_update calls minidiff's own md.train.ema_update"):
        ex.check_ema_update(lambda e, m, d: md.train.ema_update(e, m, d))



# -- notebook 05: the min-SNR-weighted loss ----------------------------------------------------------
def _min_snr(model, x0, t, noise, s, gamma=5.0):
    """A learner's min-SNR loss: x_t, one error per image, SNR from ᾱ, weight min(1, γ/SNR), batch mean."""
    x_t = md.q_sample(x0, t, s, noise)
    error = (model(x_t, t) - noise).pow(2).flatten(1).mean(1)
    abar = s.alphas_cumprod[t]
    snr = (abar / (1 - abar)).to(error.dtype)
    return ((gamma / snr).clamp(max=1.0) * error).mean()


def _min_snr_float32(model, x0, t, noise, s, gamma=5.0):
    """Another: the table cast to float32 first, s.snr-free, torch.minimum with a ones tensor."""
    abar = md.extract(s.alphas_cumprod, t, x0)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    error = ((model(x_t, t) - noise) ** 2).mean(dim=(1, 2, 3))
    snr = s.alphas_cumprod[t].float() / (1 - s.alphas_cumprod[t].float())
    weight = torch.minimum(torch.ones_like(snr), gamma / snr)
    return (weight * error).sum() / len(error)


def test_min_snr_loss_reference_is_minidiffs_weighted_loss():
    from minidiff.course.exercises.nb05_training import _reference_min_snr_loss, _TinyDenoiser
    torch.manual_seed(0)
    model, x0, noise = _TinyDenoiser(1), torch.randn(6, 1, 5, 5), torch.randn(6, 1, 5, 5)
    t = torch.tensor([0, 3, 40, 130, 500, 999])
    s = md.NoiseSchedule.linear(1000)
    ours = _reference_min_snr_loss(model, x0, t, noise, s)
    assert torch.equal(ours, md.losses.diffusion_loss(model, x0, s, weighting="min_snr", t=t, noise=noise))
    errors = md.losses.per_sample_loss(model, x0, t, s, noise=noise)
    snr = s.snr(t)
    weight = torch.minimum(snr, torch.tensor(5.0, dtype=snr.dtype)) / snr        # Hang et al. 2023: min(SNR, γ)/SNR
    torch.testing.assert_close(ours, (weight.float() * errors).mean())
    assert torch.equal(weight[4:], torch.ones(2, dtype=weight.dtype))             # SNR < γ: the plain ε-loss
    zero = s.rescaled_zero_terminal_snr()                                         # SNR = 0 at position 999: weight 1
    assert torch.isfinite(_reference_min_snr_loss(model, x0, t, noise, zero))
    torch.testing.assert_close(_reference_min_snr_loss(model, x0[-1:], t[-1:], noise[-1:], zero),
                               md.losses.per_sample_loss(model, x0[-1:], t[-1:], zero, noise=noise[-1:]).mean())


def test_min_snr_loss_check_passes_learners(capsys):
    for learner in (_min_snr, _min_snr_float32):
        assert ex.check_min_snr_loss(learner) is learner
        assert ex.check_min_snr_loss(learner, hidden=True) is None
    out = capsys.readouterr().out
    assert (out.count("✓ min_snr_loss: correct on 5 test cases.") == 2
            and out.count("hidden tests pass (4 more cases)") == 2)


def _min_snr_wrong(weight=lambda snr, g: (g / snr).clamp(max=1.0), shift=0, abar_for_snr=False, pixels="mean",
                   batch="mean", after_mean=False):
    def wrong(model, x0, t, noise, s, gamma=5.0):
        x_t = md.q_sample(x0, t, s, noise)
        error = (model(x_t, t) - noise).pow(2).flatten(1)
        error = error.mean(1) if pixels == "mean" else error.sum(1)
        abar = s.alphas_cumprod[t + shift]
        w = weight((abar if abar_for_snr else abar / (1 - abar)).float(), gamma)
        if after_mean:
            return w.mean() * error.mean()
        return (w * error).mean() if batch == "mean" else (w * error).sum()
    return wrong


@pytest.mark.parametrize("wrong, named", [
    (_min_snr_wrong(weight=lambda snr, g: torch.clamp(snr, max=g)),
     "the weight is min(SNR, γ), which is min-SNR's weight for an x0-target"),
    (_min_snr_wrong(weight=lambda snr, g: g / snr), "the weight is γ/SNR without the clamp"),
    (_min_snr_wrong(weight=lambda snr, g: torch.maximum(torch.ones_like(snr), g / snr)), "max instead of min"),
    (_min_snr_wrong(after_mean=True), "the weight was applied after averaging over the batch"),
    (_min_snr_wrong(shift=1), "the SNR is that of position t + 1"),
    (_min_snr_wrong(shift=-1), "the SNR is that of position t − 1"),
    (_min_snr_wrong(abar_for_snr=True), "ᾱ was taken for the SNR"),
    (_min_snr_wrong(pixels="sum"), "each image's squared errors were summed over its pixels"),
    (_min_snr_wrong(batch="sum"), "the weighted errors were summed over the batch"),
    (_min_snr_wrong(weight=lambda snr, g: torch.minimum(snr, torch.full_like(snr, g)) / snr),
     "min(SNR, γ)/SNR is 0/0 = NaN"),
], ids=["x0_weight", "unclamped", "max", "after_batch_mean", "t_plus_1", "t_minus_1", "abar", "pixel_sum",
        "batch_sum", "nan"])
def test_min_snr_loss_mistakes_are_named(wrong, named):
    assert _mistake(ex.check_min_snr_loss, wrong).startswith(named)


def test_min_snr_loss_nan_at_zero_terminal_snr_is_pointed_at_that_case():
    wrong = _min_snr_wrong(weight=lambda snr, g: snr.clamp(max=g) / snr)
    with pytest.raises(ExerciseError, match=r"(?s)case 4 of 5: .*zero terminal SNR.*expected .*got nan.*"
                                            r"min\(1, γ/SNR\)"):
        ex.check_min_snr_loss(wrong)


def test_min_snr_loss_not_attempted_falls_back_and_fails_under_nbgrader(capsys, monkeypatch):
    def stub(model, x0, t, noise, s, gamma=5.0):
        raise NotImplementedError("Exercise 'min_snr_loss': replace this line with your implementation.")
    from minidiff.course.exercises.nb05_training import _reference_min_snr_loss
    fallback = ex.check_min_snr_loss(stub)
    assert fallback is _reference_min_snr_loss and "min_snr_loss: not attempted yet" in capsys.readouterr().out
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match="min_snr_loss was not attempted.*scores 0"):
        ex.check_min_snr_loss(stub)
    with pytest.raises(ExerciseError, match="minidiff's own.*scores 0"):
        ex.check_min_snr_loss(fallback)


@pytest.mark.parametrize("call", [
    lambda m, x0, t, n, s, g=5.0: md.losses.diffusion_loss(m, x0, s, weighting="min_snr", t=t, noise=n),
    lambda m, x0, t, n, s, g=5.0: md.losses.per_sample_loss(m, x0, t, s, weighting="min_snr", noise=n).mean(),
    lambda m, x0, t, n, s, g=5.0: (md.losses.loss_weight("min_snr", "eps", s.snr(t).float(), g)
                                   * _min_snr(m, x0, t, n, s, gamma=float("inf"))),
], ids=["diffusion_loss", "per_sample_loss", "loss_weight"])
def test_min_snr_loss_may_not_call_minidiffs_weighted_loss(call):
    with pytest.raises(ExerciseError,
                       match=r"min_snr_loss calls minidiff's own "
                             r"md\.(losses\.)?(diffusion_loss|per_sample_loss|loss_weight)"):
        ex.check_min_snr_loss(call)
    assert md.losses.per_sample_loss.__name__ == "per_sample_loss"                  # restored afterwards


def test_a_hint_as_a_cells_last_value_is_not_shown_twice(capsys):
    """Issue 31: ``mc.exercises.hint(...)`` printed its text and returned it, so a cell ending with it showed the hint
    twice. The returned text is still the hint; IPython's display of it is empty."""
    from IPython.core.interactiveshell import InteractiveShell
    text = ex.hint("q_sample", 2)
    capsys.readouterr()
    assert text == ex.HINT_Q_SAMPLE and isinstance(text, str)
    shell = InteractiveShell.instance()
    try:   # what Jupyter's kernel sends for a cell's value: the formatter's data, none at all here
        data, metadata = shell.display_formatter.format(text)
    finally:
        InteractiveShell.clear_instance()
    assert data == {} and capsys.readouterr().out == ""
    assert shell.display_formatter.format("a plain string")[0]["text/plain"] == "'a plain string'"


def test_no_message_names_a_checks_internal_stand_in():
    """A check's failure message describes its model argument; the stand-in models' class names (_TinyConditional,
    …) are internal, so each says in words what it is, and a private class without words loses its underscore."""
    import inspect

    from minidiff.course.exercises import core
    stand_ins = [cls for module in (mc.exercises.nb05_training, mc.exercises.nb06_sampling, mc.exercises.nb07_guidance)
                 for _, cls in inspect.getmembers(module, inspect.isclass)
                 if issubclass(cls, torch.nn.Module) and cls.__name__.startswith("_")
                 and cls.__module__ == module.__name__]
    assert len(stand_ins) >= 4
    for cls in stand_ins:
        assert cls.__name__.lstrip("_") not in cls.description and "stand-in" in cls.description, cls
    class _Hidden(torch.nn.Module):
        pass
    assert core.describe(model=_Hidden()) == "model=a small Hidden"
