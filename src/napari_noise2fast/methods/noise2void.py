"""Noise2Void on a single image (Krull, Buchholz & Jug, CVPR 2019).

Blind-spot training: random 64x64 patches of the plane (flipped and rotated at
random) have one pixel in every 8x8 box replaced by a random other pixel of its
5x5 neighbourhood; a small U-Net (depth 2, 32 base channels) predicts the
original noisy values there, with the loss on those pixels only. The validation
score is the same blind-spot loss on a fixed set of replaced pixels of the
whole plane; the output is the U-Net on the whole noisy plane at the best
validation. Assumes pixel-wise independent noise. Training is bounded at any
plane size (``batch`` patches per step); validation and output are predicted in
tiles (:mod:`napari_noise2fast.tiling`), so memory stays that of a tile.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.activations import ReLU
from napari_noise2fast.methods._torch import TrainedMethod, autocast
from napari_noise2fast.tiling import predict_in_tiles

BOX = 8  # one blind-spot pixel per BOX x BOX box
RADIUS = 2  # neighbours come from the 5x5 window
DEPTH = 2
# The U-Net's receptive field: 2 convolutions at full, half and quarter resolution down and back up, plus
# the poolings: 2 + 4 + 8 + 4 + 2 + 3 = 23 pixels; tiles are cut with more and at multiples of 2**DEPTH.
RECEPTIVE_RADIUS = 32


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), ReLU())


class UNet(nn.Module):
    """A two-level U-Net: 32 and 64 channels down, 128 at the bottom, skips by concatenation; ``outputs``
    channels out (PN2V's samples of the signal), by a 1x1 convolution of :meth:`features`."""

    def __init__(self, base: int = 32, outputs: int = 1):
        super().__init__()
        self.down = nn.ModuleList([_block(1, base), _block(base, 2 * base)])
        self.bottom = _block(2 * base, 4 * base)
        self.up = nn.ModuleList([_block(4 * base + 2 * base, 2 * base), _block(2 * base + base, base)])
        self.out = nn.Conv2d(base, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's channels, before the 1x1 output convolution."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], dim=1))
        return x


def blind_spots(shape, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices of one pixel per BOX x BOX box, flat indices of a random other pixel in its 5x5 window)."""
    batch, height, width = shape
    rows = torch.arange(0, height, BOX, device=device)
    cols = torch.arange(0, width, BOX, device=device)
    grid_r, grid_c = torch.meshgrid(rows, cols, indexing="ij")
    grid_r, grid_c = grid_r.reshape(1, -1).expand(batch, -1), grid_c.reshape(1, -1).expand(batch, -1)
    r = grid_r + torch.randint(0, BOX, grid_r.shape, generator=generator, device="cpu").to(device)
    c = grid_c + torch.randint(0, BOX, grid_c.shape, generator=generator, device="cpu").to(device)
    r, c = r.clamp(max=height - 1), c.clamp(max=width - 1)
    offsets = torch.randint(1, (2 * RADIUS + 1) ** 2, r.shape, generator=generator, device="cpu").to(device)
    offsets = (offsets + (2 * RADIUS + 1) ** 2 // 2) % (2 * RADIUS + 1) ** 2  # any but the centre
    nr = (r + offsets // (2 * RADIUS + 1) - RADIUS).clamp(0, height - 1)
    nc = (c + offsets % (2 * RADIUS + 1) - RADIUS).clamp(0, width - 1)
    base = torch.arange(batch, device=device)[:, None] * height * width
    return (base + r * width + c).reshape(-1), (base + nr * width + nc).reshape(-1)


def pad_to_multiple(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > max(pad_h, pad_w)
                      else "replicate")
    return image, (height, width)


def unet_forward(network: UNet, dtype: torch.dtype, device: torch.device):
    """The network on a (1, 1, h, w) tile, computing in ``dtype`` (channels-last), its outputs in float32."""

    def forward(tile: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return network(tile.contiguous(memory_format=torch.channels_last)).float()

    return forward


def predict_unet(network: UNet, padded: torch.Tensor, size, dtype: torch.dtype) -> torch.Tensor:
    """A one-output U-Net on a plane padded to a multiple of 2**DEPTH, in tiles, computing in ``dtype``;
    (H, W) float32, cut to ``size``."""
    return predict_in_tiles(unet_forward(network, dtype, padded.device), padded, RECEPTIVE_RADIUS,
                            bytes_per_pixel=2048, multiple=2**DEPTH)[:size[0], :size[1]]


def random_patches(noisy: torch.Tensor, rng, batch: int, size: int, plane_size, even: bool = False) -> torch.Tensor:
    """``batch`` random ``size`` x ``size`` patches of random planes of ``noisy`` (N, 1, H, W) within its
    first ``plane_size`` (H, W) pixels, each turned and flipped at random: (batch, 1, size, size).

    Drawn uniformly, a patch holds a pixel of the plane's first row ``size`` times less often than one of
    its middle (once in 65 draws against 64 in 65 for 64-pixel patches of a 128-pixel plane). ``even``: the
    patch's corner drawn over ``size - 1`` more pixels beyond each border and moved back inside, so that
    the border's pixels are held as often as the middle's (those within ``size`` of a border up to twice as
    often)."""
    height, width = plane_size
    planes = rng.integers(0, noisy.shape[0], batch)
    reach = size - 1 if even else 0
    tops = np.clip(rng.integers(-reach, height - size + 1 + reach, batch), 0, height - size)
    lefts = np.clip(rng.integers(-reach, width - size + 1 + reach, batch), 0, width - size)
    turns = rng.integers(0, 4, batch)
    flips = rng.integers(0, 2, batch)
    crops = []
    for plane, top, left, turn, flip in zip(planes, tops, lefts, turns, flips, strict=True):
        crop = torch.rot90(noisy[plane, :, top:top + size, left:left + size], int(turn), dims=(-2, -1))
        crops.append(crop.flip(-1) if flip else crop)
    return torch.stack(crops)


class Noise2Void(TrainedMethod):
    """Noise2Void on one plane, for a fixed budget of ``steps`` (default 1,500) of 8 patches of 64x64."""

    name = "noise2void"
    display_name = "Noise2Void"
    DEFAULTS = {"steps": 1500, "report_every": 100, "learning_rate": 4e-4, "batch": 8, "patch": 64, "base": 32,
                "precision": "auto"}

    def build(self) -> nn.Module:
        return UNet(self.settings["base"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        self.padded, self.size = pad_to_multiple(noisy, 2**DEPTH)
        height, width = self.size
        self.patch = min(self.settings["patch"], height // 4 * 4, width // 4 * 4)
        spots, neighbours = blind_spots((1, height, width), self.generator, noisy.device)
        flat = noisy.reshape(-1).clone()
        flat[spots] = noisy.reshape(-1)[neighbours]
        self.validation = (pad_to_multiple(flat.reshape(noisy.shape), 2**DEPTH)[0], spots)

    def patches(self) -> torch.Tensor:
        height, width = self.size
        batch, size = self.settings["batch"], self.patch
        tops = self.rng.integers(0, height - size + 1, batch)
        lefts = self.rng.integers(0, width - size + 1, batch)
        crops = [self.noisy[0, :, t:t + size, s:s + size] for t, s in zip(tops, lefts, strict=True)]
        turns = self.rng.integers(0, 4, batch)
        crops = [torch.rot90(c, int(k), dims=(-2, -1)) for c, k in zip(crops, turns, strict=True)]
        crops = [c.flip(-1) if flip else c for c, flip in zip(crops, self.rng.integers(0, 2, batch), strict=True)]
        return torch.stack(crops)

    def blind_spot_loss(self, network_input: torch.Tensor, target: torch.Tensor, spots: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            output = self.network(self.channels_last(network_input)).float()
        height, width = target.shape[-2:]
        return torch.mean((output[..., :height, :width].reshape(-1)[spots] - target.reshape(-1)[spots]) ** 2)

    def train_step(self) -> None:
        target = self.patches()
        spots, neighbours = blind_spots((target.shape[0], *target.shape[-2:]), self.generator, target.device)
        network_input = target.reshape(-1).clone()
        network_input[spots] = target.reshape(-1)[neighbours]
        self.optimizer.zero_grad(set_to_none=True)
        self.blind_spot_loss(network_input.reshape(target.shape), target, spots).backward()
        self.optimizer.step()

    def predict(self, padded: torch.Tensor) -> torch.Tensor:
        """The U-Net on a plane padded to a multiple of 2**DEPTH, in tiles; (H, W) float32, unpadded."""
        return predict_unet(self.network, padded, self.size, self.compute_dtype)

    def report(self) -> tuple[float, torch.Tensor]:
        """The blind-spot loss on the fixed replaced pixels of the whole plane."""
        network_input, spots = self.validation
        output = self.predict(network_input)
        mse = torch.mean((output.reshape(-1)[spots] - self.noisy.reshape(-1)[spots]) ** 2).item()
        return mse, self.predict(self.padded).clamp(0, 1)
