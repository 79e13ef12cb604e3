"""Readability and hygiene checks: every dotted ``lrbench.…`` reference in the package's docstrings (modules, classes,
functions) and in the README names something that exists -- a module, or an attribute reached from one -- so a
reference to a function that moved fails here, naming the docstring it is in; and the end-of-session check that the
suite leaves the checkout unmodified can see a change."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import lrbench

REF = re.compile(r"(?<![\w/.])lrbench(?:\.[A-Za-z_]\w*)+")
ROOT = Path(__file__).resolve().parent.parent


def resolves(ref: str) -> bool:
    """Import the longest importable module prefix of ``ref``, then follow the rest as attributes."""
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def docstrings():
    """(where, text) for every module, class and function docstring of lrbench, and the README."""
    for info in pkgutil.walk_packages(lrbench.__path__, "lrbench."):
        if info.name == "lrbench.__main__":  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        yield info.name, module.__doc__ or ""
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{info.name}.{name}", obj.__doc__ or ""
                for mname, m in vars(obj).items() if inspect.isclass(obj) else ():
                    if inspect.isfunction(m):
                        yield f"{info.name}.{name}.{mname}", m.__doc__ or ""
    yield "README.md", (ROOT / "README.md").read_text()


def test_every_dotted_reference_resolves():
    refs = {(where, ref.rstrip(".")) for where, text in docstrings() for ref in REF.findall(text)}
    assert len(refs) > 20  # the check sees the references (the pattern matches what the docstrings write)
    broken = sorted(f"{where}: {ref}" for where, ref in refs if not resolves(ref))
    assert not broken, "docstring references that do not resolve:\n" + "\n".join(broken)


def test_the_check_can_fail():
    assert resolves("lrbench.engine.inference.load") and resolves("lrbench.stats")
    assert not resolves("lrbench.inference.load") and not resolves("lrbench.engine.evaluate.predict_views")


def test_the_tree_check_sees_a_written_file(tmp_path, monkeypatch):
    """conftest's end-of-session check (the suite must leave the checkout unmodified) notices a new or edited file."""
    import subprocess

    import conftest

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    monkeypatch.setattr(conftest, "REPO", tmp_path)
    before = conftest._tree_state()
    (tmp_path / "a.txt").write_text("b")
    edited = conftest._tree_state()
    (tmp_path / "new.txt").write_text("n")
    assert len({before, edited, conftest._tree_state()}) == 3


def test_the_public_api_is_visible():
    """dir(lrbench) lists the lazy API, and each name is the engine's function (type checkers read the
    TYPE_CHECKING import of lrbench/__init__.py, which names the same)."""
    import ast

    from lrbench.engine import api

    assert set(lrbench.__all__) - {"__version__"} <= set(dir(lrbench))
    for name in set(lrbench.__all__) - {"__version__"}:
        assert getattr(lrbench, name) is getattr(api, name)
    tree = ast.parse((ROOT / "lrbench" / "__init__.py").read_text())
    typed = {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "engine.api" for a in n.names
    }
    assert typed == set(lrbench.__all__) - {"__version__"}
