"""The algorithm exercises of notebooks 03 and 04: rescaling a schedule to zero terminal SNR (Lin et al.
2024, Algorithm 1) and the receptive field of a chain of convolutions. Right answers pass, stubs fall
back to the reference (and fail under nbgrader), each listed mistake is named."""
import pytest
import torch

import minidiff as md
from minidiff.course import exercises as ex
from minidiff.course.exercises import ExerciseError


# -- learner-style correct solutions ------------------------------------------------------------
def rescale_ok(betas):
    """Algorithm 1 as a learner writes it, with a loop for the ratios."""
    sqrt_abar = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].item(), sqrt_abar[-1].item()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar ** 2
    new, previous = [], 1.0
    for value in abar.tolist():
        new.append(1 - value / previous)
        previous = value
    return torch.tensor(new, dtype=torch.float64)


def receptive_field_ok(layers):
    r, j, out = 1, 1, []
    for k, s in layers:
        r += (k - 1) * j
        j *= s
        out.append(r)
    return torch.tensor(out)


CHECKS = {ex.check_zero_terminal_snr: ("zero_terminal_snr", rescale_ok, 5),
          ex.check_receptive_field: ("receptive_field", receptive_field_ok, 5)}


@pytest.mark.parametrize("check", list(CHECKS), ids=[v[0] for v in CHECKS.values()])
def test_reference_and_learner_pass_visible_and_hidden(check, capsys):
    name, learner, count = CHECKS[check]
    reference = ex.EXERCISES[name].reference
    assert check(reference) is reference
    assert check(learner) is learner
    assert check(learner, hidden=True) is None     # passing hidden tests return nothing (a graded cell ends with them)
    out = capsys.readouterr().out
    assert f"✓ {name}: correct on {count} test cases." in out and f"✓ {name}: hidden tests pass" in out


@pytest.mark.parametrize("check", list(CHECKS), ids=[v[0] for v in CHECKS.values()])
def test_stub_falls_back_for_a_learner_and_fails_under_nbgrader(check, capsys, monkeypatch):
    name = CHECKS[check][0]

    def stub(*args, **kwargs):
        raise NotImplementedError(f"Exercise '{name}': replace this line with your implementation.")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    returned = check(stub)
    assert returned is ex.EXERCISES[name].reference and "not attempted yet" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match=f"{name} was not attempted.*hidden tests score 0"):
        check(stub, hidden=True)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseError, match=f"{name} was not attempted.*scores 0"):
        check(stub)


@pytest.mark.parametrize("check", list(CHECKS), ids=[v[0] for v in CHECKS.values()])
def test_every_mistake_is_named(check):
    name = CHECKS[check][0]
    for mistake in ex.EXERCISES[name].mistakes:
        with pytest.raises(ExerciseError) as excinfo:
            check(lambda *a, _wrong=mistake.wrong: _wrong(*a))
        assert f"This looks like a common mistake: {mistake.description}" in str(excinfo.value), mistake.description


def test_zero_terminal_snr_mistakes_in_a_learners_words():
    def rescaled_abar(betas):                       # ᾱ shifted and scaled instead of √ᾱ
        abar = torch.cumprod(1 - betas, 0)
        abar = (abar - abar[-1]) * abar[0] / (abar[0] - abar[-1])
        return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])

    def in_place(betas):                            # a[0] read after the in-place shift: no scaling at all
        a = torch.cumprod(1 - betas, 0).sqrt()
        a -= a[-1].clone()
        a *= a[0] / (a[0] - a[-1])
        abar = a ** 2
        return 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    for wrong, named in [(rescaled_abar, "ᾱ was shifted and scaled instead of √ᾱ"),
                         (in_place, "√ᾱ was shifted but not scaled")]:
        with pytest.raises(ExerciseError, match="on case 1 of 5: betas of the linear schedule, T=10") as excinfo:
            ex.check_zero_terminal_snr(wrong)
        assert f"common mistake: {named}" in str(excinfo.value)


def test_zero_terminal_snr_blocks_minidiffs_own_version():
    with pytest.raises(ExerciseError, match="calls minidiff's own"):
        ex.check_zero_terminal_snr(lambda betas: md.schedules.rescale_zero_terminal_snr(betas))
    with pytest.raises(ExerciseError, match="calls minidiff's own"):
        ex.check_zero_terminal_snr(lambda betas: md.NoiseSchedule(betas).rescaled_zero_terminal_snr().betas)
    assert md.NoiseSchedule.linear(10).rescaled_zero_terminal_snr().zero_terminal_snr      # restored afterwards


def test_receptive_field_reference_and_its_errors():
    assert md.nn.receptive_field([(3, 1)] * 4).tolist() == [3, 5, 7, 9]
    assert md.nn.receptive_field([(3, 1), (3, 2), (3, 1), (3, 2), (3, 1)]).tolist() == [3, 5, 9, 13, 21]
    assert md.nn.receptive_field([]).tolist() == []
    with pytest.raises(ValueError,
                       match=r"layers\[1\] must be a pair \(kernel_size, stride\) of ints >= 1; got \(3, 0\)"):
        md.nn.receptive_field([(3, 1), (3, 0)])


def test_receptive_field_matches_the_gradient_of_a_real_conv_chain():
    """The formula against the measured field: the input pixels that reach one output pixel."""
    layers = [(3, 1), (3, 2), (5, 1), (3, 2), (3, 1)]
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(1, 1, k, stride=s, padding=k // 2) for k, s in layers]
    net = torch.nn.Sequential(*[m for c in convs for m in (c, torch.nn.Tanh())])
    x = torch.randn(1, 1, 96, 96, requires_grad=True)
    out = net(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = (x.grad[0, 0].abs().sum(1) > 0).sum().item()
    assert rows == md.nn.receptive_field(layers)[-1].item() == 25
