"""The settings of one evaluation, declared once: :class:`EvalSettings` is what :func:`lrbench.engine.evaluate.evaluate` takes,
and ``lrbench eval``'s options are made from its fields (type, default, help), so an option exists in one place.

Importable without torch, like the checks below it: the CLI builds and checks settings, model and zoo entry names
(with a did-you-mean), ``--shape`` rules and ``--sha256`` formats before any heavy import, so such errors are
answered at once. The library raises the same messages from the same functions.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .datasets import DATASETS
from .errors import UnknownNameError, UsageError
from .fileio import data_dir, env_path, read_yaml
from .names import (
    ARCHITECTURES,
    CORRUPTIONS,
    DEVICES,
    DTYPES,
    FAMILIES,
    MODES,
    MS_MERGES,
    PROTOCOLS,
    SEVERITY_RANGE,
    SIZE_DIVISOR,
)

Dataset = Literal[tuple(DATASETS)]  # type: ignore[valid-type]
Device = Literal[("auto", *DEVICES)]  # type: ignore[valid-type]
Dtype = Literal[DTYPES]  # type: ignore[valid-type]
Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]
Mode = Literal[MODES]  # type: ignore[valid-type]
Merge = Literal[MS_MERGES]  # type: ignore[valid-type]
AUTO_OUT = "results/eval/{model}_{dataset}_{protocol}.json"  # the CLI's default --out


def option(default, help: str, flag: str | None = None, cli_default=None, **typer_kw) -> Any:
    """A settings field that is also a CLI option: ``help``, its ``flag`` (default ``--field-name``), a different
    default on the command line (``cli_default``) and extra typer arguments (``min``...)."""
    meta = {"help": help, "flag": flag, "typer": typer_kw}
    if cli_default is not None:
        meta["cli_default"] = cli_default
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EvalSettings:
    """Everything ``lrbench eval`` can be told. ``model`` is a zoo entry or architecture name (or, from Python, a
    model object with ``recipe``); ``recipe`` is Python-only."""

    model: Any = field(metadata={"help": "Architecture (lrformer-s) or zoo entry (lrformer-s_ade20k).", "argument": 1})
    data_root: str = option("", "Folder with the dataset's standard layout.", flag="--data-root", required=True)
    dataset: Optional[Dataset] = option(None, "Default: the zoo entry's (else ade20k).")
    checkpoint: Optional[str] = option(None, "Local weights (default: the zoo's).")
    protocol: Protocol = option("ss", "ss (single scale) | ms (6 scales + flip).")
    mode: Optional[Mode] = option(None, "Default: the recipe's.")
    merge: Optional[Merge] = option(
        None,
        "ms: softmax = mean of the views' probabilities (mmseg 0.x and 1.x), logits = mean of the outputs as they are "
        "(detectron2's Mask2Former scores). Default: the recipe's library's.",
        flag="--ms-merge",
    )
    limit: Optional[int] = option(None, "Only the first N images (a partial run).", min=1)
    batch_size: int = option(1, "Images per batch; images of equal size go through the model together.", min=1)
    workers: int = option(2, "DataLoader worker processes.", min=0)
    device: Device = option("cpu", "auto = cuda when available, else cpu.", cli_default="auto")
    dtype: Dtype = option("fp32", "Autocast dtype (fp16 needs CUDA).")
    amp: bool = option(False, "Autocast (fp16 on CUDA, bf16 on CPU); the earlier spelling of --dtype.")
    channels_last: bool = option(False, "Pass channels-last inputs.")
    compile: bool = option(False, "torch.compile the model (compile time recorded apart).")
    out: Optional[str] = option(
        None, "Result JSON ({model}, {dataset}, {protocol} are filled in).", cli_default=AUTO_OUT
    )
    resume: bool = option(False, "Continue an interrupted run of the same --out (robust: --out-dir).")
    overwrite: bool = option(False, "Replace an existing --out and its state (robust: --out-dir's results).")
    state_every: int = option(50, "Save the resume state at least every this many images.", min=1)
    state_seconds: float = option(
        60.0, "Save the resume state at least every this many seconds.", flag="--save-every", min=0
    )
    skip_bad: bool = option(False, "Skip broken files (listed in the result).")
    corruption: Optional[str] = option(
        None, "Evaluate on images corrupted by this imagecorruptions function (see `lrbench robust`)."
    )
    severity: Optional[int] = option(None, "Corruption severity 1..5 (with --corruption).")
    calibration: bool = option(
        False, "Also measure expected calibration error (15 bins) and write a reliability diagram beside --out."
    )
    recipe: Optional[dict] = field(default=None, metadata={"python_only": True})

    def check(self) -> EvalSettings:
        """Refuse what is wrong whatever the model and data (no torch needed); returns self."""
        for flag, value, allowed in (
            ("--protocol", self.protocol, PROTOCOLS),
            ("--ms-merge", self.merge or "softmax", MS_MERGES),  # None: the recipe's library's
            ("--mode", self.mode or "whole", MODES),
            ("--dtype", self.dtype, DTYPES),
            ("--device", self.device, ("auto", *DEVICES)),
        ):
            if value not in allowed:
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}, got '{self.dataset}'")
        if self.batch_size < 1 or self.workers < 0 or (self.limit is not None and self.limit < 1):
            raise UsageError("--batch-size and --limit must be >= 1 and --workers >= 0")
        if not self.data_root:
            raise UsageError("--data-root is required: the folder with the dataset's standard layout")
        if isinstance(self.model, str):
            check_model_name(self.model)
        check_corruption(self.corruption, self.severity)
        return self

    def out_path(self, dataset: str) -> str | None:
        """The result file: ``out`` with the CLI's default pattern filled in."""
        if self.out != AUTO_OUT:
            return self.out
        name = self.model if isinstance(self.model, str) else getattr(self.model, "name", "model")
        out = AUTO_OUT.format(model=name, dataset=dataset, protocol=self.protocol)
        return out.replace(".json", f"_{self.corruption}-{self.severity}.json") if self.corruption else out


# ----------------------------------------------------------------------------------------------------------------
# Checks that need no model (no torch): names, shapes, checksums
# ----------------------------------------------------------------------------------------------------------------
ZOO_FILE = data_dir("zoo") / "models.yaml"


def local_manifest(may_be_missing: bool = False) -> Path | None:
    """The local manifest ``$LRBENCH_ZOO`` names (None when unset). A set variable whose file is missing or
    unreadable is an error, never a silent fall-back to the shipped manifest: a pinned run that quietly stopped being
    pinned would measure other weights. ``may_be_missing``: the caller writes it (``zoo publish``): it may be missing if its folder exists."""
    fix = "create it with `lrbench zoo lock --out FILE` (or `zoo publish`), or unset LRBENCH_ZOO"
    return env_path("LRBENCH_ZOO", "file", fix, written=may_be_missing)


def zoo_names(local_may_be_missing: bool = False) -> dict[str, str]:
    """Zoo entry -> architecture, read from the manifests' YAML alone (the shipped one, then ``$LRBENCH_ZOO``); a
    manifest that is missing or unreadable raises here, one that is malformed adds nothing (the zoo reports it when
    loaded, naming the entry and field)."""
    out: dict[str, str] = {}
    local = local_manifest(local_may_be_missing)
    for path in [ZOO_FILE] + ([local] if local and local.exists() else []):
        try:
            models = read_yaml(path)["models"]
            out |= {n: str(e.get("arch")) for n, e in models.items() if isinstance(e, dict)}
        except (yaml.YAMLError, TypeError, KeyError, AttributeError):
            continue
    return out


def _did_you_mean(name: str, known, fallback: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else fallback


def unknown_model(name: str, zoo: dict | None = None) -> UnknownNameError:
    known = list(ARCHITECTURES) + list(zoo if zoo is not None else zoo_names())
    hint = _did_you_mean(name, known, "; see `lrbench models` and `lrbench zoo list`")
    return UnknownNameError(f"unknown model or zoo entry '{name}'{hint}")


def unknown_entry(name: str, zoo: dict | None = None) -> UnknownNameError:
    hint = _did_you_mean(name, zoo if zoo is not None else zoo_names(), "; see `lrbench zoo list`")
    return UnknownNameError(f"unknown zoo entry '{name}'{hint}")


def check_model_name(name: str) -> str:
    """The architecture ``name`` means (itself, or a zoo entry's), or UnknownNameError with close matches."""
    if name in ARCHITECTURES:
        return name
    zoo = zoo_names()
    if name in zoo:
        return zoo[name]
    raise unknown_model(name, zoo)


def check_entry_name(name: str, local_may_be_missing: bool = False) -> str:
    zoo = zoo_names(local_may_be_missing)
    if name not in zoo:
        raise unknown_entry(name, zoo)
    return name


def check_family(family: str | None) -> str | None:
    if family is not None and family not in FAMILIES:
        close = difflib.get_close_matches(family, list(FAMILIES), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UnknownNameError(f"--family must be one of {', '.join(FAMILIES)}, got '{family}'{hint}")
    return family


def list_models(family: str | None = None) -> list[str]:
    """Registered architecture names, optionally for one family (:data:`lrbench.names.FAMILIES`)."""
    check_family(family)
    return [n for n, f in ARCHITECTURES.items() if family is None or f == family]


def resolve_name(name: str) -> str:
    """Return ``name`` if it is a registered architecture, else raise with close matches."""
    if name in ARCHITECTURES:
        return name
    close = difflib.get_close_matches(name, list(ARCHITECTURES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lrbench models`"
    raise UnknownNameError(f"unknown model '{name}'{hint}")


def model_family(name: str) -> str:
    return ARCHITECTURES[resolve_name(name)]


def check_shape(shape, arch: str | None = None, divisor: int | None = None) -> tuple[int, int] | None:
    """``--shape H W``: two sides of at least 32 pixels, multiples of 32 for the Mask2Former models (``divisor``
    for a model object of no registered name)."""
    if shape is None:
        return None
    if len(shape) != 2 or min(int(s) for s in shape) < 32:
        raise UsageError(f"--shape must be two sizes H W of at least 32 pixels, got {list(shape)}")
    d = divisor or SIZE_DIVISOR.get(ARCHITECTURES.get(arch or "", ""), 1)
    if any(int(s) % d for s in shape):
        H, W = (-(-int(s) // d) * d for s in shape)
        raise UsageError(
            f"--shape {shape[0]} {shape[1]}: {arch or 'this model'} takes sides that are multiples of {d} (its test protocol "
            f"zero-pads images to them); use e.g. --shape {H} {W}"
        )
    return int(shape[0]), int(shape[1])


def check_corruption(name: str | None, severity: int | None) -> tuple[str, int] | None:
    """``--corruption`` and ``--severity`` together: one of the 16 corruptions and a severity the package takes."""
    if name is None and severity is None:
        return None
    if name is None or severity is None:
        raise UsageError("--corruption and --severity go together: pass both (e.g. --corruption fog --severity 3)")
    if name not in CORRUPTIONS:
        hint = _did_you_mean(name, CORRUPTIONS, "")
        raise UsageError(f"--corruption must be one of {', '.join(CORRUPTIONS)}, got '{name}'{hint}")
    lo, hi = SEVERITY_RANGE
    if not lo <= int(severity) <= hi:
        raise UsageError(f"--severity must be {lo}..{hi}, got {severity}")
    return name, int(severity)


def check_corruptions(names: list[str] | None) -> list[str] | None:
    """``--corruptions``: a subset of the 16 (each checked as ``--corruption``); None for all of them."""
    for name in names or []:
        check_corruption(name, SEVERITY_RANGE[0])
    return names


def check_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, got '{sha256}'")
    return sha256.lower()
