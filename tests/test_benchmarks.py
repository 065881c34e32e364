"""The benchmark scripts: each one parses its arguments, and quality_vs_time's recipe changes are checked."""
import subprocess
import sys
from pathlib import Path

import pytest

import minidiff as md
from minidiff.pretrained.recipes import RECIPES, make_trainer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import quality_vs_time  # noqa: E402


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_explains_itself(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_recipe_overrides_change_only_the_named_fields():
    base = RECIPES["mnist_cond"]
    recipe = quality_vs_time.override(base, ["objective.target='eps'", "model.channel_mults=(1, 2, 4)",
                                             "train.ema_decay=0.9995"])
    assert (recipe.objective.target, recipe.model.channel_mults, recipe.train.ema_decay) == ("eps", (1, 2, 4), 0.9995)
    assert recipe.train.lr == base.train.lr and base.objective.target == "v"


@pytest.mark.parametrize("setting", ["foo.bar=1", "model.widths=2", "model.dropout", "objective.target=v",
                                     "diffusion.target='v'"])
def test_recipe_override_names_the_bad_setting(setting):
    with pytest.raises(ValueError, match=f"--set must look like part.field=value.*{setting}"):
        quality_vs_time.override(RECIPES["mnist_cond"], [setting])


def test_budget_fits_the_step_count_after_the_warm_up():
    trainer = make_trainer(RECIPES["tiny"], md.RunConfig(device="cpu", progress=False))
    seconds = quality_vs_time.fit_steps_to_budget(trainer, budget=1e3)
    assert trainer.step == trainer.cfg.warmup_steps and seconds > 0
    assert trainer.cfg.steps > 1000 * trainer.cfg.warmup_steps / seconds / 2   # ~ budget × measured speed


def test_train_throughput_names_an_unknown_mode():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "train_throughput.py"), "--modes", "bf16,turbo"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--modes must be among" in done.stderr and "turbo" in done.stderr


def test_train_throughput_compares_with_the_peers_named_modes_and_with_all_of_them():
    import train_throughput
    rows = [{"model": "minidiff", "mode": "compile-cudagraphs NHWC", "img_per_s": 14.9},
            {"model": "minidiff", "mode": "fp32", "img_per_s": 5.1},
            {"model": "diffusers", "mode": "compile", "img_per_s": 6.9},
            {"model": "diffusers", "mode": "fp32", "img_per_s": 5.0},
            {"model": "diffusers", "mode": "compile-cudagraphs", "img_per_s": 14.0}]
    assert train_throughput.best(rows, "minidiff", train_throughput.MODES)["img_per_s"] == 14.9
    assert train_throughput.best(rows, "diffusers", train_throughput.NAMED_PEER_MODES)["mode"] == "compile"
    assert train_throughput.best(rows, "diffusers", train_throughput.MODES)["mode"] == "compile-cudagraphs"
    assert train_throughput.best(rows, "diffusers", ("cuda-graph",)) is None


def test_guidance_sweep_runs_every_variant_on_a_few_samples(capsys):
    import guidance_sweep
    results = guidance_sweep.main(["--scales", "1,3", "--n", "20", "--steps", "2", "--draws", "1", "--device", "cpu"])
    assert [(r["variant"], r["w"]) for r in results] == [(v, w) for v in guidance_sweep.VARIANTS for w in (1.0, 3.0)]
    assert all(0 <= r["accuracy"] <= 1 and r["diversity"] > 0 for r in results)
    out = capsys.readouterr().out
    assert "FD/floor" in out and ("best at" in out or "no setting" in out)


def test_guidance_sweep_interval_in_sigma_maps_to_timesteps():
    import guidance_sweep
    s = md.NoiseSchedule.linear(1000)
    low, high = guidance_sweep.sigma_interval(s, 0.28, 5.42)
    sigma = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt()
    assert sigma[low] > 0.28 >= sigma[low - 1] and sigma[high] <= 5.42 < sigma[high + 1]
    with pytest.raises(SystemExit):
        guidance_sweep.parse_args(["--variants", "plain,magic"])
