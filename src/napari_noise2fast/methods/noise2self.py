"""Noise2Self on a single image (Batson & Royer, ICML 2019).

J-invariant training by grid masking: each step masks one phase of a 4x4 grid
(every 16th pixel), fills the masked pixels with the mean of their four
neighbours, and trains a small DnCNN to predict the noisy values there (mean
squared error on the masked pixels only). The validation score is the same
masked loss on a fixed phase that is never trained on; the output is the
network applied to the whole noisy plane at the best validation (the single-
image variant of the Noise2Fast paper's benchmarks: an 8-layer DnCNN, a 4x4
grid masker with interpolation, Adam 1e-2, validation every 100 steps; here
Adam 1e-3, which gains more in a CPU budget of a few hundred steps: +3.4 dB
against +2.5 dB at 1e-2 after 300 steps on a 64x64 crop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.activations import ReLU
from napari_noise2fast.methods._torch import TrainedMethod

GRID = 4
NEIGHBOURS = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]])


def grid_mask(shape: tuple[int, int], phase: int, device) -> torch.Tensor:
    """1.0 on the pixels of one phase of the 4x4 grid, else 0.0; shape (1, 1, H, W)."""
    rows = torch.arange(shape[0], device=device) % GRID == phase // GRID
    cols = torch.arange(shape[1], device=device) % GRID == phase % GRID
    return (rows[:, None] & cols[None, :]).float()[None, None]


def interpolate_masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked pixels replaced by the mean of their four neighbours (reflected at the border)."""
    kernel = NEIGHBOURS.to(image.device, image.dtype)[None, None]
    neighbours = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), kernel)
    return image * (1 - mask) + neighbours * mask


def dncnn(layers: int = 8, width: int = 64) -> nn.Sequential:
    """Conv-ReLU, (layers - 2) x Conv-BatchNorm-ReLU, Conv; predicts the clean image directly."""
    modules: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), ReLU()]
    for _ in range(layers - 2):
        modules += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), ReLU()]
    modules.append(nn.Conv2d(width, 1, 3, padding=1))
    return nn.Sequential(*modules)


class Noise2Self(TrainedMethod):
    """Noise2Self with a DnCNN on one plane, for a fixed budget of ``steps`` (default 1,000; the paper 20,000)."""

    max_pixels = 768 * 768  # trains on whole planes: larger ones are refused (RESULTS.md, 'Large planes')

    name = "noise2self"
    display_name = "Noise2Self"
    DEFAULTS = {"steps": 1000, "report_every": 100, "learning_rate": 1e-3, "layers": 8, "width": 64,
                "precision": "auto"}
    VALIDATION_PHASE = 0  # never trained on

    def build(self) -> nn.Module:
        return dncnn(self.settings["layers"], self.settings["width"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        shape = noisy.shape[-2:]
        self.masks = [grid_mask(shape, phase, noisy.device) for phase in range(GRID * GRID)]
        self.validation_mask = self.masks[self.VALIDATION_PHASE]
        self.validation_input = interpolate_masked(noisy, self.validation_mask)

    def masked_loss(self, network_input: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            output = self.network(self.channels_last(network_input))
        return torch.sum((output.float() - self.noisy) ** 2 * mask) / torch.sum(mask)

    def train_step(self) -> None:
        phase = int(self.rng.integers(1, GRID * GRID))
        mask = self.masks[phase]
        self.optimizer.zero_grad(set_to_none=True)
        self.masked_loss(interpolate_masked(self.noisy, mask), mask).backward()
        self.optimizer.step()

    def report(self) -> tuple[float, torch.Tensor]:
        """The masked loss on the held-out phase (J-invariant: true error plus noise variance)."""
        mse = self.masked_loss(self.validation_input, self.validation_mask).item()
        with self.autocast():
            output = self.network(self.channels_last(self.noisy)).float()[0, 0].clamp(0, 1)
        return mse, output
