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
