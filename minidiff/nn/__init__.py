"""Neural networks: the timestep embedding, the shared blocks, the U-Net denoiser, the digit classifier and
the autoencoder of latent diffusion."""
from .autoencoder import Autoencoder, AutoencoderConfig, kl_divergence, reparameterise
from .blocks import Attention, Downsample, ResBlock, Upsample
from .classifier import ClassifierConfig, DigitClassifier
from .embedding import timestep_embedding
from .text import text_unet
from .unet import UNet, UNetConfig, receptive_field

__all__ = ["timestep_embedding", "UNet", "UNetConfig", "ResBlock", "Attention", "Downsample", "Upsample",
           "ClassifierConfig", "DigitClassifier", "Autoencoder", "AutoencoderConfig", "reparameterise",
           "kl_divergence", "receptive_field", "text_unet"]
