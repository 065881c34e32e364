r"""Metrics: how good are generated digits, measured in the features of a small digit classifier.

Inception weights cannot be downloaded here, so FID proper is out of reach. Instead a small CNN,
``DigitClassifier``, is trained on the same MNIST digits as the diffusion models, and shipped
(``pretrained.load_classifier()``). Its penultimate activations, ``features(x) ∈ ℝ^D`` (D = 128),
stand in for Inception's pool features:

- **Fréchet distance in DigitClassifier features** (``frechet_distance``): fit a Gaussian to each
  feature set and measure  FD = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).  Same formula as FID,
  different network, so its numbers are not comparable with published FIDs.
- **Kernel distance** (``kernel_distance``, KID): the unbiased MMD² between the feature sets with
  the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³, averaged over random subsets.
- **Class accuracy** (``class_accuracy``): the fraction of class-conditional samples that the
  classifier labels as the class they were asked for.

The protocol (fixed, so that numbers from different notebooks compare):

- generate 1,000 samples, 100 per class, and compare them with the 1,000 held-out digits
  (``reference_images()``; never used to train the classifier or the diffusion models);
- the **floor** (``reference_floor()``) is the same metric between 1,000 real training digits
  (the first 100 of each class in the train split) and those held-out digits. With n = 1,000
  points in 128 dimensions a Fréchet distance is dominated by sampling noise: even two sets of
  real digits are far from 0 apart. So only the ratio ``fd / floor`` means anything: about 1 is
  as good as real data, 2 is twice as far.

``evaluate(samples, labels)`` runs the whole protocol and returns every number in one dict.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import pretrained

Device = Union[str, torch.device]
NUM_CLASSES = 10
PER_CLASS = 100                    # the protocol: 100 samples of each digit, 1,000 in all


# -- the classifier ----------------------------------------------------------------------------
@dataclass
class ClassifierConfig:
    """The shape of ``DigitClassifier``: two conv stages, then a ``feature_dim`` embedding."""
    channels: tuple[int, int] = (32, 64)
    feature_dim: int = 128
    dropout: float = 0.3


class DigitClassifier(nn.Module):
    r"""A small CNN for 28×28 grayscale digits in [-1, 1]: logits = W · features(x) + b.

    conv 5×5 → pool → conv 3×3 → pool → conv 3×3 → pool → linear to ``feature_dim`` → ReLU
    (these are ``features``) → dropout → linear to 10 logits.
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
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, NUM_CLASSES))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations, after the ReLU: (B, 1, 28, 28) -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, 1, 28, 28) -> (B, 10)."""
        return self.head(self.body(x))
