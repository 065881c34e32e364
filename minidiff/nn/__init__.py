"""Neural networks: the timestep embedding and the U-Net denoiser."""
from .embedding import timestep_embedding
from .unet import Attention, ResBlock, UNet, UNetConfig

__all__ = ["timestep_embedding", "UNet", "UNetConfig", "ResBlock", "Attention"]
