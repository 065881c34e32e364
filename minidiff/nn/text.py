r"""Text conditioning (notebook 08): a caption becomes a sequence of vectors the U-Net can attend to.

    "a red circle"  ─ Tokenizer ─▶  [1, 9, 17, 0, 0, …]          one id per word, 0 = padding
                    ─ TextEncoder ─▶  c ∈ ℝ^{L × d}              E[token] + P[position], then
                                                                 a few transformer layers

The captions of ``minidiff.data.Scenes`` come from a small grammar, so the tokenizer is a word list
(``data.CAPTION_WORDS``), not a learned sub-word vocabulary, and the encoder is trained from scratch
together with the U-Net. Large systems differ in scale, not in kind: Stable Diffusion feeds a frozen
CLIP text encoder's 77 × 768 outputs to the same cross-attention.

The empty caption "" is all padding: it is the **null condition** of classifier-free guidance
(``conditioning.NullCaption``), as "no class" is the null label of a class-conditional model. Padding is
not masked out: every caption has exactly ``max_tokens`` tokens, the padding ones included, which is
what the U-Net sees (Stable Diffusion's CLIP pads the same way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..conditioning import Target
from .blocks import multi_head_attention
from .unet import UNet, UNetConfig

PAD = 0          # the token id of padding, and of every position of the empty caption


@dataclass(frozen=True)
class Tokenizer:
    """Words to ids: ``words[i]`` has id ``i + 1`` (0 is padding). ``encode`` gives (B, max_tokens) int64."""
    words: tuple[str, ...]
    max_tokens: int = 16

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words) or not all(isinstance(w, str) and w for w in self.words):
            raise ValueError(f"words must be distinct non-empty strings; got {self.words!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1; got {self.max_tokens!r}")

    @property
    def vocab_size(self) -> int:
        """The number of ids, padding included."""
        return len(self.words) + 1

    def encode(self, captions: Sequence[str]) -> Tensor:
        """Token ids (B, max_tokens), padded with 0 on the right; "" is all padding (the null caption)."""
        if isinstance(captions, str):
            raise TypeError(f"captions must be a list of strings; got the single string {captions!r} "
                            f"(wrap it: [{captions!r}])")
        ids = {w: i + 1 for i, w in enumerate(self.words)}
        tokens = torch.full((len(captions), self.max_tokens), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"captions[{row}] must be a string (a caption); "
                                f"got {type(caption).__name__} {caption!r}")
            words = caption.split()
            if len(words) > self.max_tokens:
                raise ValueError(f"captions[{row}] has {len(words)} words, more than max_tokens = "
                                 f"{self.max_tokens}: {caption!r}")
            unknown = [w for w in words if w not in ids]
            if unknown:
                raise ValueError(f"captions[{row}] = {caption!r} has words outside the vocabulary: {unknown}; "
                                 f"the known words are {list(self.words)}")
            tokens[row, :len(words)] = torch.tensor([ids[w] for w in words], dtype=torch.long)
        return tokens

    def decode(self, tokens: Tensor) -> list[str]:
        """The captions back from (B, L) ids, padding dropped."""
        return [" ".join(self.words[i - 1] for i in row.tolist() if i != PAD) for row in tokens]


class TransformerLayer(nn.Module):
    r"""A pre-norm transformer layer over the caption's tokens:
    $h = x + W_o\,\mathrm{softmax}(QK^\top/\sqrt d)\,V$ with $[Q, K, V] = W_{qkv}\mathrm{LN}(x)$, then
    $\text{out} = h + W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}(h))$ (Vaswani et al. 2017; pre-norm as in GPT-2)."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x + self.proj(multi_head_attention(*self.qkv(self.norm1(x)).chunk(3, dim=-1), heads=self.heads))
        return h + self.mlp(self.norm2(h))


class TextEncoder(nn.Module):
    r"""Token ids (B, L) to a context $c$ (B, L, ``dim``): $c = \mathrm{LN}(\mathrm{layers}(E[\text{ids}] + P))$,
    with $E$ a learned embedding per word and $P$ a learned embedding per position (word order matters:
    "a red circle and a blue square" is not "a blue circle and a red square")."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int, layers: int, head_dim: int):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(max_tokens, dim) * 0.02)
        self.layers = nn.ModuleList([TransformerLayer(dim, head_dim) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.token(tokens) + self.position[:tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def text_unet(config: UNetConfig, target: Optional[Target] = None) -> UNet:
    """A text-conditional U-Net (``config.vocab_size`` set): the U-Net of notebook 04 with a ``TextEncoder``
    plugged in, whose context the blocks at ``cross_attention_resolutions`` attend to. ``registry.build``
    makes one from a saved description; this is the same thing by hand."""
    if config.vocab_size is None:
        raise ValueError("text_unet builds a text-conditional U-Net: config.vocab_size must be set; got None "
                         "(for a class-conditional or unconditional U-Net, use UNet(config))")
    encoder = TextEncoder(config.vocab_size, config.max_tokens, config.text_dim, config.text_layers, config.head_dim)
    return UNet(config, target, text_encoder=encoder)
