"""Text conditioning: the tokenizer, the text encoder, cross-attention and the empty caption as the null
condition of classifier-free guidance."""
import math

import pytest
import torch

import minidiff as md
from minidiff.conditioning import NullCaption, check_labels, drop_labels, label_shape, labels_in_turn, null_like
from minidiff.nn.blocks import CrossAttention, multi_head_attention
from minidiff.nn.text import PAD, TextEncoder, Tokenizer

WORDS = ("a", "red", "blue", "circle", "square", "and")


def tiny_text_unet(**overrides) -> md.UNet:
    cfg = dict(image_size=8, in_channels=4, base_channels=16, channel_mults=(1, 2), blocks_per_level=1,
               attention_resolutions=(), head_dim=8, vocab_size=len(WORDS) + 1, max_tokens=6, text_dim=16,
               text_layers=1, cross_attention_resolutions=(4,))
    torch.manual_seed(0)
    config = md.UNetConfig(**(cfg | overrides))
    return md.nn.text_unet(config) if config.vocab_size is not None else md.UNet(config)


def test_tokenizer_round_trips_and_pads_with_zero():
    tok = Tokenizer(WORDS, max_tokens=6)
    ids = tok.encode(["a red circle", "a blue square and a", ""])
    assert ids.dtype == torch.long and ids.shape == (3, 6) and tok.vocab_size == 7
    assert ids[0].tolist() == [1, 2, 4, 0, 0, 0] and (ids[2] == PAD).all()
    assert tok.decode(ids) == ["a red circle", "a blue square and a", ""]


@pytest.mark.parametrize("captions, says", [
    (["a green circle"], "outside the vocabulary: ['green']"),
    (["a red circle and a blue square"], "more than max_tokens = 6"),
    ("a red circle", "wrap it"),
])
def test_tokenizer_errors_name_the_caption(captions, says):
    with pytest.raises((ValueError, TypeError), match=".*" + says.replace("[", r"\[").replace("]", r"\]")):
        Tokenizer(WORDS, max_tokens=6).encode(captions)


def test_multi_head_attention_is_softmax_of_scaled_dot_products():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    out = multi_head_attention(q, k, v, heads=2)
    for head in range(2):
        cols = slice(4 * head, 4 * head + 4)
        weights = torch.softmax(q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(4), dim=-1)
        torch.testing.assert_close(out[..., cols], weights @ v[..., cols])


def test_cross_attention_starts_as_identity_and_then_reads_the_context():
    torch.manual_seed(0)
    attn = CrossAttention(8, context_dim=6, head_dim=4)
    x, c1, c2 = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    torch.testing.assert_close(attn(x, c1), x)                   # W_o is zero-initialised
    torch.nn.init.normal_(attn.out.weight)
    assert not torch.allclose(attn(x, c1), attn(x, c2))
    # a context whose tokens are all equal gives every position the same attended vector: V of that token
    same = c1[:, :1].expand(-1, 3, -1)
    v = attn.kv(same).chunk(2, dim=-1)[1][:, 0]                  # (B, C)
    expected = x + (attn.out(v) + 0).view(2, 8, 1, 1)
    torch.testing.assert_close(attn(x, same), expected.expand_as(x), atol=1e-5, rtol=1e-5)


def test_text_encoder_sees_word_order():
    torch.manual_seed(0)
    enc = TextEncoder(vocab_size=7, max_tokens=6, dim=16, layers=2, head_dim=8)
    tok = Tokenizer(WORDS, 6)
    a, b = enc(tok.encode(["a red circle and a"])), enc(tok.encode(["a circle red and a"]))
    assert a.shape == (1, 6, 16) and not torch.allclose(a, b)


def test_text_unet_null_label_is_the_empty_caption_and_drops_whole_captions():
    model = tiny_text_unet()
    null = model.null_label
    assert null == NullCaption(6, 7) and label_shape(null, 3) == (3, 6)
    y = torch.randint(1, 7, (1000, 6))
    dropped = drop_labels(y, 0.3, null, torch.Generator().manual_seed(0))
    empty = (dropped == PAD).all(dim=1)
    assert torch.equal(dropped[~empty], y[~empty])               # a caption is kept whole or dropped whole
    assert 0.25 < empty.float().mean() < 0.35
    assert (null_like(y, null) == PAD).all()
    with pytest.raises(ValueError, match="labels_in_turn"):
        labels_in_turn(4, null)


def test_text_unet_output_depends_on_the_caption_and_none_means_empty():
    model = tiny_text_unet().eval()                              # eval: no dropout
    for p in model.parameters():                                 # leave zero-init: make every branch live
        torch.nn.init.normal_(p, std=0.1)
    tok = Tokenizer(WORDS, 6)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    red, blue = tok.encode(["a red circle"] * 2), tok.encode(["a blue circle"] * 2)
    with torch.no_grad():
        assert not torch.allclose(model(x, t, red), model(x, t, blue))
        torch.testing.assert_close(model(x, t), model(x, t, tok.encode(["", ""])))


def test_guided_sampling_of_a_text_unet_batches_caption_and_empty_caption():
    model = tiny_text_unet()
    model.target = "eps"
    s = md.make_schedule("linear", 100)
    y = Tokenizer(WORDS, 6).encode(["a red circle", "a blue square"])
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[2].clone()))
    md.ddim_sample(model, s, (2, 4, 8, 8), steps=2, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2 and all(torch.equal(ys, torch.cat([y, torch.zeros_like(y)])) for ys in seen)


@pytest.mark.parametrize("y, says", [
    (torch.zeros(2, 5, dtype=torch.long), r"shape \(2, 6\)"),
    (torch.zeros(2, 6), r"LongTensor"),
    (torch.full((2, 6), 7), r"token ids in \[0, 6\]"),
])
def test_captions_are_checked(y, says):
    with pytest.raises(ValueError, match=says):
        check_labels(y, NullCaption(6, 7), 2)


@pytest.mark.parametrize("overrides, says", [
    (dict(num_classes=10), "classes or on text, not both"),
    (dict(vocab_size=None), "need vocab_size"),
    (dict(max_tokens=0), "max_tokens must be an int >= 1"),
])
def test_text_config_errors(overrides, says):
    with pytest.raises(ValueError, match=says):
        tiny_text_unet(**overrides)


def test_text_unet_trains_with_the_diffusion_objective_and_round_trips_through_the_registry(tmp_path):
    model = tiny_text_unet()
    tok = Tokenizer(WORDS, 6)
    latents = torch.randn(16, 4, 8, 8)
    captions = tok.encode(["a red circle", "a blue square"] * 8)
    trainer = md.Trainer(model, latents, captions, md.TrainConfig(steps=3, batch_size=4, warmup_steps=1),
                         md.DiffusionConfig(p_uncond=0.2), md.RunConfig(device="cpu", log_every=1))
    trainer.train()
    path = trainer.save_model(tmp_path / "model.pt")
    loaded, *_ = md.load_trained(path)
    assert loaded.null_label == NullCaption(6, 7)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 40])
    torch.testing.assert_close(loaded(x, t, captions[:2]), trainer.ema(x, t, captions[:2]))
