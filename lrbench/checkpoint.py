"""Loading official and converted checkpoints safely (``weights_only=True`` or safetensors, never plain pickle).

Formats accepted by :func:`load_checkpoint`:
- mmengine ``.pth``: ``{'meta': ..., 'state_dict': ...}`` (what mmseg releases), ``{'model': ...}`` or a raw
  state dict; ``module.`` prefixes (DataParallel) are stripped.
- ``.safetensors`` (lrbench's cache format, and transformers' ``model.safetensors``).
Per-family key converters (transformers / mmseg naming -> lrbench naming) are registered in ``CONVERTERS`` and picked
from the keys.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .fileio import atomic_write_bytes

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message is one user-facing line."""


# A converter maps a foreign state dict onto a model's own naming, or returns None if it does not apply.
# Each returns (converted state dict, notes such as "dropped 12 auxiliary_head keys").
Converter = Callable[[StateDict, nn.Module], "tuple[StateDict, list[str]] | None"]
CONVERTERS: list[Converter] = []


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
def _stub_class(qualname: str) -> type:
    """A harmless stand-in for a non-tensor class found in a checkpoint's metadata (e.g. mmengine's HistoryBuffer).

    It only records its constructor arguments and state: nothing from the file is ever executed.
    """
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # some pickles reduce through a function rather than a class
        return type(self)(*args, **kwargs)

    return type(qualname.rsplit(".", 1)[-1], (), {"__init__": __init__, "__setstate__": __setstate__,
                                                   "__call__": __call__, "__new__": object.__new__})


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    # mmengine training checkpoints keep objects like HistoryBuffer or numpy scalars in 'message_hub'/'meta'.
    # They are irrelevant to the weights: allow-list each one as an inert stub and load again, still weights_only.
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    stubs = [(_stub_class(name), name) for name in unsafe]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - one clear message whatever the unpickler disliked
        raise CheckpointError(f"{path}: cannot be read safely as a PyTorch checkpoint ({_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read the tensor state dict of a checkpoint file (see module docstring for the accepted formats)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({_first_line(e)})") from e
    try:
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/pickle errors of all kinds mean "not a checkpoint"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict found (expected 'state_dict', 'model' or a dict of tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# ----------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------
def convert_state_dict(state: StateDict, model: nn.Module) -> tuple[StateDict, list[str]]:
    """Convert foreign naming (transformers, mmseg) to the model's own; identity when no converter recognises it."""
    for convert in CONVERTERS:  # each recognises its own format from the keys and returns None otherwise
        out = convert(state, model)
        if out is not None:
            return out
    return state, []


def _describe(model: nn.Module) -> str:
    name = getattr(model, "name", type(model).__name__)
    n = getattr(model, "num_classes", None)
    return f"{name} ({n} classes)" if n is not None else name


def _likely_cause(model: nn.Module, state: StateDict, missing: list[str], unexpected: list[str],
                  mismatched: list[tuple[str, tuple, tuple]]) -> str:
    seg = [m for m in mismatched if "conv_seg" in m[0] or m[0].endswith("classifier.weight")]
    if seg and len(seg) == len(mismatched) and not missing and not unexpected:
        k = seg[0][1][0]
        return f"the checkpoint has {k} classes: pass num_classes={k}"
    if missing and not unexpected and not mismatched and all(k.startswith("decode_head.") for k in missing):
        return "the checkpoint holds a backbone only (e.g. ImageNet weights), not a segmentation model"
    from .models import guess_architecture  # local: models imports checkpoint lazily too

    guess = guess_architecture(state)
    if guess:
        return f"the checkpoint looks like {guess}, not {getattr(model, 'name', 'this model')}: wrong variant"
    return "the checkpoint is for a different architecture or variant"


def match_state_dict(model: nn.Module, state: StateDict, source: str = "checkpoint") -> None:
    """Strictly load ``state`` into ``model``; on any mismatch raise one CheckpointError describing it all."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        if mismatched:
            shown = ", ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched[:3])
            parts.append(f"{len(mismatched)} shape mismatches ({shown}{', ...' if len(mismatched) > 3 else ''})")
        cause = _likely_cause(model, state, missing, unexpected, mismatched)
        raise CheckpointError(f"{source} does not fit {_describe(model)}: {'; '.join(parts)}. Likely cause: {cause}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Load an official / transformers / lrbench checkpoint into ``model``; returns conversion notes.

    Strict by default: any missing, unexpected or mis-shaped key raises one :class:`CheckpointError` naming the
    first few of each and the likely cause (wrong variant or class count).
    """
    state, notes = convert_state_dict(read_state_dict(path), model)
    if strict:
        match_state_dict(model, state, source=str(path))
    else:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        model.load_state_dict(state, strict=False)
    return notes


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def save_safetensors(state: StateDict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically (tensors made contiguous, shared storage cloned)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, lambda tmp: save_file(clean, tmp, metadata=metadata))
