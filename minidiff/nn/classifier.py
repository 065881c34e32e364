r"""A small image classifier: the feature space the course's metrics measure samples in
(``minidiff.metrics``), and the judge of whether a class-conditional sample shows the asked digit
(28×28 grayscale) or, with ``in_channels=3, image_size=32``, the asked shape (``data.Shapes``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn


@dataclass
class ClassifierConfig:
    """The shape of ``DigitClassifier``: three conv stages of widths ``channels`` (the last width is
    used twice), then a ``feature_dim`` embedding; images of ``in_channels`` × ``image_size``²."""
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128
    dropout: float = 0.3
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.in_channels < 1:
            raise ValueError(f"image_size must be >= 8 (three 2×2 poolings) and in_channels >= 1; got "
                             f"image_size={self.image_size}, in_channels={self.in_channels}")


class DigitClassifier(nn.Module):
    r"""A small CNN for images in [-1, 1] (by default 28×28 grayscale digits): logits = W · features(x) + b.

    Three conv stages (each conv, BatchNorm, ReLU, 2×2 max-pool: 28 → 14 → 7 → 3 pixels), then a
    linear map to ``feature_dim`` and a ReLU: those activations are ``features(x)``, the space the
    metrics work in. Dropout and a linear map to ``num_classes`` logits classify from them.
    """

    def __init__(self, config: Optional[ClassifierConfig] = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c1, c2 = config.channels
        side = config.image_size // 8                  # after three 2×2 poolings
        self.body = nn.Sequential(
            nn.Conv2d(config.in_channels, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),    # 14×14
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),   # 7×7
            nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),   # 3×3
            nn.Flatten(), nn.Linear(c2 * side * side, config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations, after the ReLU: (B, C, H, W) -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, C, H, W) -> (B, num_classes)."""
        return self.head(self.body(x))
