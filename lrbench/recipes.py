"""Recipes: one YAML file per model family x dataset in ``recipes/`` (test pipeline, class count, FLOPs shape)."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

from .fileio import data_dir

RECIPES_DIR = Path(os.environ.get("LRBENCH_RECIPES") or data_dir("recipes"))
REQUIRED = ("name", "family", "dataset", "num_classes", "test", "flops_shape")


@functools.lru_cache(maxsize=None)
def load_recipes() -> dict[str, dict]:
    """All recipes by name; each is validated for the keys every consumer relies on."""
    out = {}
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        r = yaml.safe_load(path.read_text())
        missing = [k for k in REQUIRED if k not in (r or {})]
        if missing:
            raise ValueError(f"{path}: recipe is missing {', '.join(missing)}")
        if r["name"] != path.stem:
            raise ValueError(f"{path}: recipe name '{r['name']}' must equal the file name '{path.stem}'")
        out[r["name"]] = r
    return out


def get_recipe(name: str) -> dict:
    recipes = load_recipes()
    if name not in recipes:
        raise KeyError(f"unknown recipe '{name}'; known: {', '.join(recipes)} (files in {RECIPES_DIR})")
    return recipes[name]


def default_recipe(model_name: str, dataset: str = "ade20k") -> dict:
    """The recipe a bare architecture name uses: its own (e.g. lrformer-l_ade20k) or its family's."""
    from .models import model_family

    recipes = load_recipes()
    for cand in (f"{model_name}_{dataset}", f"{model_family(model_name)}_{dataset}"):
        if cand in recipes:
            return recipes[cand]
    raise KeyError(f"no recipe for {model_name} on {dataset}; add recipes/{model_family(model_name)}_{dataset}.yaml")


def default_flops_shape(model_name: str, dataset: str = "ade20k") -> tuple[int, int]:
    return tuple(default_recipe(model_name, dataset)["flops_shape"])


def default_num_classes(model_name: str, dataset: str = "ade20k") -> int:
    return int(default_recipe(model_name, dataset)["num_classes"])
