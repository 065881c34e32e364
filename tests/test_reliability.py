"""Issue 28, reliability round 3: the CLI, file and checkpoint cases of the fault battery.

Each test is one numbered case of the issue (the number is in its name): nothing a user had is
destroyed, a wrong result never looks like a right one, and a mistake is one line naming its cause.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import minidiff as md
from minidiff import checkpoint, pretrained
from minidiff.__main__ import main
from minidiff.checkpoint import CorruptCheckpointError, DiskFullError, load_checkpoint, save_checkpoint
from minidiff.images import save_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-step run of the tiny recipe: OUT/checkpoint.pt and OUT/model.pt."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--recipe", "tiny", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    return out


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv``; it must exit 2 with one line on stderr and no traceback; returns the line."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def grid(value: float = 0.5) -> torch.Tensor:
    return torch.full((4, 1, 8, 8), value)


# -- data lost -----------------------------------------------------------------------------------------
def test_case_01_a_finished_run_is_not_replaced_without_resume_or_overwrite(run, capsys):
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "model.pt")}
    err = user_error(capsys, ["train", "--recipe", "tiny", "--steps", "2", "--out", str(run), "--device", "cpu"])
    assert "already holds a run (checkpoint.pt, model.pt)" in err and "--resume" in err and "--overwrite" in err
    assert {name: (run / name).read_bytes() for name in before} == before


def test_case_01_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["train", "--recipe", "tiny", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert main(["train", "--recipe", "tiny", "--steps", "3", "--out", str(out), "--device", "cpu",
                 "--overwrite"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3


@pytest.mark.parametrize("target, says", [("model.pt", "is the --checkpoint file being read"),
                                          ("checkpoint.pt", "is an existing checkpoint")])
def test_case_02_03_the_grid_never_replaces_a_checkpoint(run, capsys, target, says):
    before = (run / target).read_bytes()
    err = user_error(capsys, ["sample", "--checkpoint", str(run / "model.pt"), "--out", str(run / target),
                              "--n", "2", "--steps", "2", "--device", "cpu"])
    assert says in err and "would overwrite it" in err
    assert (run / target).read_bytes() == before


def test_case_04_a_full_disk_leaves_the_old_grid_whole(tmp_path, monkeypatch):
    path = tmp_path / "grid.png"
    save_grid(grid(0.5), path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)           # the bytes are written, the disk cannot keep them
    with pytest.raises(DiskFullError, match="no space left on device while writing .*grid.png.* is intact"):
        save_grid(torch.rand(16, 3, 28, 28) * 2 - 1, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]        # no temporary file left


def test_case_04_text_files_are_replaced_atomically_too(tmp_path, monkeypatch):
    """Notebooks (nbgen), the lab settings and the book's provenance.json are written by atomic_write_text."""
    from minidiff.checkpoint import atomic_write_text
    path = tmp_path / "01_forward_process.ipynb"
    atomic_write_text(path, '{"cells": []}\n')
    assert path.read_bytes() == b'{"cells": []}\n' and path.stat().st_mode & 0o044 == 0o044 & ~current_umask()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(DiskFullError):
        atomic_write_text(path, '{"cells": [1]}\n')
    assert path.read_text() == '{"cells": []}\n' and [p.name for p in tmp_path.iterdir()] == [path.name]


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_case_05_a_state_that_cannot_be_loaded_is_refused_before_writing(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.ones(2)})
    before = path.read_bytes()
    with pytest.raises(TypeError,
                       match=r"state\['cfg'\] is a minidiff.train.TrainConfig.*dataclass.*nothing was written"):
        save_checkpoint(path, {"cfg": md.TrainConfig()})
    with pytest.raises(TypeError, match=r"state\['opt'\]\['fn'\] is a builtins.builtin_function_or_method"):
        save_checkpoint(path, {"opt": {"fn": print}})
    assert path.read_bytes() == before and torch.equal(load_checkpoint(path)["w"], torch.ones(2))
    save_checkpoint(path, {"dtype": torch.float16, "shape": torch.Size([2, 3]), "pairs": [(1, 0.5)], "none": None})
    assert load_checkpoint(path)["shape"] == torch.Size([2, 3])


# -- silently wrong ------------------------------------------------------------------------------------
def test_case_07_saturating_guidance_warns_and_says_why(tmp_path, capsys):
    out = tmp_path / "g.png"
    capsys.readouterr()
    assert "--guidance must be a finite number in [-1000, 1000]" in user_error(
        capsys, ["sample", "--checkpoint", "mnist_cond", "--guidance", "1e6", "--out", str(out), "--device", "cpu"])
    assert not out.exists()                                         # refused before sampling: nothing written
    assert main(["sample", "--checkpoint", "mnist_cond", "--n", "2", "--steps", "3", "--guidance", "1000",
                 "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "of the pixels lie beyond ±1.5" in err
    assert "--guidance 1000 is too strong for this model" in err and out.read_bytes().startswith(PNG_MAGIC)
    assert main(["sample", "--checkpoint", "mnist_cond", "--n", "2", "--steps", "3", "--guidance", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_case_08_a_jpg_name_gets_a_jpeg_and_an_unknown_extension_is_refused(tmp_path, capsys):
    for name in ("grid.jpg", "grid.JPEG"):
        assert save_grid(grid(), tmp_path / name).read_bytes().startswith(JPEG_MAGIC)
    assert save_grid(grid(), tmp_path / "grid.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match=r"path must end in .png, .jpg, .jpeg .*got '.*grid.gif'"):
        save_grid(grid(), tmp_path / "grid.gif")
    assert "--out must end in .png, .jpg, .jpeg" in user_error(
        capsys, ["sample", "--checkpoint", "mnist_cond", "--out", str(tmp_path / "grid.webp")])
    assert not (tmp_path / "grid.gif").exists() and not (tmp_path / "grid.webp").exists()


def test_case_09_a_file_without_its_checksum_is_refused(tmp_path, run, capsys):
    from minidiff.checkpoint import UnverifiedCheckpointError, UnverifiedCheckpointWarning
    path = tmp_path / "model.pt"
    raw = torch.load(run / "model.pt", weights_only=True)
    del raw["sha256"]
    first = next(k for k, v in raw["weights"].items() if v.is_floating_point())
    raw["weights"][first] = raw["weights"][first] * 2.0**64            # one weight, as in the issue
    torch.save(raw, path)
    with pytest.raises(UnverifiedCheckpointError, match="carries no SHA-256 of its contents.*it was not used"):
        load_checkpoint(path)
    with pytest.raises(UnverifiedCheckpointError):
        pretrained.load_trained(path)
    assert "carries no SHA-256" in user_error(capsys, ["sample", "--checkpoint", str(path), "--out",
                                                       str(tmp_path / "g.png"), "--device", "cpu"])
    with pytest.warns(UnverifiedCheckpointWarning, match="loaded unverified"):
        assert "sha256" not in load_checkpoint(path, allow_unverified=True)


def test_case_10_every_shipped_file_carries_its_own_checksum():
    for name, entry in pretrained.read_manifest().items():
        raw = torch.load(pretrained.CHECKPOINT_DIR / entry["file"], weights_only=True)
        assert raw.get("sha256") == checkpoint.state_digest(raw), name


def test_case_10_a_changed_weight_with_an_edited_manifest_is_still_refused(tmp_path):
    shutil.copy(pretrained.CHECKPOINT_DIR / "classifier.pt", tmp_path / "classifier.pt")
    raw = torch.load(tmp_path / "classifier.pt", weights_only=True)
    first = next(k for k, v in raw.items() if torch.is_tensor(v) and v.is_floating_point())
    raw[first][0] = -raw[first][0]                                     # the file's own checksum is now wrong
    torch.save(raw, tmp_path / "classifier.pt")
    manifest = pretrained.read_manifest()
    manifest["classifier"]["sha256"] = pretrained.sha256(tmp_path / "classifier.pt")   # and the manifest agrees
    (tmp_path / pretrained.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpointError, match="do not match the SHA-256 stored in it"):
        pretrained.load_state("classifier", root=tmp_path)


def test_case_13_load_classifier_refuses_a_diffusion_model():
    with pytest.raises(ValueError, match=r"must be a shipped classifier, one of \['classifier', 'shapes_classifier'\]; "
                                         r"got 'mnist_cond', which is a unet"):
        md.load_classifier(name="mnist_cond")


@pytest.mark.parametrize("images, says", [
    (torch.tensor([0.5, float("nan")]).repeat(2, 1, 4, 2),
     r"hold 16 NaN or inf value\(s\) of 32 \(in image\(s\) \[0, 1\]\)"),
    (torch.full((2, 1, 4, 4), 255.0), r"got values in \[255, 255\].*pixels in \[0, 255\]\? scale them"),
    (torch.linspace(-40, 40, 32).reshape(2, 1, 4, 4), r"got values in \[-40, 40\].*clamp them"),
])
def test_case_22_save_grid_refuses_nan_and_pixels_outside_the_model_range(tmp_path, images, says):
    path = tmp_path / "grid.png"
    save_grid(grid(), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=says + ".*nothing was written"):
        save_grid(images, path)
    assert path.read_bytes() == before
    save_grid(images.nan_to_num().clamp(-1, 1), path)                  # the same, in range, is drawn
    save_grid(torch.full((1, 1, 4, 4), 1.9), path)                     # a sample that overshoots a little, too


# -- unhelpful errors ----------------------------------------------------------------------------------
def test_case_24_negative_guidance_values_parse_as_numbers(capsys):
    from minidiff.__main__ import join_negative_numbers
    assert join_negative_numbers(["sample", "--guidance", "-1e6", "--n", "-3"]) == \
        ["sample", "--guidance=-1e6", "--n", "-3"]
    assert "--guidance must be a finite number" in user_error(
        capsys, ["sample", "--checkpoint", "mnist_cond", "--guidance", "-inf"])
    # parsed as -1e6 (then --n 0 is the first mistake found), not "expected one argument"
    assert "--n must be >= 1" in user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--guidance", "-1e6",
                                                     "--n", "0"])


def test_case_25_an_overflowing_guidance_is_named(capsys):
    err = user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--guidance", "1e308", "--device", "cpu"])
    assert "--guidance must be a finite number in [-1000, 1000]" in err and "got 1e+308" in err
    assert "model file" not in err


def test_case_25_nan_samples_under_guidance_name_the_guidance(tmp_path, capsys, monkeypatch):
    import minidiff.__main__ as cli
    monkeypatch.setattr(cli, "sample",
                        lambda sampler, model, s, shape, *args, **kwargs: torch.full(shape, float("nan")))
    err = user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--n", "2", "--guidance", "2",
                              "--out", str(tmp_path / "g.png"), "--device", "cpu"])
    assert "--guidance 2 is too strong for this model" in err and "model file" not in err
    assert "may hold non-finite weights" in user_error(
        capsys, ["sample", "--checkpoint", "mnist_cond", "--n", "2", "--out", str(tmp_path / "g.png"),
                 "--device", "cpu"])
    assert not (tmp_path / "g.png").exists()


def test_case_26_a_huge_seed_names_seed_and_its_range(capsys):
    err = user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--seed", "1180591620717411303424"])
    assert "--seed must be in [0, 2**64 - 1]" in err
    assert "--seed must be in" in user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--seed=-1"])


def test_case_27_resuming_from_a_model_file_says_so(run, capsys):
    err = user_error(capsys, ["train", "--recipe", "tiny", "--out", str(run), "--resume", str(run / "model.pt"),
                              "--device", "cpu"])
    assert "is a model file (EMA weights for sampling), not a training checkpoint" in err
    assert str(run / "checkpoint.pt") in err


def test_case_28_a_file_size_limit_is_named_and_the_old_files_stay(tmp_path):
    """``ulimit -f`` in a child process: both a torch checkpoint and a grid fail with the limit named, not
    "no space left on device", and the files that were there stay whole."""
    script = textwrap.dedent(f"""
        import resource, torch
        from pathlib import Path
        from minidiff.checkpoint import FileSizeLimitError, save_checkpoint
        from minidiff.images import save_grid
        folder = Path({str(tmp_path)!r})
        save_checkpoint(folder / "c.pt", {{"w": torch.zeros(4)}})
        save_grid(torch.zeros(1, 1, 4, 4), folder / "g.png")
        before = {{p.name: p.read_bytes() for p in folder.iterdir()}}
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        for save in (lambda: save_checkpoint(folder / "c.pt", {{"w": torch.zeros(100000)}}),
                     lambda: save_grid(torch.rand(64, 3, 28, 28) * 2 - 1, folder / "g.png")):
            try:
                save()
            except FileSizeLimitError as err:
                print(err)
        assert {{p.name: p.read_bytes() for p in folder.iterdir()}} == before
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout
    for line, name in zip(lines, ("c.pt", "g.png")):
        assert "the file-size limit of this process (ulimit -f: 20,000 bytes) stopped writing" in line
        assert name in line and "no space left" not in line


def test_case_04_28_the_cli_over_an_old_grid_under_a_file_size_limit(tmp_path):
    """The issue's scenario: `sample … --out grid.png` over an existing grid, and the write fails."""
    import resource
    path = tmp_path / "grid.png"
    save_grid(grid(), path)
    before = path.read_bytes()
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "minidiff", "sample", "--checkpoint", "mnist_cond", "--n", "100",
                           "--steps", "2", "--out", str(path), "--device", "cpu"], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: the file-size limit of this process (ulimit -f: 10,000 bytes) stopped "
                                   f"writing {path}; the file that was there before (if any) is intact: raise the "
                                   f"limit (ulimit -f unlimited) or save a smaller file")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["grid.png"]


@pytest.fixture
def broken_manifest(tmp_path, monkeypatch, request):
    """The package's checkpoints folder, copied, with its manifest truncated or deleted."""
    for entry in pretrained.read_manifest().values():
        os.symlink(pretrained.CHECKPOINT_DIR / entry["file"], tmp_path / entry["file"])
    text = (pretrained.CHECKPOINT_DIR / pretrained.MANIFEST).read_text()
    if request.param == "truncated":
        (tmp_path / pretrained.MANIFEST).write_text(text[: len(text) // 2])
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", tmp_path)
    return tmp_path / pretrained.MANIFEST


@pytest.mark.parametrize("broken_manifest", ["truncated", "deleted"], indirect=True)
def test_case_29_a_broken_manifest_is_named_and_own_runs_still_sample(broken_manifest, run, tmp_path, capsys):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        md.load_diffusion("mnist_cond")
    assert str(broken_manifest) in str(info.value) and "git checkout" in str(info.value)
    assert str(broken_manifest) in user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--out",
                                                       str(tmp_path / "g.png"), "--device", "cpu"])
    assert main(["sample", "--checkpoint", str(run / "model.pt"), "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "mine.png"), "--device", "cpu"]) == 0
    assert (tmp_path / "mine.png").read_bytes().startswith(PNG_MAGIC)


def test_case_35_a_huge_n_is_refused_before_allocating(capsys):
    err = user_error(capsys, ["sample", "--checkpoint", "mnist_cond", "--n", "1000000000000"])
    assert "--n must be <= 1,024 (one grid image" in err


def test_case_15_a_schedule_that_keeps_the_image_at_T_warns_when_sampled():
    """Issue 28, case 15: NoiseSchedule.linear(1) (ᾱ_T = 0.9999) sampled from pure noise says so; a schedule
    that ends near ᾱ_T = 0 does not warn, and a loop given its own x_T (an inversion's) does not either."""
    model = lambda x, t: torch.zeros_like(x)
    with pytest.warns(UserWarning, match=r"s ends at ᾱ_T = 0\.9999 \(T = 1\): x_T still holds 100% of the image"):
        md.ddpm_sample(model, md.NoiseSchedule.linear(1), (2, 1, 4, 4))
    with pytest.warns(UserWarning, match="ᾱ_T = 0.3636"):
        md.ddim_sample(model, md.NoiseSchedule.linear(100), (2, 1, 4, 4), steps=3)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        md.dpm_solver_sample(model, md.NoiseSchedule.linear(1000), (2, 1, 4, 4), steps=3)
        md.ddim_sample(model, md.NoiseSchedule.linear(100), (2, 1, 4, 4), steps=3, x_T=torch.zeros(2, 1, 4, 4))


def test_case_18_text_to_image_refuses_a_huge_guidance_scale():
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[-1000, 1000\].*got 1e\+308"):
        md.text_to_image(["a red circle"], guidance_scale=1e308, steps=2)
