"""Loading official and converted checkpoints safely (``weights_only=True`` or safetensors, never plain pickle).

Formats accepted by :func:`load_checkpoint`:
- mmengine ``.pth``: ``{'meta': ..., 'state_dict': ...}`` (what mmseg releases), ``{'model': ...}`` or a raw
  state dict; ``module.`` prefixes (DataParallel) are stripped.
- ``.safetensors`` (lrbench's cache format, and transformers' ``model.safetensors``).

This module knows file formats only. Which naming a state dict uses, and which architecture it belongs to, is each
model family's business (``lrbench.engine.models.load_weights`` converts, then calls :func:`match_state_dict` here with its
guess as the hint).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from ..datasets import DATASETS
from ..errors import CheckpointError
from ..fileio import atomic_write_bytes

StateDict = dict[str, torch.Tensor]
# Modules whose classes mmengine/mmseg training checkpoints keep in their metadata (HistoryBuffer, numpy scalars,
# OrderedDict...). They are loaded as inert stubs; any other global means the file wants to run code: refused.
_METADATA_MODULES = ("mmengine.", "mmcv.", "mmseg.", "mmdet.", "numpy.", "collections.", "_codecs.")


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

    return type(
        qualname.rsplit(".", 1)[-1],
        (),
        {"__init__": __init__, "__setstate__": __setstate__, "__call__": __call__, "__new__": object.__new__},
    )


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    # mmengine training checkpoints keep objects like HistoryBuffer or numpy scalars in 'message_hub'/'meta'.
    # They are irrelevant to the weights: allow-list each one as an inert stub and load again, still weights_only.
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    code = [name for name in unsafe if not name.startswith(_METADATA_MODULES)]
    if code:
        raise CheckpointError(
            f"{path}: refused: the file asks to run code while loading ({', '.join(code[:3])}); "
            f"lrbench never executes code from a checkpoint. Use the official file, or re-save "
            f"only its tensors (torch.save(model.state_dict(), ...)) where you trust it"
        )
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
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


# ----------------------------------------------------------------------------------------------------------------
# Matching
# ----------------------------------------------------------------------------------------------------------------
def _describe(model: nn.Module) -> str:
    name = getattr(model, "name", type(model).__name__)
    n = getattr(model, "num_classes", None)
    return f"{name} ({n} classes)" if n is not None else name


def _likely_cause(
    state: StateDict,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple, tuple]],
    guess: str | None,
    model: nn.Module,
) -> str:
    # classifier rows: K for a per-pixel classifier, K + 1 ("no object") for Mask2Former's cls_embed
    seg = [m for m in mismatched if "conv_seg" in m[0] or m[0].endswith("classifier.weight") or "cls_embed" in m[0]]
    if seg and len(seg) == len(mismatched) and not missing and not unexpected:
        extra = 1 if "cls_embed" in seg[0][0] else 0
        k, own_k = seg[0][1][0] - extra, seg[0][2][0] - extra
        fits = [name for name, spec in DATASETS.items() if spec.num_classes == k]
        where = f" (that is {' / '.join(fits)}: --dataset {fits[0]})" if fits else ""
        return f"the checkpoint's head has {k} classes, the model {own_k}: it was trained for another dataset{where}"
    if missing and not unexpected and not mismatched and all(k.startswith("decode_head.") for k in missing):
        return "the checkpoint holds a backbone only (e.g. ImageNet weights), not a segmentation model"
    if guess and guess.split(" ")[0] == getattr(model, "name", None):
        return f"the checkpoint looks like {guess}, but some of its keys are named differently: another export format"
    if guess:
        return f"the checkpoint looks like {guess}, not {getattr(model, 'name', 'this model')}: wrong variant"
    return "the checkpoint is for a different architecture or variant"


def match_state_dict(model: nn.Module, state: StateDict, source: str = "checkpoint", guess: str | None = None) -> None:
    """Strictly load ``state`` into ``model``; on any mismatch raise one CheckpointError describing it all.

    ``guess`` is the caller's idea of what the state dict is (e.g. "lrformer-s with 150 classes"), used in the message.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                f"{', ...' if len(unexpected) > 3 else ''})"
            )
        if mismatched:
            shown = ", ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched[:3])
            parts.append(f"{len(mismatched)} shape mismatches ({shown}{', ...' if len(mismatched) > 3 else ''})")
        cause = _likely_cause(state, missing, unexpected, mismatched, guess, model)
        raise CheckpointError(f"{source} does not fit {_describe(model)}: {'; '.join(parts)}. Likely cause: {cause}")
    model.load_state_dict(state, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def save_safetensors(state: StateDict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save a state dict as safetensors, atomically (tensors made contiguous, shared storage cloned)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, lambda tmp: save_file(clean, tmp, metadata=metadata))
