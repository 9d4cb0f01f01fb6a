"""Self2Self-style denoising (Quan et al., CVPR 2020), on an explicit CPU budget.

An encoder of partial convolutions (48 channels, LeakyReLU 0.1, five 2x2 max
poolings; a partial convolution sees only the unmasked pixels and rescales by
their share of its window) and a decoder of plain 3x3 convolutions with dropout
(0.3) before each, sigmoid output. Each step flips the plane at random, keeps
every pixel with probability 0.7 (Bernoulli mask), and trains on the mean
squared error of the dropped pixels only; Adam (the paper: 1e-4 for 150,000
steps; here 1e-3, since the budget is about a hundred times shorter and 1e-4
barely moves in it: +0.3 dB after 300 steps on a 64x64 crop against +2.8 dB
at 1e-3). The output is an ensemble
mean of stochastic predictions (new mask, dropout on): Self2Self averages 100
predictions after 150,000 steps, far beyond a CPU, so here ``steps`` (default
1,500) and ``predictions`` (default 30, taken evenly over the second half of
the budget, the mean streamed as the current output) are explicit; with a
wall-clock budget ``seconds`` (an equal-time comparison) the second half is
one of time, not of steps. One addition to the paper: the last convolution's
bias starts at the logit of the image's mean, so that the sigmoid output
starts at the image's mean level. From the default initialisation (output near
0.5) on a mostly dark image (a confocal plane whose mean is a few percent of its
range), the first Adam steps push every output down together until the sigmoid
saturates at 0, where its gradient vanishes: the run ends as a constant image,
below the noisy input (measured on 128x128 crops of the two FMD confocal images,
300 steps: 26.1 and 15.8 dB against noisy 36.3 and 19.4; with this bias 39.2
and 27.8; on a Set12 crop, mean 0.43 of its range, 22.49 against 22.50 dB).
The score
is the training objective, the mean loss on dropped pixels over the last
``report_every`` steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_noise2fast.methods._torch import TrainedMethod

POOLINGS = 5
KEEP = 0.7


class PartialConv(nn.Module):
    """3x3 partial convolution: only unmasked inputs count, rescaled by 9 / (unmasked in the window)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            window = F.conv2d(mask, torch.ones(1, 1, 3, 3, dtype=mask.dtype, device=mask.device), padding=1)
            scale = 9.0 / window.clamp(min=1.0)
            new_mask = (window > 0).to(mask.dtype)
        out = F.conv2d(x * mask, self.conv.weight, None, padding=1)
        out = (out * scale + self.conv.bias[None, :, None, None]) * new_mask
        return out, new_mask


class Self2SelfNet(nn.Module):
    def __init__(self, width: int = 48, dropout: float = 0.3):
        super().__init__()
        self.encoder = nn.ModuleList([PartialConv(1, width)] + [PartialConv(width, width) for _ in range(POOLINGS + 1)])
        self.decoder = nn.ModuleList([
            nn.ModuleList([nn.Conv2d(2 * width if level == POOLINGS else 3 * width, 2 * width, 3, padding=1),
                           nn.Conv2d(2 * width, 2 * width, 3, padding=1)])
            for level in range(POOLINGS, 1, -1)
        ])
        self.head = nn.ModuleList([nn.Conv2d(2 * width + 1, 64, 3, padding=1), nn.Conv2d(64, 32, 3, padding=1),
                                   nn.Conv2d(32, 1, 3, padding=1)])
        self.dropout = dropout
        self.generator: torch.Generator | None = None  # the method's own, so a seeded run repeats

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout, on in training and in prediction alike, drawn from ``generator`` (not torch's global one)."""
        if self.dropout == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.dropout
        return x * keep.to(x.dtype) / (1 - self.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = x
        h, m = self.encoder[0](x, mask)
        h = F.leaky_relu(h, 0.1)
        skips = []
        for level in range(1, POOLINGS + 1):
            h, m = self.encoder[level](h, m)
            h = F.leaky_relu(h, 0.1)
            h, m = F.max_pool2d(h, 2), F.max_pool2d(m, 2)
            skips.append(h)
        h, m = self.encoder[POOLINGS + 1](h, m)
        h = F.leaky_relu(h, 0.1)
        for convs, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skip], dim=1)
            for conv in convs:
                h = F.leaky_relu(conv(self._drop(h)), 0.1)
        h = torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), image], dim=1)
        for conv in self.head[:-1]:
            h = F.leaky_relu(conv(self._drop(h)), 0.1)
        return self.head[-1](self._drop(h))


class Self2Self(TrainedMethod):
    """Self2Self-style Bernoulli-masked training with a dropout ensemble, on an explicit budget."""

    max_pixels = 768 * 768  # trains on whole planes: larger ones are refused (RESULTS.md, 'Large planes')

    name = "self2self"
    display_name = "Self2Self"
    DEFAULTS = {"steps": 1500, "predictions": 30, "report_every": 50, "learning_rate": 1e-3, "width": 48,
                "dropout": 0.3, "precision": "auto"}
    keeps_last = True

    @classmethod
    def check_params(cls, **params) -> dict:
        settings = super().check_params(**params)
        if settings["predictions"] < 1 or not 0 <= settings["dropout"] < 1:
            raise ValueError(f"invalid {cls.name} settings: {settings}")
        return settings

    def build(self) -> nn.Module:
        return Self2SelfNet(self.settings["width"], self.settings["dropout"])

    def __init__(self, noisy, **kwargs):
        super().__init__(noisy, **kwargs)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        self.network.generator = torch.Generator(device=noisy.device).manual_seed(int(self.rng.integers(2**63)))
        height, width = noisy.shape[-2:]
        multiple = 2**POOLINGS
        pad_h, pad_w = -height % multiple, -width % multiple
        self.padded = F.pad(noisy, (0, pad_w, 0, pad_h), mode="replicate")
        self.size = (height, width)
        count = self.settings["predictions"]
        # the k-th prediction is due when k/count of the budget's second half is used
        self.prediction_due = [0.5 + 0.5 * k / count for k in range(1, count + 1)]
        self.ensemble_sum: torch.Tensor | None = None
        self.ensemble_count = 0
        self.recent_losses: list[float] = []
        self.start_at_mean()

    def start_at_mean(self) -> None:
        """Set the last convolution's bias so that the sigmoid output starts at the image's mean level."""
        level = min(max(float(self.noisy.mean()), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            self.network.head[-1].bias.fill_(math.log(level / (1 - level)))

    def bernoulli(self, like: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(like.shape[-2:], generator=self.generator) < KEEP
        return keep.to(like.device, like.dtype)[None, None]

    def predict(self) -> torch.Tensor:
        """One stochastic prediction (new mask, dropout on) of the whole plane."""
        mask = self.bernoulli(self.padded)
        with self.autocast():
            output = torch.sigmoid(self.network(self.channels_last(self.padded * mask), mask).float())
        height, width = self.size
        return output[0, 0, :height, :width]

    def train_step(self) -> None:
        image = self.padded
        flips = [dim for dim, flip in zip((-2, -1), self.rng.integers(0, 2, 2), strict=True) if flip]
        if flips:
            image = image.flip(flips)
        mask = self.bernoulli(image)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            output = torch.sigmoid(self.network(self.channels_last(image * mask), mask).float())
        dropped = 1 - mask
        loss = torch.sum((output - image) ** 2 * dropped) / dropped.sum().clamp(min=1)
        loss.backward()
        self.optimizer.step()
        self.recent_losses.append(loss.item())

    def after_step(self, progress: float) -> None:
        """One more prediction into the ensemble when one is due (at most one a step, so a timed run catches up)."""
        due = sum(progress + 1e-9 >= threshold for threshold in self.prediction_due)
        if self.ensemble_count < due:
            with torch.inference_mode():
                prediction = self.predict()
            self.ensemble_sum = prediction.clone() if self.ensemble_sum is None else self.ensemble_sum + prediction
            self.ensemble_count += 1

    def report(self) -> tuple[float, torch.Tensor]:
        """Mean loss on the dropped pixels over the last steps; the ensemble mean (or one prediction before it)."""
        mse = sum(self.recent_losses) / max(len(self.recent_losses), 1)
        self.recent_losses.clear()
        if self.ensemble_count:
            return mse, self.ensemble_sum / self.ensemble_count
        return mse, self.predict()
