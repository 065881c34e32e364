"""Issue 30's review of notebooks 01–08: every identity the fixed text states, and every exercise check
accepting each algebraically equal form a notebook teaches while naming the notebooks' own pitfalls."""
import math

import pytest
import torch

import minidiff as md
from minidiff.course import exercises as ex
from minidiff.course.exercises import ExerciseError


def coef(table, t, x, dtype=None):
    """table[t] shaped (B, 1, 1, 1), in ``dtype`` (x's by default), as a learner writes it."""
    return table[t].to(dtype or x.dtype).reshape(-1, *(1,) * (x.ndim - 1))


def mistake_named(check, fn, fragment):
    """``check(fn)`` fails, and its message names the common mistake containing ``fragment``."""
    with pytest.raises(ExerciseError) as excinfo:
        check(fn)
    message = str(excinfo.value)
    assert "This looks like a common mistake" in message and fragment in message, message
    return message


# -- item 11: posterior_mean accepts every form notebook 02 teaches ---------------------------------
def posterior_x0_form(x0, x_t, t, s):
    abar, prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    return prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - prev) / (1 - abar) * x_t


def posterior_one_division(x0, x_t, t, s):
    """The solution's form: both terms over one denominator."""
    abar, prev = coef(s.alphas_cumprod, t, x0), coef(s.alphas_cumprod_prev, t, x0)
    beta, alpha = coef(s.betas, t, x0), coef(s.alphas, t, x0)
    return (prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - prev) * x_t) / (1 - abar)


def posterior_eps_form(x0, x_t, t, s):
    """Notebook 02's ε-form, μ̃ = (x_t − β_t/√(1 − ᾱ_t)·ε)/√α_t, with ε recovered from x_0."""
    abar, beta, alpha = coef(s.alphas_cumprod, t, x0), coef(s.betas, t, x0), coef(s.alphas, t, x0)
    eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    return (x_t - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()


def posterior_precision_form(x0, x_t, t, s):
    """Completing the square's step 4: μ̃ = (√α_t/β_t·x_t + √ᾱ_{t−1}/(1 − ᾱ_{t−1})·x_0) / (1/β̃_t); at position 0
    (ᾱ_0 = 1) the precision is infinite and μ̃_1 = x_0."""
    prev, beta, alpha = coef(s.alphas_cumprod_prev, t, x0), coef(s.betas, t, x0), coef(s.alphas, t, x0)
    precision = alpha / beta + 1 / (1 - prev)
    mu = (alpha.sqrt() / beta * x_t + prev.sqrt() / (1 - prev) * x0) / precision
    return torch.where(prev == 1, x0, mu)


def posterior_float32_tables(x0, x_t, t, s):
    """The x_0 form with the float64 tables cast to float32 before any arithmetic."""
    f = lambda table: coef(table, t, x0, torch.float32)
    abar, prev, beta, alpha = f(s.alphas_cumprod), f(s.alphas_cumprod_prev), f(s.betas), f(s.alphas)
    return (prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - prev) * x_t) / (1 - abar)


@pytest.mark.parametrize("form", [posterior_x0_form, posterior_one_division, posterior_eps_form,
                                  posterior_precision_form, posterior_float32_tables])
@pytest.mark.parametrize("hidden", [False, True])
def test_posterior_mean_accepts_every_equal_form(form, hidden, capsys):
    assert ex.check_posterior_mean(form, hidden=hidden) is (None if hidden else form)
    assert "✓ posterior_mean" in capsys.readouterr().out


def test_posterior_mean_cases_draw_x_t_from_q_of_x_t_given_x0():
    for case in ex.nb02_closed_form._posterior_cases():
        x0, x_t, t, s = case.args
        eps = (x_t - coef(s.sqrt_alphas_cumprod, t, x0) * x0) / coef(s.sqrt_one_minus_alphas_cumprod, t, x0)
        assert eps.abs().max() < 6                  # a standard normal draw, not a huge ε
