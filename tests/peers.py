"""The field's own running code as test oracles: mmsegmentation 1.2.2 (+ mmengine, mmcv-lite, mmdet 3.3.0).

mmseg's ``__init__`` imports ``mmcv.ops``, whose compiled ``mmcv._ext`` is absent from mmcv-lite: :func:`mmseg` puts a
stub module in its place whose functions raise (SegFormer, Swin/UperNet and mmcv's pure-PyTorch deformable attention
never call them). Models are built from the config files that ship inside the mmsegmentation wheel
(``mmseg/.mim/configs``); which config an openmmlab checkpoint URL belongs to is read from the configs' own
``metafile.yaml`` (``Weights:`` -> ``Config:``). Nothing here is lrbench code.
"""

from __future__ import annotations

import functools
import sys
import types
from pathlib import Path

import yaml


@functools.cache
def mmseg():
    """Import mmseg with ``mmcv._ext`` stubbed; returns the module (and registers mmseg's modules)."""
    if "mmcv._ext" not in sys.modules:
        ext = types.ModuleType("mmcv._ext")

        def __getattr__(name):  # any compiled op: present as a name, fails if ever called
            if name.startswith("__"):
                raise AttributeError(name)

            def missing(*args, **kwargs):
                raise RuntimeError(f"mmcv._ext.{name} is a test stub (compiled mmcv ops are not installed)")

            return missing

        ext.__getattr__ = __getattr__
        sys.modules["mmcv._ext"] = ext
    import mmseg as m
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return m


def configs_dir() -> Path:
    return Path(mmseg().__file__).parent / ".mim" / "configs"


@functools.cache
def config_of_url() -> dict[str, Path]:
    """openmmlab checkpoint URL -> the config file that made it (every family's metafile.yaml)."""
    out = {}
    for meta in configs_dir().glob("*/metafile.yaml"):
        for m in yaml.safe_load(meta.read_text()).get("Models") or []:
            if m.get("Weights") and m.get("Config"):
                out[m["Weights"]] = configs_dir().parent / m["Config"]
    return out


def load_config(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def build_model(cfg):
    """mmseg's segmentor from a config, in eval mode, without pretrained backbone downloads."""
    import torch
    from mmseg.registry import MODELS

    model_cfg = cfg.model.copy()
    model_cfg.pop("pretrained", None)
    bb = model_cfg.get("backbone", {})
    bb.pop("init_cfg", None)
    bb.pop("pretrained", None)
    model_cfg["init_cfg"] = None
    model = MODELS.build(model_cfg)  # PyTorch's default init; tests set their own seeded weights
    return model.eval().to(torch.float32)
