"""`python -m minidiff`: help, recipe choices, train → checkpoint + model.pt, resume, sample → PNG grid,
and every user mistake answered by one line on stderr and exit code 2, never a traceback."""
import os
import subprocess
import sys

import pytest
import torch

from minidiff.__main__ import main
from minidiff.checkpoint import load_checkpoint
from minidiff.pretrained import recipes
from minidiff.pretrained.recipes import model_description

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
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "model.pt", "samples"}     # the lock is released
    assert {p.name for p in (out / "samples").iterdir()} == {"step_0000010.png", "step_0000020.png"}
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 20
    assert state["config"]["model"] == {**model_description(recipes.RECIPES["tiny"].model), "target": "eps"}

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
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out / "model.pt"), "--label", "12", "--out", str(grid)]) == 2
    assert "--label must be in [0, 10)" in capsys.readouterr().err


def test_sample_from_the_shipped_model_by_name(tmp_path, monkeypatch, capsys):
    """`--checkpoint mnist_cond` samples the shipped v-model with its own target: digits of the asked
    classes, not noise, even with a folder of that name in the working directory."""
    import minidiff as md
    import minidiff.__main__ as cli
    drawn = []
    save_grid = cli.save_grid
    monkeypatch.setattr(cli, "save_grid",
                        lambda images, path, nrow=None: drawn.append(images) or save_grid(images, path, nrow))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist_cond").mkdir()
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", "mnist_cond", "--n", "20", "--steps", "10", "--sampler", "dpm++",
                 "--out", str(grid), "--device", "cpu"]) == 0
    assert "wrote 20 samples" in capsys.readouterr().out and grid.read_bytes().startswith(PNG_MAGIC)
    assert md.class_accuracy(drawn[0], torch.arange(20) % 10) >= 0.9
    assert main(["sample", "--checkpoint", "classifier", "--out", str(grid), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert ("neither a file nor a shipped model (mnist_cond, mnist_eps, mnist_flow, shapes_cond, shapes_ldm)" in err
            and "Traceback" not in err)


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv``; it must exit 2 with one line on stderr and no traceback; returns the line."""
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["sample", "--checkpoint", "mnist_cnod"],
     "neither a file nor a shipped model (mnist_cond, mnist_eps, mnist_flow, shapes_cond, shapes_ldm)"),
    (["sample", "--checkpoint", "shapes_ldm"], "is a text-to-image model in an autoencoder's latent space"),
    (["sample", "--checkpoint", "mnist_cond", "--guidance", "nan"], "--guidance must be a finite number"),
    (["sample", "--checkpoint", "mnist_cond", "--guidance", "inf"], "--guidance must be a finite number"),
    (["sample", "--checkpoint", "mnist_cond", "--n", "0"], "--n must be >= 1"),
    (["sample", "--checkpoint", "mnist_cond", "--steps", "0"], "--steps must be >= 1"),
    (["sample", "--checkpoint", "mnist_cond", "--device", "tpu"], "--device must be cpu or cuda"),
    (["sample", "--checkpoint", "mnist_cond", "--out", "/proc/x.png"], "is not writable"),
    (["sample", "--checkpoint", "mnist_cond", "--out", "afile/x.png"], "afile is a file, not a folder"),
    (["train", "--recipe", "tiny", "--steps", "-3"], "--steps must be >= 1"),
    (["train", "--recipe", "tiny", "--max-seconds", "0"], "--max-seconds must be > 0"),
    (["train", "--recipe", "tiny", "--resume", "missing.pt"], "no such checkpoint file"),
    (["train", "--recipe", "tiny", "--out", "/proc/run"], "is not writable"),
])
def test_user_mistakes_get_one_clear_line(capsys, argv, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert says in user_error(capsys, argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert "no CUDA GPU" in user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--device", "cuda"])


def test_bad_files_get_one_clear_line(tmp_path, capsys):
    corrupt = tmp_path / "model.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    assert "corrupt" in user_error(capsys, ["sample", "--checkpoint", str(corrupt), "--out", str(tmp_path / "g.png")])
    assert "is a folder" in user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--out", str(tmp_path)])


def test_negative_guidance_is_allowed_and_explained(tmp_path, capsys):
    assert main(["sample", "--checkpoint", "mnist_cond", "--n", "2", "--steps", "2", "--guidance", "-1",
                 "--out", str(tmp_path / "g.png"), "--device", "cpu"]) == 0
    assert "anti-guidance" in capsys.readouterr().err


def test_resume_keeps_the_runs_own_settings_and_refuses_contradictions(tmp_path, digits, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--device", "cpu", "--steps", "10"]) == 0
    capsys.readouterr()
    checkpoint = str(out / "checkpoint.pt")
    assert "different model than the recipe" in user_error(
        capsys, ["train", "--recipe", "mnist_cond", "--out", str(out), "--resume", checkpoint, "--device", "cpu"])
    assert "nothing to train" in user_error(
        capsys, ["train", "--recipe", "tiny", "--out", str(out), "--resume", checkpoint, "--device", "cpu"])
    assert "at least the checkpoint's step 10" in user_error(
        capsys, ["train", "--recipe", "tiny", "--out", str(out), "--resume", checkpoint, "--steps", "5",
                 "--device", "cpu"])
    assert main(["train", "--recipe", "tiny", "--out", str(out), "--resume", checkpoint, "--steps", "12",
                 "--device", "cpu"]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 12 and state["config"]["train"]["steps"] == 12
    assert state["config"]["train"]["batch_size"] == recipes.RECIPES["tiny"].train.batch_size


def test_the_classifier_recipe_trains_through_the_same_trainer(tmp_path, digits, capsys, monkeypatch):
    """`train --recipe classifier`: the common Trainer (a short run here), then held-out accuracy and the floor."""
    from dataclasses import replace
    short = replace(recipes.RECIPES["classifier"], train=replace(recipes.RECIPES["classifier"].train, steps=30,
                                                                 warmup_steps=5), log_every=10)
    monkeypatch.setitem(recipes.RECIPES, "classifier", short)
    out = tmp_path / "clf"
    assert main(["train", "--recipe", "classifier", "--out", str(out), "--device", "cpu", "--ship",
                 str(tmp_path / "ship")]) == 0
    printed = capsys.readouterr().out
    assert "metrics: heldout_accuracy" in printed and "floor_fd" in printed
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["config"]["objective"]["kind"] == "classification" and state["config"]["model"]["kind"] == "classifier"
    from minidiff import pretrained
    entry = pretrained.read_manifest(tmp_path / "ship")["classifier"]
    assert entry["dtype"] == "float32" and entry["config"]["model"]["kind"] == "classifier"
