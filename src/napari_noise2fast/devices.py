"""Choosing the compute device: ``"auto"`` means CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a device.

    Raises
    ------
    ValueError
        If the name is not a device, or names one this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif not isinstance(device, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'mps' or a torch.device, got {device!r}")
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            resolved = torch.device(name)
        except RuntimeError as error:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}"
            ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but Apple MPS is not available on this machine")
    if resolved.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    return resolved


def _amx_available() -> bool:
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def fast_dtype(device: torch.device) -> torch.dtype:
    """The lower precision worth using on ``device``, or float32 where none pays off.

    bfloat16 on CUDA GPUs that support it and on CPUs with AMX tiles (oneDNN runs
    bfloat16 convolutions there several times faster); float32 elsewhere, since
    without hardware support bfloat16 is emulated and slower.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and _amx_available():
        return torch.bfloat16
    return torch.float32
