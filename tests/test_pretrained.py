"""Shipped checkpoints: the manifest, SHA-256 checks before loading, weights-only loading, atomic saves."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import minidiff as md
from minidiff import pretrained
from minidiff.checkpoint import UnsafeCheckpointError

REQUIRED = {"file", "sha256", "recipe", "metrics", "created", "params", "dtype", "config"}


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    """The package's checkpoints folder, copied so that a test may damage it."""
    for name in (pretrained.MANIFEST, "classifier.pt"):
        shutil.copy(pretrained.CHECKPOINT_DIR / name, tmp_path / name)
    return tmp_path


def test_manifest_describes_the_shipped_classifier():
    entry = pretrained.read_manifest()["classifier"]
    assert REQUIRED <= set(entry)
    path = pretrained.CHECKPOINT_DIR / entry["file"]
    assert path.stat().st_size < 2 * 2**20
    assert pretrained.sha256(path) == entry["sha256"]
    assert entry["recipe"] == "classifier" and entry["metrics"]["heldout_accuracy"] >= 0.98
    text = (pretrained.CHECKPOINT_DIR / pretrained.MANIFEST).read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n", "sorted keys, indent 2"


def test_load_classifier_is_frozen_eval_mode_and_cached():
    model = pretrained.load_classifier()
    assert isinstance(model, md.DigitClassifier) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert pretrained.load_classifier("classifier", "cpu") is model                # name first, as every loader
    with pytest.raises(ValueError, match=r"name must be a shipped classifier.*got 'mnist_cond', which is a unet"):
        pretrained.load_classifier(name="mnist_cond")                                 # issue 28, case 13
    entry = pretrained.read_manifest()["classifier"]
    assert sum(v.numel() for v in model.state_dict().values() if v.is_floating_point()) == entry["params"]


def test_load_state_from_a_copy_and_from_a_patched_default(shipped_copy, monkeypatch):
    state, entry = pretrained.load_state("classifier", root=shipped_copy)
    assert entry == pretrained.read_manifest()["classifier"]
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", shipped_copy)
    torch.testing.assert_close(pretrained.load_state("classifier")[0], state)


def test_a_flipped_byte_is_caught_before_loading(shipped_copy):
    path = shipped_copy / "classifier.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(pretrained.ChecksumError, match="corrupt or was tampered with") as info:
        pretrained.load_state("classifier", root=shipped_copy)
    message = str(info.value)
    assert "git checkout minidiff/pretrained/checkpoints/classifier.pt" in message
    assert "python -m minidiff train --recipe classifier" in message
    assert isinstance(info.value, ValueError)


def test_a_missing_file_names_the_recipe_that_remakes_it(shipped_copy):
    (shipped_copy / "classifier.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"file is missing.*--recipe classifier"):
        pretrained.load_state("classifier", root=shipped_copy)


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match=r"one of \[.*'classifier'.*\]; got 'clasifier'"):
        pretrained.load_state("clasifier")


class Payload:
    """Any class that is not plain data: weights-only unpickling must refuse to rebuild it."""


def test_pickled_objects_are_refused_even_with_a_matching_checksum(tmp_path):
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, tmp_path / "evil.pt")
    manifest = {"evil": {"file": "evil.pt", "sha256": pretrained.sha256(tmp_path / "evil.pt"), "recipe": "evil"}}
    (tmp_path / pretrained.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        pretrained.load_state("evil", root=tmp_path)


def test_save_shipped_round_trip_in_float16_keeps_other_entries(shipped_copy):
    before = set(pretrained.read_manifest(shipped_copy))
    files_before = {p.name for p in shipped_copy.iterdir()}
    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7)}
    entry = pretrained.save_shipped("toy", state, recipe="tiny", metrics={"loss": 0.5}, config={"width": 4},
                                    dtype="float16", root=shipped_copy)
    assert REQUIRED <= set(entry) and entry["params"] == 12 and entry["dtype"] == "float16"
    loaded, again = pretrained.load_state("toy", root=shipped_copy)
    assert again == entry and loaded["w"].dtype == torch.float16 and loaded["steps"].dtype == torch.int64
    torch.testing.assert_close(loaded["w"].float(), state["w"], atol=2e-3, rtol=1e-3)
    assert "classifier" in before and set(pretrained.read_manifest(shipped_copy)) == before | {"toy"}
    assert {p.name for p in shipped_copy.iterdir()} == files_before | {"toy.pt"}
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float16'; got 'int8'"):
        pretrained.save_shipped("toy", state, "tiny", {}, {}, dtype="int8", root=shipped_copy)


def test_a_failed_manifest_write_leaves_the_old_manifest(shipped_copy, monkeypatch):
    before = (shipped_copy / pretrained.MANIFEST).read_text()

    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if Path(dst).name == pretrained.MANIFEST:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        pretrained.save_shipped("toy", {"w": torch.zeros(1)}, "tiny", {}, {}, root=shipped_copy)
    assert (shipped_copy / pretrained.MANIFEST).read_text() == before
    assert not [p for p in shipped_copy.iterdir() if p.name.endswith(".tmp")], "temporary files are removed"


def test_shipped_diffusion_model_loads_and_draws_digits():
    """The shipped class-conditional U-Net: verified, loaded, and its samples are the digits asked for."""
    import minidiff as md
    model, schedule, diffusion = md.load_diffusion("mnist_cond")
    assert model.config.num_classes == 10 and diffusion.p_uncond > 0 and not model.training
    # the shipped model is the mnist_cond recipe's: a v-model, and it knows it
    from minidiff.pretrained.recipes import RECIPES
    assert diffusion == RECIPES["mnist_cond"].objective and diffusion.target == "v" and model.target == "v"
    assert model.null_label == 10
    labels = torch.arange(10).repeat(2)
    with torch.no_grad():
        x = md.ddim_sample(model, schedule, (20, 1, 28, 28), steps=10, y=labels,       # no target named
                           generator=torch.Generator().manual_seed(0))
        dpm = md.dpm_solver_sample(model, schedule, (20, 1, 28, 28), steps=10, y=labels,
                                   generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="target='eps' contradicts the model, which predicts 'v'"):
            md.ddim_sample(model, schedule, (20, 1, 28, 28), steps=10, y=labels, target="eps")
        blind = lambda x, t, y=None: model(x, t, y)                      # a plain function knows no target
        wrong = md.ddim_sample(blind, schedule, (20, 1, 28, 28), steps=10, y=labels, target="eps",
                               generator=torch.Generator().manual_seed(0))
    assert md.class_accuracy(x.clamp(-1, 1), labels) >= 0.9
    assert md.class_accuracy(dpm.clamp(-1, 1), labels) >= 0.9
    # read as an ε-model, the same network draws no digits: that is why the model carries its target
    assert md.class_accuracy(wrong.clamp(-1, 1), labels) < 0.5


def test_load_diffusion_names_the_diffusion_models_when_given_another_kind():
    import minidiff as md
    with pytest.raises(ValueError,
                       match=r"shipped diffusion model, one of "
                             r"\['mnist_cond', 'mnist_eps', 'mnist_flow', 'shapes_cond', 'shapes_ldm'\]; "
                             r"got 'classifier'"):
        md.load_diffusion("classifier")
    with pytest.raises(ValueError, match="one of"):
        md.load_diffusion("mnist_cnod")


def test_the_shipped_model_samples_the_same_with_or_without_naming_its_target():
    """Issue 12's trap: leaving target= out used to read the v-model as an ε-model. Now the default is
    the model's own target, so the samples are the very same as with target="v"."""
    import minidiff as md
    model, schedule, _ = md.load_diffusion("mnist_cond")
    y = torch.arange(4)
    for sampler in (md.ddim_sample, md.dpm_solver_sample):
        draw = lambda **kw: sampler(model, schedule, (4, 1, 28, 28), steps=4, y=y,
                                    generator=torch.Generator().manual_seed(0), **kw)
        with torch.no_grad():
            assert torch.equal(draw(), draw(target="v"))


def test_the_shipped_ema_snapshots_load_by_name_and_differ():
    """mnist_ema (notebook 05): raw and EMA weights of one run, 30% of the way and at the end, in one file."""
    models, schedule, diffusion = pretrained.load_snapshots("mnist_ema")
    entry = pretrained.read_manifest()["mnist_ema"]
    assert list(models) == entry["config"]["snapshots"] and len(models) == 4
    assert [key.split()[0] for key in models] == ["raw", "ema", "raw", "ema"]
    assert (pretrained.CHECKPOINT_DIR / entry["file"]).stat().st_size < 2 * 2**20
    assert set(entry["metrics"]["by_snapshot"]) == set(models)
    for model in models.values():
        assert not model.training and model.target == diffusion.target == "v"
        assert not any(p.requires_grad for p in model.parameters())
    raw, ema = (dict(models[key].named_parameters()) for key in list(models)[:2])
    assert any(not torch.equal(raw[name], ema[name]) for name in raw)
    assert schedule.num_steps == 1000 and "mnist_ema" not in pretrained.diffusion_names()
    with pytest.raises(ValueError, match="set of training snapshots|load it with load_snapshots|one of"):
        pretrained.load_diffusion("mnist_ema")
    with pytest.raises(ValueError,
                       match=r"shipped file of training snapshots, one of \['mnist_ema'\]; got 'mnist_cond'"):
        pretrained.load_snapshots("mnist_cond")


@pytest.mark.skipif("mnist_eps" not in pretrained.read_manifest(),
                    reason="mnist_eps is not shipped yet (a GPU run of its recipe: python -m minidiff train "
                           "--recipe mnist_eps --cuda-graph --ship minidiff/pretrained/checkpoints)")
def test_the_shipped_eps_model_is_its_recipes_small_eps_model_and_draws_digits():
    """Notebook 06's ε-model: the mnist_eps recipe's network, under 1 MB, predicting ε, drawing the digits asked for."""
    from minidiff.pretrained.recipes import RECIPES, model_description
    model, schedule, diffusion = md.load_diffusion("mnist_eps")
    entry = pretrained.read_manifest()["mnist_eps"]
    assert diffusion == RECIPES["mnist_eps"].objective and model.target == "eps" and diffusion.target == "eps"
    described, stored = {**model_description(RECIPES["mnist_eps"].model), "target": "eps"}, entry["config"]["model"]
    # a field the U-Net gained after the file was made (time_scale) is absent there and takes its default
    assert {**stored, "config": {**described["config"], **stored["config"]}} == described
    assert (pretrained.CHECKPOINT_DIR / entry["file"]).stat().st_size < 2**20 and entry["dtype"] == "float16"
    assert {"DDPM 1000", "DDIM 50", "DPM-Solver++ 20"} <= set(entry["metrics"]["by_sampler"])
    labels = torch.arange(10).repeat(2)
    with torch.no_grad():
        x = md.ddim_sample(model, schedule, (20, 1, 28, 28), steps=20, y=labels,
                           generator=torch.Generator().manual_seed(0))
    assert md.class_accuracy(x.clamp(-1, 1), labels) >= 0.8


def test_all_shipped_files_together_stay_small():
    sizes = {name: (pretrained.CHECKPOINT_DIR / entry["file"]).stat().st_size
             for name, entry in pretrained.read_manifest().items()}
    assert sum(sizes.values()) < 30 * 2**20, sizes          # issue 34's budget for every shipped file together


def test_compare_samplers_scores_ddpm_against_the_deterministic_samplers(monkeypatch):
    """What a recipe with ``by_sampler`` writes into its manifest entry, and notebook 06 reads: FD, FD/floor and
    accuracy for DDPM 1000, DDIM 50 and DPM-Solver++ 20 under the metrics protocol."""
    from minidiff.pretrained import recipes
    calls = []

    def fake_protocol(model, schedule, sampler, steps, draws=1):
        calls.append((sampler, steps, draws))
        return {"fd": 2.0 * len(calls), "fd_ratio": 4.0 * len(calls), "accuracy": 0.9, "fd_floor": 0.5}
    monkeypatch.setattr(recipes.metrics, "evaluate_model", fake_protocol)
    rows = recipes.compare_samplers(None, None)
    assert calls == [("ddpm", 1000, 2), ("ddim", 50, 2), ("dpm++", 20, 2)]
    assert rows == {"DDPM 1000": {"fd": 2.0, "fd_ratio": 4.0, "accuracy": 0.9},
                    "DDIM 50": {"fd": 4.0, "fd_ratio": 8.0, "accuracy": 0.9},
                    "DPM-Solver++ 20": {"fd": 6.0, "fd_ratio": 12.0, "accuracy": 0.9}}
    assert recipes.RECIPES["mnist_eps"].sample.by_sampler and recipes.RECIPES["mnist_eps"].objective.target == "eps"
    assert set(md.pretrained.manifest()["mnist_cond"]["metrics"]["by_sampler"]) == set(recipes.BY_SAMPLER)
