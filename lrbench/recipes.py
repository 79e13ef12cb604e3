"""Recipes: one YAML file per model family (or variant) x dataset in ``recipes/``: the test pipeline and the input
size the published FLOPs are counted at. Class counts and label conventions are the dataset's (``lrbench.datasets``)."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from .datasets import get_spec
from .errors import ConfigError, UnknownNameError, UsageError
from .fileio import data_dir, env_path, read_yaml
from .names import LIBRARIES, MS_MERGE
from .settings import model_family

REQUIRED = ("name", "family", "dataset", "test", "flops_shape")


def recipes_dir() -> Path:
    """``$LRBENCH_RECIPES`` (a folder of recipe files that replaces the shipped ones), else the shipped folder."""
    fix = "point it at a folder of recipe .yaml files (see recipes/), or unset LRBENCH_RECIPES"
    return env_path("LRBENCH_RECIPES", "dir", fix) or data_dir("recipes")


def load_recipes() -> dict[str, dict]:
    """All recipes by name; each is validated for the keys every consumer relies on."""
    return _load_recipes(recipes_dir())


@functools.cache
def _load_recipes(folder: Path) -> dict[str, dict]:
    out = {}
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ConfigError(f"{folder}: holds no recipe .yaml files; reinstall lrbench, or fix LRBENCH_RECIPES")
    for path in files:
        try:
            r = read_yaml(path)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        missing = [k for k in REQUIRED if k not in (r or {})]
        if missing:
            raise ConfigError(f"{path}: recipe is missing {', '.join(missing)}")
        if r["name"] != path.stem:
            raise ConfigError(f"{path}: recipe name '{r['name']}' must equal the file name '{path.stem}'")
        out[r["name"]] = r
    return out


def get_recipe(name: str) -> dict:
    recipes = load_recipes()
    if name not in recipes:
        raise UnknownNameError(f"unknown recipe '{name}'; known: {', '.join(recipes)} (files in {recipes_dir()})")
    return recipes[name]


def default_recipe(arch: str, dataset: str) -> dict:
    """The recipe an architecture uses on a dataset: its own (e.g. lrformer-l_ade20k) or its family's."""
    get_spec(dataset)
    recipes = load_recipes()
    family = model_family(arch)
    for cand in (f"{arch}_{dataset}", f"{family}_{dataset}"):
        if cand in recipes:
            return recipes[cand]
    have = sorted({r["dataset"] for r in recipes.values() if r["family"] == family})
    raise ConfigError(
        f"no test recipe for {arch} on {dataset} ({family} has recipes for {', '.join(have)}); "
        f"write recipes/{family}_{dataset}.yaml (see recipes/{family}_{have[0]}.yaml) or pick another "
        f"--dataset"
    )


def library_of(test: dict) -> str:
    """The library whose test pipeline a recipe's published numbers came from (``test.library``; mmseg if unsaid)."""
    lib = test.get("library", "mmseg")
    if lib not in LIBRARIES:
        raise UsageError(f"recipe test.library must be one of {', '.join(LIBRARIES)}, got '{lib}'")
    return lib


def default_merge(test: dict) -> str:
    """How the library of a recipe's ``test`` settings merges multi-scale views (mmseg: softmax, detectron2: as is)."""
    return MS_MERGE[library_of(test)]
