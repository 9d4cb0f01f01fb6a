"""Trained models kept in a file and used again: on the next recording of the same experiment, to predict
with (no training) or to start training from.

A model file holds tensors and plain values only (no code): the weights of each model of the job (one per
channel of a recording, else the last plane's), the intensities each was normalised with, the method and
its settings, the file format's version and the package's. It is written with :func:`torch.save` and read
with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so a
crafted file cannot run code when loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT = "napari-noise2fast model"
# the layout of the file; a file of another version is refused (its weights may mean something else)
FORMAT_VERSION = 1
MODEL_USES = ("predict", "warm")


@dataclass
class SavedModel:
    """A job's trained models (see the module).

    ``states``: each channel group's weights (a state dict on the CPU); ``ranges``: the intensities each
    group's planes were normalised from (low, high); ``settings``: the method's settings, as its
    ``check_params`` resolves them."""

    method: str
    settings: dict
    states: list[dict[str, torch.Tensor]]
    ranges: list[tuple[float, float]]
    package_version: str
    format_version: int = FORMAT_VERSION


def save_model(path, model: SavedModel, overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` (the name as given, no suffix added); an existing file is replaced only with
    ``overwrite`` (ValueError otherwise), and never left half written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"model path {str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"model file {str(path)!r} exists; pass overwrite=True to replace it")
    payload = {
        "format": FORMAT,
        "format_version": model.format_version,
        "package_version": model.package_version,
        "method": model.method,
        "settings": json.dumps(model.settings),
        "ranges": [[float(low), float(high)] for low, high in model.ranges],
        "states": [{name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
                   for state in model.states],
    }
    write_torch(path, payload)
    return path


def write_torch(path: Path, payload) -> None:
    """``torch.save`` of ``payload`` (tensors and plain values) to ``path``, never left half written."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def load_model(path, method: str | None = None) -> SavedModel:
    """The model saved at ``path``; ValueError (naming ``model``) for a missing file, one that is not a model
    file (a crafted pickle among them: nothing in it runs), a file of another format version, or a model of
    another method than ``method``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"model {str(path)!r} is a folder; give the model file")
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ValueError(f"model {str(path)!r} cannot be read: {error.strerror or error}") from error
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"model {str(path)!r} is not a napari-noise2fast model file (or holds more than tensors "
                         f"and plain values, which are not loaded): {str(error).splitlines()[0]}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"model {str(path)!r} is not a napari-noise2fast model file")
    version, package = payload.get("format_version"), payload.get("package_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"model {str(path)!r} was saved by napari-noise2fast {package} in model format {version}; "
                         f"this version reads format {FORMAT_VERSION} only: train the model again")
    try:
        saved = SavedModel(method=payload["method"], settings=json.loads(payload["settings"]),
                           states=list(payload["states"]), ranges=[tuple(r) for r in payload["ranges"]],
                           package_version=package, format_version=version)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"model {str(path)!r} is an incomplete napari-noise2fast model file ({error!r})") from error
    if method is not None and saved.method != method:
        raise ValueError(f"model {str(path)!r} is a {saved.method} model; it cannot be used by {method}")
    return saved


def digest(model: SavedModel) -> str:
    """A short fingerprint of the model's weights (a resumed run must go on with the same model)."""
    hasher = hashlib.sha256()
    for state in model.states:
        for name, tensor in sorted(state.items()):
            hasher.update(name.encode())
            hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()[:16]
