"""An in-place ReLU that is fast on bfloat16 CPU tensors (a drop-in for ``torch.nn.ReLU(inplace=True)``).

On a CPU, PyTorch's ReLU and its backward on a bfloat16 tensor widen every element to float32 and back,
which costs more than the work: in a ``fast`` Noise2Fast step at 256x256 in bfloat16 (Intel Xeon with AMX,
one thread), the ReLUs' forward and backward took a third of the step. A 16-bit float is negative exactly
where the same 16 bits read as an ``int16`` are negative (the sign is the top bit in both), and zero is all
bits clear in both, so the ReLU is a ``clamp_min(0)`` of the ``int16`` view and its backward passes the
gradient's bits where the output's ``int16`` view is positive: the same values and gradients, with no
conversion. Only a NaN with its sign bit set differs (it becomes 0; PyTorch's ReLU keeps it).
Other dtypes and devices run PyTorch's ReLU.
"""

from __future__ import annotations

import torch
from torch import nn


def _bits_fit(x: torch.Tensor) -> bool:
    return x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu"


class _Int16ReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x.view(torch.int16).clamp_min_(0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # autograd hands ``grad`` in the output's dtype
        (output,) = ctx.saved_tensors
        passed = torch.ops.aten.threshold_backward(grad.view(torch.int16), output.view(torch.int16), 0)
        return passed.view(grad.dtype)


def relu_(x: torch.Tensor) -> torch.Tensor:
    """ReLU in place, through the ``int16`` view for 16-bit floats on the CPU, else :func:`torch.relu_`."""
    return _Int16ReLU.apply(x) if _bits_fit(x) else torch.relu_(x)


class ReLU(nn.Module):
    """``torch.nn.ReLU(inplace=True)`` computed by :func:`relu_`; no parameters, so saved weights are the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_(x)

    def extra_repr(self) -> str:
        return "inplace=True"
