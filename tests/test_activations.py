"""The int16-view ReLU gives PyTorch's ReLU's values and gradients bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from napari_noise2fast.activations import ReLU, relu_
from napari_noise2fast.methods.noise2fast import noise2fast_network
from napari_noise2fast.methods.noise2self import dncnn
from napari_noise2fast.methods.noise2void import UNet

HALF = [torch.bfloat16, torch.float16]
SPECIAL = [0.0, -0.0, 1e-40, -1e-40, 1e-3, -1e-3, 65504.0, -65504.0, float("inf"), -float("inf")]


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().view(torch.int16)


@pytest.mark.parametrize("dtype", HALF)
@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, width=32) | st.sampled_from(SPECIAL), min_size=1, max_size=300))
def test_values_and_gradients_equal_torch_relu(dtype, values):
    source = torch.tensor(values, dtype=torch.float32).to(dtype)
    gradient = torch.linspace(-3, 3, len(values)).to(dtype)
    ours, theirs = source.clone().requires_grad_(), source.clone().requires_grad_()
    mine = relu_(ours * 1)  # a non-leaf, as a convolution's output
    reference = torch.relu(theirs * 1)
    mine.backward(gradient)
    reference.backward(gradient)
    # equal as numbers (PyTorch's ReLU may keep -0.0 where ours gives +0.0; equal in every later sum)
    assert torch.equal(mine.detach(), reference.detach())
    assert torch.equal(bits(mine[mine != 0]), bits(reference[reference != 0]))
    assert torch.equal(bits(ours.grad), bits(theirs.grad))


@pytest.mark.parametrize("dtype", HALF)
def test_in_place_as_nn_relu_and_without_autograd(dtype):
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]).to(dtype)
    with torch.inference_mode():
        y = x.clone()
        assert relu_(y) is y
    assert y.tolist() == [0.0, 0.0, 0.0, 0.5, 2.0]
    z = torch.tensor([-1.0, 3.0], dtype=torch.float32)  # other dtypes: torch.relu_, in place too
    assert ReLU()(z) is z and z.tolist() == [0.0, 3.0]


def swapped(network: nn.Module) -> nn.Module:
    """The same network with every ReLU module put back to ``nn.ReLU(inplace=True)``."""
    for name, child in network.named_children():
        if isinstance(child, ReLU):
            setattr(network, name, nn.ReLU(inplace=True))
        else:
            swapped(child)
    return network


@pytest.mark.parametrize("make", [lambda: noise2fast_network(16), lambda: UNet(8, 1), lambda: dncnn(4, 16)],
                         ids=["noise2fast", "noise2void-unet", "noise2self"])
@pytest.mark.parametrize("precision", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_networks_train_bit_for_bit_as_with_torch_relu(make, precision, layout):
    torch.manual_seed(0)
    ours = make().to(memory_format=layout)
    assert any(isinstance(m, ReLU) for m in ours.modules())
    theirs = swapped(make().to(memory_format=layout))
    theirs.load_state_dict(ours.state_dict())
    assert not any(isinstance(m, ReLU) for m in theirs.modules())
    rng = np.random.default_rng(0)
    source = torch.from_numpy(rng.random((2, 1, 32, 32), dtype=np.float32)).contiguous(memory_format=layout)
    target = torch.from_numpy(rng.random((2, 1, 32, 32), dtype=np.float32))
    outputs = []
    for network in (ours, theirs):
        optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
        for _ in range(3):  # three steps: the second and third start from weights the gradients moved
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32):
                output = network(source)
            F.mse_loss(output.float(), target).backward()
            optimizer.step()
        with torch.inference_mode(), torch.autocast("cpu", dtype=precision, enabled=precision != torch.float32):
            outputs.append(network(source).float())
    assert torch.equal(outputs[0], outputs[1])
    for (name, mine), (_, reference) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(mine, reference), name
