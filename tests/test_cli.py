"""`python -m minidiff`: help, recipe choices, train → checkpoint + model.pt, resume, sample → PNG grid."""
import os
import subprocess
import sys

import pytest
import torch

from minidiff.pretrained import recipes
from minidiff.__main__ import main
from minidiff.checkpoint import load_checkpoint
from minidiff.nn.unet import config_dict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def digits(monkeypatch):
    """The real MNIST digits when minidiff.data provides them, else 64 random 28×28 stand-ins."""
    try:
        from minidiff.data import mnist  # noqa: F401
    except ImportError:
        g = torch.Generator().manual_seed(0)
        fake = (torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g))
        monkeypatch.setitem(recipes.DATASETS, "mnist", lambda: fake)


def test_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--recipe" in out and "mnist_cond" in out and "tiny" in out


def test_unknown_recipe_lists_the_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--recipe", "imagenet"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "imagenet" in err and "mnist_cond" in err and "tiny" in err


def test_module_runs_as_a_script():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "minidiff", "--help"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0 and "sample" in done.stdout


def test_train_resume_and_sample(tmp_path, digits, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--device", "cpu"]) == 0
    assert "step 20" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "model.pt", "samples"}
    assert {p.name for p in (out / "samples").iterdir()} == {"step_0000010.png", "step_0000020.png"}
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 20 and state["config"]["model"] == config_dict(recipes.RECIPES["tiny"].model)

    assert main(["train", "--recipe", "tiny", "--out", str(out), "--device", "cpu", "--steps", "24",
                 "--resume", str(out / "checkpoint.pt")]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 24

    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "--n", "6", "--steps", "2", "--label", "3",
                 "--out", str(grid), "--device", "cpu"]) == 0
    assert grid.read_bytes().startswith(PNG_MAGIC)
    grid.unlink()
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "--n", "4", "--steps", "3", "--sampler", "dpm++",
                 "--guidance", "2", "--out", str(grid), "--device", "cpu"]) == 0
    assert grid.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(SystemExit, match="--label"):
        main(["sample", "--checkpoint", str(out / "model.pt"), "--label", "12", "--out", str(grid)])


def test_sample_from_the_shipped_model_by_name(tmp_path, monkeypatch, capsys):
    """`--checkpoint mnist_cond` samples the shipped v-model with its own target: digits of the asked
    classes, not noise. A manifest name that is no diffusion model is still read as a path."""
    import minidiff as md
    import minidiff.__main__ as cli
    drawn = []
    save_grid = cli.save_grid
    monkeypatch.setattr(cli, "save_grid", lambda images, path, nrow=None: drawn.append(images) or save_grid(images, path, nrow))
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", "mnist_cond", "--n", "20", "--steps", "10", "--sampler", "dpm++",
                 "--out", str(grid), "--device", "cpu"]) == 0
    assert "wrote 20 samples" in capsys.readouterr().out and grid.read_bytes().startswith(PNG_MAGIC)
    assert md.class_accuracy(drawn[0], torch.arange(20) % 10) >= 0.9
    with pytest.raises(FileNotFoundError, match="no checkpoint at classifier"):
        main(["sample", "--checkpoint", "classifier", "--out", str(grid), "--device", "cpu"])


def test_classifier_recipe_is_dispatched_to_metrics(monkeypatch, tmp_path, capsys):
    metrics = pytest.importorskip("minidiff.metrics")
    calls = []
    monkeypatch.setattr(metrics, "classifier_recipe", lambda out_dir=None, device=None: calls.append((out_dir, device))
                        or {"name": "classifier"})
    assert main(["train", "--recipe", "classifier", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert calls == [(str(tmp_path), "cpu")] and "classifier" in capsys.readouterr().out


def test_metrics_are_printed_after_training(monkeypatch, capsys):
    metrics = pytest.importorskip("minidiff.metrics")
    seen = {}

    def fake_evaluate(samples, labels=None):
        seen["shape"], seen["labels"] = tuple(samples.shape), labels.tolist()
        return {"fd": 12.5, "accuracy": 0.75}

    monkeypatch.setattr(metrics, "evaluate", fake_evaluate)
    from minidiff.__main__ import print_metrics
    from minidiff.train import RunConfig, TrainConfig, Trainer
    import minidiff as md
    cfg = md.UNetConfig(image_size=8, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                        attention_resolutions=(), num_classes=3, head_dim=8)
    trainer = Trainer(md.UNet(cfg), torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long),
                      TrainConfig(steps=1, batch_size=2), run=RunConfig(device="cpu", progress=False))
    print_metrics(trainer, 6, 2.0, 2)
    assert seen == {"shape": (6, 1, 8, 8), "labels": [0, 1, 2, 0, 1, 2]}
    assert "metrics: fd 12.5, accuracy 0.75" in capsys.readouterr().out
