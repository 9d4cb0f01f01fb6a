"""Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023).

Two fixed 2x2 pair downsamplers (the means of the two diagonals of every 2x2
block) turn the noisy plane into two half-size images with nearly independent
noise. A tiny network (3x3 conv 48, LeakyReLU 0.2, 3x3 conv 48, LeakyReLU 0.2,
1x1 conv) predicts the noise; denoised = input - network(input). The loss adds
a residual term (each half, denoised, should predict the other half) and a
consistency term (downsampling the denoised plane should match denoising the
halves). Adam 1e-3, halved every third of the budget (the paper: 3,000 steps,
halved at 1,000 and 2,000). No early stopping: the output is the last one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.methods._torch import TrainedMethod


def pair_downsample(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two diagonal means of every 2x2 block: (x[0,0] + x[1,1]) / 2 and (x[0,1] + x[1,0]) / 2."""
    height, width = image.shape[-2] // 2 * 2, image.shape[-1] // 2 * 2
    x = image[..., :height, :width]
    top_left, top_right = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    bottom_left, bottom_right = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (top_left + bottom_right) / 2, (top_right + bottom_left) / 2


def zs_n2n_network(width: int = 48) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(width, 1, 1),
    )


class ZeroShotNoise2Noise(TrainedMethod):
    """Zero-Shot Noise2Noise on one plane, for a fixed budget of ``steps`` (default 3,000)."""

    max_pixels = 1536 * 1536  # trains on whole planes: larger ones are refused (RESULTS.md, 'Large planes')

    name = "zs-n2n"
    display_name = "ZS-N2N"
    DEFAULTS = {"steps": 3000, "report_every": 50, "learning_rate": 1e-3, "width": 48, "precision": "auto"}
    keeps_last = True

    def build(self) -> nn.Module:
        return zs_n2n_network(self.settings["width"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        self.halves = pair_downsample(noisy)

    def denoise(self, image: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            noise = self.network(self.channels_last(image))
        return image - noise.float()

    def train_step(self) -> None:
        first, second = self.halves
        self.optimizer.zero_grad(set_to_none=True)
        denoised_first, denoised_second = self.denoise(first), self.denoise(second)
        residual = (F.mse_loss(denoised_first, second) + F.mse_loss(denoised_second, first)) / 2
        down_first, down_second = pair_downsample(self.denoise(self.noisy))
        consistency = (F.mse_loss(denoised_first, down_first) + F.mse_loss(denoised_second, down_second)) / 2
        (residual + consistency).backward()
        self.optimizer.step()

    def after_step(self, progress: float) -> None:
        """The learning rate halves after each third of the budget (steps, or seconds when timed)."""
        halvings = int(3 * progress + 1e-9)
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings["learning_rate"] * 0.5**halvings

    def report(self) -> tuple[float, torch.Tensor]:
        """ZS-N2N has no validation of its own: the score is the output's MSE against the noisy plane."""
        output = self.denoise(self.noisy)[0, 0].clamp(0, 1)
        return torch.mean((output - self.noisy[0, 0]) ** 2).item(), output
