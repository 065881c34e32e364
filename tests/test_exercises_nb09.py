"""Notebook 09's exercise checks (flow matching): the conditional path and its velocity, the Euler sampler, the
logit-normal times and the reflow loss. Right answers in several equal forms pass the visible and hidden cases,
stubs fall back to the reference (and fail when graded), each listed mistake is named, minidiff's own answer is
refused, and the fields and models the checks pass say how to give them t."""
import runpy

import pytest
import torch
import torch.nn.functional as F

import minidiff as md
from minidiff.course import exercises as ex
from minidiff.course.exercises import ExerciseError
from minidiff.course.exercises import nb09_flow_matching as nb09

NAMES = ("conditional_flow", "euler_sample", "logit_normal", "reflow_loss")
COUNTS = {"conditional_flow": (5, 4), "euler_sample": (5, 4), "logit_normal": (4, 4), "reflow_loss": (4, 3)}


def check_of(name):
    return getattr(ex, f"check_{name}")


# -- learners' right answers, in different but equal forms -------------------------------------------------------
def per_sample(t, x):
    return t.view(-1, *[1] * (x.ndim - 1)) if isinstance(t, torch.Tensor) else t


def conditional_flow_hint(x0, eps, t):                  # hint 3, as written there
    tt = torch.as_tensor(t, dtype=x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
    return (1 - tt) * x0 + tt * eps, eps - x0


def conditional_flow_from_x0(x0, eps, t):               # x0 + t·(eps − x0): the same line, written from its start
    u = eps - x0
    return x0 + per_sample(t, x0) * u, u


def conditional_flow_lerp(x0, eps, t):
    return torch.lerp(x0, eps, per_sample(t, x0) if isinstance(t, torch.Tensor) else torch.tensor(t)), eps - x0


def euler_hint(velocity, x1, timesteps):
    x = x1
    for t, t_next in zip(timesteps[:-1], timesteps[1:]):
        u = velocity(x, torch.full((len(x),), float(t)))
        x = x + (t_next - t) * u
    return x


def euler_by_index(velocity, x1, timesteps):            # 0-dim tensors throughout, t expanded to (B,)
    x = x1.clone()
    for i in range(len(timesteps) - 1):
        t = timesteps[i]
        x = x + (timesteps[i + 1] - t) * velocity(x, t.expand(x.shape[0]))
    return x


def euler_with_diff(velocity, x1, timesteps):
    x = x1
    for t, dt in zip(timesteps[:-1], timesteps.diff()):
        x = x + dt * velocity(x, t.repeat(x.shape[0]))
    return x


def logit_normal_hint(n, mean=0.0, std=1.0, generator=None):
    z = torch.randn(n, generator=generator)
    return torch.sigmoid(mean + std * z)


def logit_normal_by_normal(n, mean=0.0, std=1.0, generator=None):     # N(mean, std²) drawn directly
    return torch.sigmoid(torch.normal(mean, std, (n,), generator=generator))


def logit_normal_written_out(n, mean=0.0, std=1.0, generator=None):
    return 1 / (1 + torch.exp(-(mean + std * torch.randn(n, generator=generator))))


def reflow_loss_hint(model, z0, z1, t):
    tt = t.view(-1, *[1] * (z0.ndim - 1))
    x_t = (1 - tt) * z0 + tt * z1
    return ((model(x_t, t) - (z1 - z0)) ** 2).mean()


def reflow_loss_mse(model, z0, z1, t):
    x_t = z0 + per_sample(t, z0) * (z1 - z0)
    return F.mse_loss(model(x_t, t), z1 - z0)


def reflow_loss_per_sample_then_batch(model, z0, z1, t):     # mean per sample, then over the batch: equal sizes
    x_t = torch.lerp(z0, z1, per_sample(t, z0))
    return (model(x_t, t) - (z1 - z0)).pow(2).flatten(1).mean(1).mean()


LEARNERS = {
    "conditional_flow": (conditional_flow_hint, conditional_flow_from_x0, conditional_flow_lerp),
    "euler_sample": (euler_hint, euler_by_index, euler_with_diff),
    "logit_normal": (logit_normal_hint, logit_normal_by_normal, logit_normal_written_out),
    "reflow_loss": (reflow_loss_hint, reflow_loss_mse, reflow_loss_per_sample_then_batch),
}


# -- right answers pass; the reference agrees with them everywhere -------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes_the_visible_cases(name, capsys):
    reference = ex.use_reference(name)
    assert reference is ex.EXERCISES[name].reference
    assert check_of(name)(reference) is reference
    visible = COUNTS[name][0]
    word = "checks" if name == "logit_normal" else "test cases"
    assert f"✓ {name}: {'passes all' if name == 'logit_normal' else 'correct on'} {visible} {word}." \
        in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_learners_equal_forms_pass_visible_and_hidden(name, capsys):
    for learner in LEARNERS[name]:
        assert check_of(name)(learner) is learner, learner.__name__
        assert check_of(name)(learner, hidden=True) is None, learner.__name__    # a graded cell shows no value
    out = capsys.readouterr().out
    assert out.count(f"✓ {name}: hidden tests pass ({COUNTS[name][1]} more cases).") == 3


def test_the_reference_answers_every_hidden_case_as_the_learners_do():
    """Graded, the reference itself is refused (it is no one's work), so compare it case by case directly."""
    for name, cases in [("conditional_flow", nb09._conditional_flow_cases(hidden=True)),
                        ("euler_sample", nb09._euler_cases(hidden=True)),
                        ("reflow_loss", nb09._reflow_cases(hidden=True))]:
        reference = ex.EXERCISES[name].reference
        for case in cases:
            want = reference(*case.args)
            got = LEARNERS[name][0](*case.args)
            assert ex.compare(want, got, 1e-5, 1e-4) is None, (name, case.description)
    for hidden in (False, True):
        for description, test in nb09._logit_normal_properties(hidden):
            assert test(nb09._reference_logit_normal) is None, (hidden, description)


def test_hidden_cases_differ_from_the_visible_ones():
    for builder in (nb09._conditional_flow_cases, nb09._euler_cases, nb09._reflow_cases):
        visible = {c.description for c in builder()}
        hidden = {c.description for c in builder(hidden=True)}
        assert hidden and visible and not visible & hidden, builder.__name__
    visible, hidden = nb09._logit_normal_properties(), nb09._logit_normal_properties(hidden=True)
    assert len(visible) == len(hidden) == 4


def test_the_cases_cover_what_the_brief_asks_for():
    """Points and images, t = 0 and t = 1 and a float t; uniform, shifted and one-step grids."""
    cases = nb09._conditional_flow_cases()
    ts = [c.args[2] for c in cases]
    assert any(isinstance(t, float) for t in ts)
    flat = torch.cat([t for t in ts if isinstance(t, torch.Tensor)])
    assert (flat == 0).any() and (flat == 1).any()
    assert {c.args[0].ndim for c in cases} == {2, 4}
    assert all(c.args[0].shape[0] != c.args[0].shape[-1] for c in cases)     # a flat t fails loudly
    first_hidden = nb09._conditional_flow_cases(hidden=True)[0].args[0]
    assert first_hidden.shape[0] == first_hidden.shape[-1]                    # …and here broadcasts silently
    grids = [c.args[2] for c in nb09._euler_cases()]
    assert any(torch.equal(g, torch.tensor([1.0, 0.0])) for g in grids)
    assert any(g.shape == (7,) and torch.allclose(g, md.flow.flow_timesteps(6, shift=3.0)) for g in grids)
    assert any(len(g) > 2 and not torch.allclose(g.diff(), g.diff()[0].expand(len(g) - 1)) for g in grids)
    assert all(g[0] == 1 and g[-1] == 0 and (g.diff() < 0).all() for g in grids)


# -- not attempted ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_stub_falls_back_to_the_reference_and_fails_when_graded(name, capsys, monkeypatch):
    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise '{name}': replace this line with your implementation.")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    returned = check_of(name)(stub)
    assert returned is ex.EXERCISES[name].reference
    assert f"{name}: not attempted yet — using minidiff's reference implementation" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match=f"{name} was not attempted.*the hidden tests score 0"):
        check_of(name)(stub, hidden=True)
    with pytest.raises(ExerciseError, match=f"{name}: the function checked is minidiff's own.*scores 0"):
        check_of(name)(returned, hidden=True)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match=f"{name} was not attempted.*this check scores 0"):
        check_of(name)(stub)


def test_the_graded_call_passes_right_answers_and_fails_blank_ones(capsys):
    graded = runpy.run_module("minidiff.course.grade")["hidden"]
    for name in NAMES:
        assert graded(name, LEARNERS[name][0]) is None
        assert f"✓ {name}: hidden tests pass" in capsys.readouterr().out

    def blank(*args, **kwargs):
        raise NotImplementedError
    with pytest.raises(AssertionError, match="euler_sample was not attempted"):
        graded("euler_sample", blank)


# -- common mistakes, named ---------------------------------------------------------------------------------------
MISTAKES = [(name, m) for name in NAMES for m in ex.EXERCISES[name].mistakes]


@pytest.mark.parametrize("name, mistake", MISTAKES, ids=[f"{n}: {m.description[:40]}" for n, m in MISTAKES])
def test_every_listed_mistake_is_named(name, mistake):
    learner = lambda *a, _wrong=mistake.wrong, **k: _wrong(*a, **k)      # a learner's own function
    messages = []
    for hidden in (False, True):
        with pytest.raises(ExerciseError) as excinfo:
            check_of(name)(learner, hidden=hidden)
        messages.append(str(excinfo.value))
    assert any(f"This looks like a common mistake: {mistake.description}." in m for m in messages), messages


def test_the_required_mistakes_are_listed():
    wanted = {"conditional_flow": ["u points the wrong way", "the ends are swapped", "u is the noise eps",
                                   "√(1 − t) and √t", "u was multiplied by t"],
              "euler_sample": ["the step has the wrong sign", "read at t_next", "the length 1/steps",
                               "stopped one step early"],
              "logit_normal": ["looks uniform", "sigmoid came before", "mean has the wrong sign",
                               "generator was not used"],
              "reflow_loss": ["the target has the wrong sign", "the ends are swapped", "summed",
                              "the target is z1", "one loss per sample"]}
    for name, fragments in wanted.items():
        descriptions = [m.description for m in ex.EXERCISES[name].mistakes]
        for fragment in fragments:
            assert any(fragment in d for d in descriptions), (name, fragment)


def _named(check, wrong, **kwargs):
    with pytest.raises(ExerciseError) as excinfo:
        check(wrong, **kwargs)
    message = str(excinfo.value)
    assert "This looks like a common mistake: " in message, message
    return message


def test_conditional_flow_mistakes_in_a_learners_words():
    def reversed_u(x0, eps, t):
        return conditional_flow_hint(x0, eps, t)[0], x0 - eps
    assert "u points the wrong way" in _named(ex.check_conditional_flow, reversed_u)

    def noise_at_zero(x0, eps, t):
        t = per_sample(t, x0)
        return t * x0 + (1 - t) * eps, eps - x0
    assert "the ends are swapped" in _named(ex.check_conditional_flow, noise_at_zero)

    def vp(x0, eps, t):
        t = torch.as_tensor(t).reshape(-1, *[1] * (x0.ndim - 1))
        return torch.sqrt(1 - t) * x0 + torch.sqrt(t) * eps, eps - x0
    assert "the variance-preserving mix" in _named(ex.check_conditional_flow, vp)


def test_a_flat_t_gets_shape_advice_not_extracts():
    def flat(x0, eps, t):
        return (1 - t) * x0 + t * eps, eps - x0
    with pytest.raises(ExerciseError, match=r"(?s)raised an error on case 1 of 5: x0 shape \(5, 2\).*"
                                            r"view it as \(B, 1\) with t\.view\(-1, \*\[1\] \* \(x0\.ndim - 1\)\)"
                                            ) as excinfo:
        ex.check_conditional_flow(flat)
    assert "md.extract" not in str(excinfo.value)
    message = _named(ex.check_conditional_flow, flat, hidden=True)          # B = W: silently over the columns
    b, _, _, w = nb09._conditional_flow_cases(hidden=True)[0].args[0].shape
    assert b == w and f"on case 1 of 4: x0 shape ({b}, 1, " in message
    assert "t of shape (B,) was not viewed per sample" in message

    def flat_images(model, z0, z1, t):
        return ((model((1 - t) * z0 + t * z1, t) - (z1 - z0)) ** 2).mean()
    with pytest.raises(ExerciseError, match=r"(?s)view it as \(B, 1, 1, 1\) with t\.view\(-1, \*\[1\] \* "
                                            r"\(z0\.ndim - 1\)\)"):
        ex.check_reflow_loss(flat_images)


def test_a_float_t_treated_as_a_tensor_is_explained():
    def always_view(x0, eps, t):
        t = t.view(-1, *[1] * (x0.ndim - 1))
        return (1 - t) * x0 + t * eps, eps - x0
    with pytest.raises(ExerciseError, match=r"(?s)case 4 of 5: .*t=0\.7.*AttributeError.*t can be a Python float"):
        ex.check_conditional_flow(always_view)


def test_euler_sample_with_a_float_t_is_told_how_to_make_a_batch_of_t():
    def float_t(velocity, x1, timesteps):
        x, times = x1, timesteps.tolist()
        for t, t_next in zip(times[:-1], times[1:]):
            x = x + (t_next - t) * velocity(x, t)
        return x
    with pytest.raises(ExerciseError, match=r"(?s)euler_sample raised an error on case 1 of 5.*TypeError: velocity"
                                            r"\(x, t\) takes t as a tensor of shape \(B,\) = \(6,\), one time per "
                                            r"sample; got the float 1\.0\. Make one from a single time: "
                                            r"torch\.full\(\(len\(x\),\), t\)"):
        ex.check_euler_sample(float_t)

    def zero_dim_t(velocity, x1, timesteps):
        x = x1
        for t, t_next in zip(timesteps[:-1], timesteps[1:]):
            x = x + (t_next - t) * velocity(x, t)
        return x
    with pytest.raises(ExerciseError, match=r"got shape \(\): make one from a single time with "
                                            r"torch\.full\(\(len\(x\),\), float\(t\)\)"):
        ex.check_euler_sample(zero_dim_t)


def test_reflow_loss_with_the_models_t_reshaped_is_told_to_pass_t_itself():
    def reshaped(model, z0, z1, t):
        t = t.view(-1, *[1] * (z0.ndim - 1))
        return ((model((1 - t) * z0 + t * z1, t) - (z1 - z0)) ** 2).mean()
    with pytest.raises(ExerciseError, match=r"model\(x_t, t\) takes t of shape \(B,\) = \(4,\), one time per sample; "
                                            r"got shape \(4, 1, 1, 1\): pass t itself"):
        ex.check_reflow_loss(reshaped)


def test_euler_sample_that_updates_x1_in_place_is_caught():
    def in_place(velocity, x1, timesteps):
        x = x1
        for t, t_next in zip(timesteps[:-1], timesteps[1:]):
            x += (t_next - t) * velocity(x, torch.full((len(x),), float(t)))
        return x
    with pytest.raises(ExerciseError, match=r"euler_sample overwrote its input x1 in place"):
        ex.check_euler_sample(in_place)


def test_constant_steps_pass_uniform_grids_and_fail_on_the_shifted_one():
    constant = nb09._euler_with(constant_dt=True)
    with pytest.raises(ExerciseError, match=r"(?s)on case 2 of 5: .*shifted \(shift=3\): unevenly spaced.*"
                                            r"every step has the length 1/steps"):
        ex.check_euler_sample(lambda *a: constant(*a))


def test_logit_normal_messages_give_the_numbers():
    with pytest.raises(ExerciseError, match=r"(?s)check 3 of 4.*with mean=0\.0, std=1\.0 \(40,000 times\), logit\(t\) "
                                            r"has mean -?0\.0\d\d and standard deviation 1\.8\d\d"):
        ex.check_logit_normal(lambda n, mean=0.0, std=1.0, generator=None: torch.rand(n, generator=generator))
    with pytest.raises(ExerciseError, match=r"(?s)check 1 of 4.*with n=1000: wrong shape: expected \(1000,\), one "
                                            r"time per sample, got \(1000, 1\)"):
        ex.check_logit_normal(lambda n, mean=0.0, std=1.0, generator=None:
                              torch.sigmoid(mean + std * torch.randn(n, 1, generator=generator)))
    with pytest.raises(ExerciseError, match=r"(?s)check 2 of 4.*times range from 0\.5\d* to 1\.\d*"):
        ex.check_logit_normal(lambda n, mean=0.0, std=1.0, generator=None:
                              torch.sigmoid(torch.randn(n, generator=generator)) * std + mean)
    with pytest.raises(ExerciseError, match=r"generators with different seeds gave the same times"):
        ex.check_logit_normal(lambda n, mean=0.0, std=1.0, generator=None:
                              torch.sigmoid(mean + std * torch.randn(n, generator=torch.Generator().manual_seed(0))))


def test_an_unknown_mistake_is_not_misnamed():
    def half_speed(x0, eps, t):
        return conditional_flow_hint(x0, eps, t)[0], 0.5 * (eps - x0)
    with pytest.raises(ExerciseError) as excinfo:
        ex.check_conditional_flow(half_speed)
    assert "common mistake" not in str(excinfo.value)


# -- minidiff's own answer is refused -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, cheat, named", [
    ("conditional_flow", lambda x0, eps, t: (md.flow.flow_interpolate(x0, eps, t), eps - x0),
     "md.flow.flow_interpolate"),
    ("conditional_flow", lambda x0, eps, t: (conditional_flow_hint(x0, eps, t)[0], md.flow.flow_target(x0, eps)),
     "md.flow.flow_target"),
    ("conditional_flow",                             # the line back from eps with u, at 1 − t, is x_t
     lambda x0, eps, t: (md.flow.x0_from_velocity(eps, eps - x0, 1 - torch.as_tensor(t)), eps - x0),
     "md.flow.x0_from_velocity"),
    ("euler_sample", lambda v, x1, ts: md.flow.flow_integrate(v, x1, len(ts) - 1), "md.flow.flow_integrate"),
    ("euler_sample", lambda v, x1, ts: [x1 := md.flow.euler_step(x1, v(x1, torch.full((len(x1),), float(t))), t, tn)
                                        for t, tn in zip(ts[:-1].tolist(), ts[1:].tolist())][-1],
     "md.flow.euler_step"),
    ("logit_normal", lambda n, mean=0.0, std=1.0, generator=None: md.flow.logit_normal_t(n, mean, std, generator),
     "md.flow.logit_normal_t"),
    ("reflow_loss", lambda model, z0, z1, t: md.flow.flow_loss(model, z0, z1, t), "md.flow.flow_loss"),
    ("reflow_loss", lambda model, z0, z1, t: md.FlowObjective(md.FlowConfig(p_uncond=0.0))(model, (z0,))[0],
     "md.FlowObjective.__call__"),
    ("reflow_loss", lambda model, z0, z1, t: ex.EXERCISES["reflow_loss"].reference(model, z0, z1, t),
     "the checks' own answer"),
], ids=["interpolate", "target", "x0_from_velocity", "integrate", "euler_step", "logit_normal_t", "flow_loss",
        "objective", "reference"])
def test_calling_minidiffs_own_answer_is_refused(name, cheat, named):
    with pytest.raises(ExerciseError, match=rf"{name} calls (minidiff's own )?{named}.*write it yourself"):
        check_of(name)(cheat)


# -- reflow_loss over the learner's own conditional_flow: graded on its own -----------------------------------------
def test_reflow_loss_over_a_wrong_conditional_flow_passes_and_names_it(capsys):
    scope = {"torch": torch}
    exec("def conditional_flow(x0, eps, t):\n"                           # u reversed
         "    tt = t.view(-1, *[1] * (x0.ndim - 1))\n"
         "    return (1 - tt) * x0 + tt * eps, x0 - eps\n"
         "def reflow_loss(model, z0, z1, t):\n"
         "    x_t, u = conditional_flow(z0, z1, t)\n"
         "    return ((model(x_t, t) - u) ** 2).mean()\n", scope)
    assert ex.check_reflow_loss(scope["reflow_loss"]) is scope["reflow_loss"]
    out = capsys.readouterr().out
    assert "✓ reflow_loss: correct on 4 test cases." in out
    assert "With your own conditional_flow it does not give these answers" in out


# -- hints ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_hints_come_in_three_tiers(name, capsys):
    levels = [ex.hint(name, k) for k in (1, 2, 3)]
    assert len(set(levels)) == 3 and all(levels)
    out = capsys.readouterr().out
    assert f"{name}, hint 1 of 3: " in out and f"mc.exercises.hint({name!r}, 2) says more." in out
    assert f"{name}, hint 3 of 3: " in out
    assert levels[1] == getattr(ex, f"HINT_{name.upper()}")


def test_the_third_hints_code_passes():
    """Hint 3 spells out nearly the code: the learners above written from it pass (see LEARNERS)."""
    assert "torch.full((len(x),), float(t))" in ex.hint("euler_sample", 3)
    assert "torch.sigmoid(mean + std * z)" in ex.hint("logit_normal", 3)
    assert ".reshape(-1, *[1] * (x0.ndim − 1))" in ex.hint("conditional_flow", 3)
