"""Timestep embedding and U-Net: formulas, shapes, conditioning, initialisation and bad input."""
import math

import pytest
import torch

import minidiff as md
from minidiff.registry import config_dict


def test_embedding_formula():
    t = torch.tensor([0, 1, 10, 999])
    emb = md.timestep_embedding(t, 8, max_period=10000)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    for row, tv in zip(emb, t.tolist()):
        expected = [math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs]
        torch.testing.assert_close(row, torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_embedding_odd_dim_float_t_and_scalar():
    emb = md.timestep_embedding(torch.tensor([0.5, 2.25]), 7)
    assert emb.shape == (2, 7) and (emb[:, -1] == 0).all()
    assert md.timestep_embedding(3, 4).shape == (4,)
    # t = 0 is all cosines = 1 and sines = 0
    torch.testing.assert_close(md.timestep_embedding(0, 6), torch.tensor([1., 1, 1, 0, 0, 0]))


def test_embedding_separates_neighbouring_steps():
    emb = md.timestep_embedding(torch.arange(1000), 64)
    dists = (emb[1:] - emb[:-1]).norm(dim=1)
    assert dists.min() > 0.1


@pytest.mark.parametrize("dim", [1, 0, 2.5])
def test_embedding_bad_dim(dim):
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        md.timestep_embedding(torch.tensor([1]), dim)


def test_embedding_bad_t():
    with pytest.raises(ValueError, match="t must be a scalar or a 1-D tensor"):
        md.timestep_embedding(torch.zeros(2, 2), 8)
    with pytest.raises(TypeError, match="t must be an int, a float or a tensor; got str"):
        md.timestep_embedding("5", 8)


def small(**kw):
    cfg = dict(image_size=16, base_channels=16, channel_mults=(1, 2), blocks_per_level=1,
               attention_resolutions=(8,), dropout=0.0)
    cfg.update(kw)
    return md.UNet(md.UNetConfig(**cfg))


def test_unet_shapes_any_divisible_size():
    model = small()
    for hw in [(16, 16), (8, 24), (28, 28)]:
        x = torch.randn(3, 1, *hw)
        assert model(x, torch.tensor([0, 5, 999])).shape == x.shape


def test_unet_first_level_wider_than_base():
    """channel_mults need not start at 1: the output head takes the first level's width."""
    model = small(channel_mults=(2, 2, 4), attention_resolutions=(4,))
    x = torch.randn(2, 1, 16, 16)
    assert model(x, torch.tensor([1, 2])).shape == x.shape
    assert model.out[0].num_channels == 32


def test_unet_output_is_zero_at_init():
    """The output conv starts at zero, so the untrained model predicts ε̂ = 0 (loss starts at 1)."""
    model = small()
    assert model(torch.randn(2, 1, 16, 16), 3).abs().max() == 0


def perturbed(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_time_is_wired_in():
    model = perturbed(small())
    x = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(model(x, 10), model(x, 500))


def test_class_conditioning_and_null_class():
    model = perturbed(small(num_classes=10))
    x = torch.randn(2, 1, 16, 16)
    a, b = model(x, 10, torch.tensor([1, 1])), model(x, 10, torch.tensor([2, 2]))
    assert not torch.allclose(a, b)
    # y=None means "null class" (id num_classes) for every image
    torch.testing.assert_close(model(x, 10), model(x, 10, torch.tensor([10, 10])))


def test_attention_at_chosen_resolutions_only():
    model = small(attention_resolutions=(8,))
    attn = [n for n, m in model.named_modules() if isinstance(m, md.nn.Attention)]
    assert attn and all(not n.startswith("down.0") for n in attn)
    assert not [m for m in small(attention_resolutions=()).modules() if isinstance(m, md.nn.Attention)][1:]


def test_attention_is_softmax_qk_v_per_head_and_feeds_sdpa_unit_stride_heads(monkeypatch):
    torch.manual_seed(0)
    attn = md.nn.Attention(64, head_dim=16)
    torch.nn.init.normal_(attn.out.weight)           # zero-initialised: make the branch visible
    x = torch.randn(2, 64, 5, 5)
    tokens = attn.norm(x).flatten(2).transpose(1, 2)                                  # (B, HW, C)
    q, k, v = attn.qkv(tokens).reshape(2, 25, 3, 4, 16).permute(2, 0, 3, 1, 4)      # (B, heads, HW, d)
    heads = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1) @ v
    expected = x + attn.out(heads.transpose(1, 2).reshape(2, 25, 64)).transpose(1, 2).reshape(2, 64, 5, 5)
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v: seen.append(all(u.stride(-1) == 1 for u in (q, k, v))) or sdpa(q, k, v))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    assert seen == [True]            # a strided head dimension would send SDPA down its slow, unfused path


def test_seeds_layout_64_to_8():
    cfg = md.UNetConfig(image_size=64, in_channels=3, base_channels=32, channel_mults=(1, 2, 2, 2),
                        attention_resolutions=(16, 8))
    model = md.UNet(cfg)
    table = model.shape_table()
    assert "(1, 64, 8, 8)" in table and "(1, 3, 64, 64)" in table
    assert model(torch.randn(1, 3, 64, 64), 1).shape == (1, 3, 64, 64)


def test_shape_table_and_param_count():
    model = small()
    table = model.shape_table()
    assert f"{model.num_parameters():,d}" in table and "stem" in table and "out" in table
    assert config_dict(model.config)["channel_mults"] == [1, 2]


def test_bfloat16_forward():
    model = small().to(torch.bfloat16)
    assert model(torch.randn(2, 1, 16, 16, dtype=torch.bfloat16), 3).dtype == torch.bfloat16


def test_unet_bad_input():
    model = small()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, H, W\); got \(2, 3, 16, 16\)"):
        model(torch.randn(2, 3, 16, 16), 1)
    with pytest.raises(ValueError, match=r"H and W must be divisible by 2 .* got \(15, 16\)"):
        model(torch.randn(2, 1, 15, 16), 1)
    with pytest.raises(ValueError, match="y was given but this U-Net is unconditional"):
        model(torch.randn(2, 1, 16, 16), 1, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="t has 3 entries but x has batch size 2"):
        model(torch.randn(2, 1, 16, 16), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="image_size must be divisible by 2"):
        md.UNet(md.UNetConfig(image_size=30, channel_mults=(1, 2, 2)))
    cond = small(num_classes=10)
    with pytest.raises(ValueError, match=r"y must be a LongTensor of shape \(2,\)"):
        cond(torch.randn(2, 1, 16, 16), 1, torch.tensor([1.0, 2.0]))


def test_fresh_resblock_is_identity_or_its_skip():
    """Notebook 04: conv2 starts at zero, so a fresh block returns its input (or its 1×1 projection)."""
    x, e = torch.randn(2, 32, 7, 7), torch.randn(2, 128)
    block = md.nn.ResBlock(32, 32, emb_dim=128, dropout=0.1)
    assert torch.equal(block(x, e), x)
    block = md.nn.ResBlock(32, 64, emb_dim=128, dropout=0.1)
    assert torch.equal(block(x, e), block.skip(x))


def test_group_norm_removes_a_shift_shared_by_a_group():
    """Notebook 04's pitfall: GroupNorm subtracts each group's mean, so a per-channel shift added right before
    it is lost entirely where a group is one channel (32 channels) and only in part with 2 channels per group."""
    from minidiff.nn.blocks import group_norm
    torch.manual_seed(0)
    h32, b32 = torch.randn(4, 32, 7, 7), torch.randn(1, 32, 1, 1)
    torch.testing.assert_close(group_norm(32)(h32 + b32), group_norm(32)(h32), atol=1e-5, rtol=0)
    h64, b64 = torch.randn(4, 64, 7, 7), torch.randn(1, 64, 1, 1)
    kept = (group_norm(64)(h64 + b64) - group_norm(64)(h64)).norm() / b64.expand_as(h64).norm()
    assert 0.2 < kept < 0.9
    shared = b64.view(32, 2).mean(1, keepdim=True).expand(32, 2).reshape(1, 64, 1, 1)   # the same within each group
    torch.testing.assert_close(group_norm(64)(h64 + shared), group_norm(64)(h64), atol=1e-5, rtol=0)


def test_a_label_past_its_range_is_named_not_read_from_another_row():
    """Issue 28, cases 14 and 30: a label past num_classes (or negative) used to read another attribute's row
    of the embedding table, or fail with "index out of range in self"."""
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([3])
    digits = small(num_classes=10)
    for bad in (11, -1):
        with pytest.raises(ValueError, match=r"y must hold labels in \[0, 9\] \(or 10, the null label\)"):
            digits(x, t, torch.tensor([bad]))
    shapes = small(num_classes=(4, 8))
    with pytest.raises(ValueError, match=r"y\[:, k\] must hold labels in \[0, n_k\]"):
        shapes(x, t, torch.tensor([[5, 0]]))
