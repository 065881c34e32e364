"""Neural networks: the timestep embedding, the shared blocks, the U-Net denoiser and the digit classifier."""
from .blocks import Attention, Downsample, ResBlock, Upsample
from .classifier import ClassifierConfig, DigitClassifier
from .embedding import timestep_embedding
from .unet import UNet, UNetConfig

__all__ = ["timestep_embedding", "UNet", "UNetConfig", "ResBlock", "Attention", "Downsample", "Upsample",
           "ClassifierConfig", "DigitClassifier"]
