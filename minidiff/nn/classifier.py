r"""A small digit classifier: the feature space the course's metrics measure samples in
(``minidiff.metrics``), and the judge of whether a class-conditional sample shows the asked digit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn


@dataclass
class ClassifierConfig:
    """The shape of ``DigitClassifier``: three conv stages of widths ``channels`` (the last width is
    used twice), then a ``feature_dim`` embedding."""
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128
    dropout: float = 0.3
    num_classes: int = 10


class DigitClassifier(nn.Module):
    r"""A small CNN for 28×28 grayscale digits in [-1, 1]: logits = W · features(x) + b.

    Three conv stages (each conv, BatchNorm, ReLU, 2×2 max-pool: 28 → 14 → 7 → 3 pixels), then a
    linear map to ``feature_dim`` and a ReLU: those activations are ``features(x)``, the space the
    metrics work in. Dropout and a linear map to ``num_classes`` logits classify from them.
    """

    def __init__(self, config: Optional[ClassifierConfig] = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),    # 14×14
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),   # 7×7
            nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),   # 3×3
            nn.Flatten(), nn.Linear(c2 * 9, config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations, after the ReLU: (B, 1, 28, 28) -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, 1, 28, 28) -> (B, num_classes)."""
        return self.head(self.body(x))
