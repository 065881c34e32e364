"""Latent diffusion end to end: the shipped autoencoder, the caption tokenizer, text_to_image."""
import shutil

import pytest
import torch

import minidiff as md
import minidiff.pretrained as pretrained
from minidiff import latent
from minidiff.pretrained.recipes import RECIPES


def test_caption_tokenizer_reads_every_scene_caption():
    tok = latent.caption_tokenizer()
    captions = [md.Scenes(300, 64, seed=5).caption(i) for i in range(300)]
    assert tok.decode(tok.encode(captions)) == captions
    assert tok.vocab_size == RECIPES["shapes_ldm"].model.vocab_size


def test_shipped_autoencoder_reconstructs_held_out_scenes_at_38_db():
    """Issue 15's CPU floor: the shipped shapes_vae (16-bit storage) reconstructs held-out shapes at >= 38 dB."""
    ae = md.load_autoencoder("shapes_vae")
    images = md.Scenes(24, 64, seed=1).batch(24)[0]
    z = latent.encode_images(ae, images)
    assert z.shape == (24, 4, 16, 16)
    assert md.metrics.psnr(latent.decode_latents(ae, z), images).mean() >= 38.0
    # the scale makes the latents of the training distribution about unit-variance
    assert 0.7 < z.std().item() < 1.4


@pytest.fixture
def shipped_tiny_ldm(tmp_path, monkeypatch):
    """A copy of the checkpoints folder with an untrained, tiny shapes_ldm in it."""
    root = tmp_path / "checkpoints"
    shutil.copytree(pretrained.CHECKPOINT_DIR, root)
    monkeypatch.setattr(pretrained, "CHECKPOINT_DIR", root)
    pretrained._shipped_ldm.cache_clear()
    cfg = md.UNetConfig(image_size=16, in_channels=4, base_channels=8, channel_mults=(1, 2), blocks_per_level=1,
                        attention_resolutions=(), head_dim=8, vocab_size=latent.caption_tokenizer().vocab_size,
                        max_tokens=16, text_dim=16, text_layers=1, cross_attention_resolutions=(8,))
    torch.manual_seed(0)
    model = md.nn.text_unet(cfg, target="v")
    config = {"model": md.registry.describe(model),
              "objective": md.DiffusionObjective(md.DiffusionConfig(target="v")).describe()}
    pretrained.save_shipped("shapes_ldm", model.state_dict(), "shapes_ldm", {"guidance_scale": 2.0}, config,
                            dtype="float16", root=root)
    yield
    pretrained._shipped_ldm.cache_clear()


def test_text_to_image_gives_images_of_the_prompts(shipped_tiny_ldm):
    images = md.text_to_image(["a large red circle at the top left", "a blue square and a small white cross"],
                              steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    again = md.text_to_image(["a large red circle at the top left", "a blue square and a small white cross"],
                             steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(images, again)


@pytest.mark.parametrize("prompts, error, says", [
    (["a large purple circle at the top left"], ValueError, "outside the vocabulary: \\['purple'\\]"),
    ("a red circle", TypeError, "wrap it"),
    ([], ValueError, "at least one caption"),
    ([123], TypeError, r"captions\[0\] must be a string"),                 # issue 28, case 33
    (["a red circle", None], TypeError, r"captions\[1\] must be a string"),
])
def test_text_to_image_refuses_bad_prompts(shipped_tiny_ldm, prompts, error, says):
    with pytest.raises(error, match=says):
        md.text_to_image(prompts, steps=1)
