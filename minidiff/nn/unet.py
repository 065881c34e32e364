r"""The denoiser: a U-Net that maps a noisy image $x_t$, its timestep (minidiff's position $t - 1$ of
step $t$) and an optional class $y$ to a prediction of the same shape (ε, x_0 or v, whichever it was
trained on).

    x_t ─ stem ─┬─ level 0 ── level 1 ── … ── middle ── … ── level 1 ── level 0 ─┬─ out ─ ε̂
                │  (ResBlock [+ attention]) × blocks, then downsample   ↑ skips   │
    t ─ sinusoids ─ MLP ─┐                                                         │
    y ─ embedding ───────┴─ emb: added as a scale and shift in *every* ResBlock ───┘

Text-conditional (notebook 08, ``vocab_size`` set): y is a caption's token ids; a text encoder, plugged
in from outside (``text_encoder=``; ``minidiff.nn.text.text_unet`` builds the pair), turns it into a
context c (L tokens × ``text_dim``), which the blocks at ``cross_attention_resolutions`` attend to
(cross-attention), and whose mean joins the embedding. This file knows only that interface: ids in,
(B, L, ``text_dim``) out, so chapter 04's network does not import chapter 08's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..conditioning import Null, NullCaption, Target, check_labels, check_target
from .blocks import Attention, CrossAttention, Downsample, Pooled, ResBlock, Upsample, group_norm, zero_init
from .embedding import timestep_embedding


@dataclass
class UNetConfig:
    """Everything that defines a U-Net. ``attention_resolutions`` are feature-map sizes (e.g. (16, 8))."""
    image_size: int = 28
    in_channels: int = 1
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 2
    attention_resolutions: tuple[int, ...] = (14, 7)
    dropout: float = 0.1
    # Class-conditional when set: an int n (labels y of shape (B,), id n means "no label"), or one count
    # per attribute, e.g. (4, 8) for shape and colour (labels (B, 2); attribute k's null label is n_k).
    num_classes: Union[int, tuple[int, ...], None] = None
    head_dim: int = 32
    # Text-conditional when set: y holds captions as ids (B, max_tokens) of a vocabulary of vocab_size
    # (0 = padding; the empty caption is the null condition), read by a TextEncoder of text_layers layers.
    vocab_size: Optional[int] = None
    max_tokens: int = 16
    text_dim: int = 64
    text_layers: int = 2
    cross_attention_resolutions: tuple[int, ...] = ()
    # t is multiplied by this before the sinusoidal embedding: 1 for positions 0 … T−1, 1000 for a flow model's
    # t ∈ [0, 1] (as SD3 feeds 1000·t), so both use the same range of frequencies.
    time_scale: float = 1.0


class Block(nn.Module):
    """One ResBlock, followed by self-attention and cross-attention to the caption where chosen."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, cfg: UNetConfig, attend: bool, cross: bool = False):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, cfg.dropout)
        self.attn = Attention(out_ch, cfg.head_dim) if attend else None
        self.cross = CrossAttention(out_ch, cfg.text_dim, cfg.head_dim) if cross else None

    def forward(self, x: Tensor, emb: Tensor, context: Optional[Tensor] = None) -> Tensor:
        x = self.res(x, emb)
        x = self.attn(x) if self.attn is not None else x
        return self.cross(x, context) if self.cross is not None else x


class Level(nn.Module):
    """The blocks at one resolution, then an optional change of resolution (down or up)."""

    def __init__(self, blocks: list[Block], resample: Optional[nn.Module]):
        super().__init__()
        self.blocks, self.resample = nn.ModuleList(blocks), resample


class UNet(nn.Module):
    r"""$\epsilon_\theta(x_t, t, y)$: ``forward(x, t, y=None)`` returns a tensor shaped like ``x``.

    ``t``: the position (step t + 1), int or LongTensor (B,) (floats allowed for continuous time).
    ``y``: None (unconditional: every image gets the null class), or a LongTensor (B,) of labels in
    [0, num_classes], where ``num_classes`` itself is the null label used for classifier-free guidance
    (``null_label``).
    With one count per attribute, ``num_classes = (n_1, …, n_K)``, ``y`` is (B, K): column k holds
    attribute k's label in [0, n_k], n_k meaning "attribute k not given"; ``null_label`` is (n_1, …, n_K).
    H and W must be divisible by 2^(len(channel_mults) − 1): 28×28 with three levels runs at 28, 14, 7.

    ``target`` says what the output means, "eps", "x0" or "v" (None: not known yet). The Trainer's
    diffusion objective sets it, checkpoints store it, and the samplers read it, so a model is never
    sampled as if it predicted something else.
    """

    def __init__(self, config: UNetConfig = UNetConfig(), target: Optional[Target] = None,
                 text_encoder: Optional[nn.Module] = None):
        super().__init__()
        _check_config(config)
        if (config.vocab_size is not None) != (text_encoder is not None):
            raise ValueError("a text-conditional U-Net (config.vocab_size set) needs its text_encoder, and only it "
                             "takes one: build it with minidiff.nn.text_unet(config) (registry.build does); got "
                             f"vocab_size={config.vocab_size!r} and text_encoder={type(text_encoder).__name__}")
        self.config = cfg = config
        self.target = check_target(target, allow_none=True, allow_flow=True)
        ch, emb_dim = cfg.base_channels, 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        counts = class_counts(cfg)
        # one table for all attributes: attribute k's rows start at offsets[k] (n_1 + 1 + … + n_{k-1} + 1)
        self.class_emb = nn.Embedding(sum(n + 1 for n in counts), emb_dim) if counts else None
        self.register_buffer("offsets", torch.tensor([sum(n + 1 for n in counts[:k]) for k in range(len(counts))],
                                                     dtype=torch.long), persistent=False)
        self.text = text_encoder                     # token ids (B, L) -> context c (B, L, text_dim)
        self.pooled = Pooled(cfg.text_dim, emb_dim) if text_encoder is not None else None
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, skip_channels = self._down_path(emb_dim)
        mid, size = cfg.base_channels * cfg.channel_mults[-1], cfg.image_size // 2 ** (len(cfg.channel_mults) - 1)
        cross = size in cfg.cross_attention_resolutions
        self.mid = nn.ModuleList([Block(mid, mid, emb_dim, cfg, attend=True, cross=cross),
                                  Block(mid, mid, emb_dim, cfg, False)])
        self.up = self._up_path(emb_dim, skip_channels)
        top = cfg.base_channels * cfg.channel_mults[0]      # the up path ends at the first level's width
        self.out = nn.Sequential(group_norm(top), nn.SiLU(), zero_init(nn.Conv2d(top, cfg.in_channels, 3, padding=1)))

    def _down_path(self, emb_dim: int) -> tuple[nn.ModuleList, list[int]]:
        cfg, ch, size = self.config, self.config.base_channels, self.config.image_size
        levels, skips = nn.ModuleList(), [ch]
        for i, mult in enumerate(cfg.channel_mults):
            blocks = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(Block(ch, cfg.base_channels * mult, emb_dim, cfg, size in cfg.attention_resolutions,
                                    size in cfg.cross_attention_resolutions))
                ch = cfg.base_channels * mult
                skips.append(ch)
            last = i == len(cfg.channel_mults) - 1
            levels.append(Level(blocks, None if last else Downsample(ch)))
            skips += [] if last else [ch]
            size //= 1 if last else 2
        return levels, skips

    def _up_path(self, emb_dim: int, skips: list[int]) -> nn.ModuleList:
        cfg, skips = self.config, list(skips)
        ch = cfg.base_channels * cfg.channel_mults[-1]
        size = cfg.image_size // 2 ** (len(cfg.channel_mults) - 1)
        levels = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            blocks = []
            for _ in range(cfg.blocks_per_level + 1):      # one more: it also takes the level's input skip
                out = cfg.base_channels * mult
                blocks.append(Block(ch + skips.pop(), out, emb_dim, cfg, size in cfg.attention_resolutions,
                                    size in cfg.cross_attention_resolutions))
                ch = out
            levels.append(Level(blocks, Upsample(ch) if i > 0 else None))
            size *= 2 if i > 0 else 1
        return levels

    @property
    def null_label(self) -> Optional[Null]:
        """The label that means "no class" (``num_classes``: one per attribute for a tuple), the empty
        caption for a text-conditional U-Net, or None for an unconditional one."""
        if self.config.vocab_size is not None:
            return NullCaption(self.config.max_tokens, self.config.vocab_size)
        return self.config.num_classes

    def encode_text(self, y: Optional[Tensor], batch: int, device: torch.device) -> Optional[Tensor]:
        """The context c (B, max_tokens, text_dim) of captions ``y`` (None: the empty caption), or None for a
        U-Net that reads no text."""
        if self.text is None:
            return None
        tokens = y if y is not None else torch.zeros(batch, self.config.max_tokens, dtype=torch.long, device=device)
        return self.text(tokens)

    def embed(self, t: Tensor, y: Optional[Tensor], batch: int, device: torch.device,
              context: Optional[Tensor] = None) -> Tensor:
        r"""The conditioning vector e = MLP(sinusoids(t)) + E[y], shape (B, 4·base_channels); with several
        attributes, $e = \mathrm{MLP}(\ldots) + \sum_k E_k[y_k]$, each attribute with its own rows of the table;
        with a caption's ``context`` c, $e = \mathrm{MLP}(\ldots) + W\bar c$ (``Pooled``)."""
        t = torch.as_tensor(t, device=device)
        t = t.expand(batch) if t.ndim == 0 else t
        t = t * self.config.time_scale if self.config.time_scale != 1 else t
        sinusoids = timestep_embedding(t, self.config.base_channels).to(self.stem.weight.dtype)
        emb = self.time_mlp(sinusoids)
        if self.class_emb is not None:
            if y is None:
                y = torch.tensor(class_counts(self.config), device=device).expand(batch, -1)
            rows = y.view(batch, -1) + self.offsets                  # (B, K): each attribute's own rows
            emb = emb + self.class_emb(rows).sum(dim=1)
        if context is not None:
            emb = emb + self.pooled(context)
        return emb

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        _check_inputs(self.config, x, t, y)
        context = self.encode_text(y, x.shape[0], x.device)
        emb = self.embed(t, y, x.shape[0], x.device, context).to(x.dtype)
        context = context.to(x.dtype) if context is not None else None
        h = self.stem(x)
        skips = [h]
        for level in self.down:
            for block in level.blocks:
                h = block(h, emb, context)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        for block in self.mid:
            h = block(h, emb, context)
        for level in self.up:
            for block in level.blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
            if level.resample is not None:
                h = level.resample(h)
        return self.out(h)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def shape_table(self, batch: int = 1) -> str:
        """A table of every block's output shape for one forward pass at ``config.image_size``."""
        rows, hooks = [], []
        for name, module in self.named_modules():
            if isinstance(module, (Block, Downsample, Upsample)) or name in ("stem", "out"):
                hooks.append(module.register_forward_hook(
                    lambda m, i, o, name=name: rows.append((name, tuple(o.shape), _count(m)))))
        cfg = self.config
        x = torch.zeros(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=next(self.parameters()).device)
        try:
            with torch.no_grad():
                self(x, torch.zeros(batch, dtype=torch.long, device=x.device))
        finally:
            for h in hooks:
                h.remove()
        lines = [f"{'module':28s} {'output shape':>20s} {'params':>10s}"]
        lines += [f"{n:28s} {str(s):>20s} {p:10,d}" for n, s, p in rows]
        return "\n".join(lines + [f"{'total':28s} {'':>20s} {self.num_parameters():10,d}"])


def receptive_field(layers: Sequence[tuple[int, int]]) -> Tensor:
    r"""The receptive field after each layer of a chain of convolutions, given as (kernel size $k$, stride $s$):
    with $r_0 = 1$ and $j_0 = 1$ (the jump: input pixels between neighbouring positions of the current map),

    $r_\ell = r_{\ell-1} + (k_\ell - 1)\,j_{\ell-1}, \qquad j_\ell = j_{\ell-1}\,s_\ell$.

    Returns the $r_\ell$ as a LongTensor of shape (len(layers),): one output pixel after layer $\ell$ depends on
    an $r_\ell \times r_\ell$ window of the input (before the image border clips it)."""
    field, jump, fields = 1, 1, []
    for i, layer in enumerate(layers):
        kernel, stride = _kernel_and_stride(layer, i)
        # a k×k kernel reaches k − 1 more positions of its input map, each `jump` input pixels apart
        field = field + (kernel - 1) * jump
        jump = jump * stride
        fields.append(field)
    return torch.tensor(fields, dtype=torch.long)


def _kernel_and_stride(layer: tuple[int, int], i: int) -> tuple[int, int]:
    if (not isinstance(layer, (tuple, list)) or len(layer) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in layer)):
        raise ValueError(f"layers[{i}] must be a pair (kernel_size, stride) of ints >= 1; got {layer!r}")
    return layer[0], layer[1]


def class_counts(cfg: UNetConfig) -> tuple[int, ...]:
    """The number of classes of each attribute: () unconditional, (n,) for ``num_classes = n``."""
    if cfg.num_classes is None:
        return ()
    return (cfg.num_classes,) if isinstance(cfg.num_classes, int) else tuple(cfg.num_classes)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_config(cfg: UNetConfig) -> None:
    factor = 2 ** (len(cfg.channel_mults) - 1)
    if not cfg.channel_mults or cfg.blocks_per_level < 1 or cfg.base_channels < 1:
        raise ValueError(f"channel_mults must be non-empty and blocks_per_level, base_channels >= 1; got {cfg}")
    if cfg.image_size % factor:
        raise ValueError(f"image_size must be divisible by 2^(len(channel_mults) − 1) = {factor}; got "
                         f"{cfg.image_size} (pad the images, or use fewer levels)")
    counts = cfg.num_classes if isinstance(cfg.num_classes, tuple) else (cfg.num_classes,)
    if cfg.num_classes is not None and (cfg.num_classes == () or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts)):
        raise ValueError(f"num_classes must be None, an int >= 1 or a non-empty tuple of them (one per attribute); "
                         f"got {cfg.num_classes!r}")
    _check_text_config(cfg)


def _check_text_config(cfg: UNetConfig) -> None:
    if cfg.vocab_size is None:
        if cfg.cross_attention_resolutions:
            raise ValueError(f"cross_attention_resolutions attend to a caption: they need vocab_size set; got "
                             f"cross_attention_resolutions={cfg.cross_attention_resolutions} with vocab_size=None")
        return
    if cfg.num_classes is not None:
        raise ValueError(f"a U-Net is conditioned on classes or on text, not both; got num_classes="
                         f"{cfg.num_classes!r} and vocab_size={cfg.vocab_size!r}")
    for name in ("vocab_size", "max_tokens", "text_dim", "text_layers"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "vocab_size" else 1):
            raise ValueError(f"{name} must be an int >= {2 if name == 'vocab_size' else 1}; got {value!r}")


def _check_inputs(cfg: UNetConfig, x: Tensor, t: Tensor, y: Optional[Tensor]) -> None:
    factor = 2 ** (len(cfg.channel_mults) - 1)
    if x.ndim != 4 or x.shape[1] != cfg.in_channels:
        raise ValueError(f"x must have shape (B, {cfg.in_channels}, H, W); got {tuple(x.shape)}")
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"x's H and W must be divisible by {factor} (the U-Net halves them "
                         f"{len(cfg.channel_mults) - 1} times); got {tuple(x.shape[2:])}")
    if isinstance(t, Tensor) and t.ndim == 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"t has {t.shape[0]} entries but x has batch size {x.shape[0]}")
    if y is None:
        return
    if cfg.num_classes is None and cfg.vocab_size is None:
        raise ValueError("y was given but this U-Net is unconditional (config.num_classes and vocab_size are None)")
    null = NullCaption(cfg.max_tokens, cfg.vocab_size) if cfg.vocab_size is not None else cfg.num_classes
    check_labels(y, null, x.shape[0], values=not getattr(y, "is_cuda", False))   # CUDA: the form only, no sync
