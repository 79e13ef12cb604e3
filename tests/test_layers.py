"""The package's import structure: layers run one way (no circles) and the CLI starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "lrbench"
# Two layers: the reading layer (lrbench/*.py: never imports torch, directly or through another module) and the torch
# layer above it (lrbench/engine/). Inside each, tiers run one way: lower tiers never import higher ones; modules of
# one tier may import each other (acyclically).
READING = [
    {"lrbench.errors", "lrbench.names", "lrbench.classes", "lrbench.version"},
    {"lrbench.fileio", "lrbench.datasets", "lrbench.stats"},
    {"lrbench.results", "lrbench.sources", "lrbench.settings", "lrbench.layouts"},
    {"lrbench.recipes", "lrbench.robustness", "lrbench.analysis"},
    {"lrbench.zoo", "lrbench.claims"},
    {"lrbench.report"},
    {"lrbench.commands"},
]
ENGINE = [
    {
        "lrbench.engine",
        "lrbench.engine.metrics",
        "lrbench.engine.models.base",
        "lrbench.engine.devices",
        "lrbench.engine.corruptions",
    },
    {"lrbench.engine.checkpoint", "lrbench.engine.loader", "lrbench.engine.timing", "lrbench.engine.postprocess"},
    {
        "lrbench.engine.models.lrformer",
        "lrbench.engine.models.segformer",
        "lrbench.engine.models.upernet_swin",
        "lrbench.engine.models.mask2former",
        "lrbench.engine.models.lrformer_plus",
        "lrbench.engine.models.mask2former_swin",
        "lrbench.engine.models.mask2former_resnet",
        "lrbench.engine.models",
    },
    {"lrbench.engine.weights", "lrbench.engine.pipeline"},
    {"lrbench.engine.inference"},
    {"lrbench.engine.speed", "lrbench.engine.complexity", "lrbench.engine.evaluate"},
    {
        "lrbench.engine.measure",
        "lrbench.engine.predictions",
        "lrbench.engine.publish",
        "lrbench.engine.environment",
        "lrbench.engine.robust",
    },
    {"lrbench.engine.overlays"},
    {"lrbench.engine.api", "lrbench.engine.reproduce"},
    {"lrbench.engine.commands"},
]
TOP = [{"lrbench.cli", "lrbench.__main__", "lrbench"}]  # the CLI over both (the engine only when a command runs)
LAYERS = READING + ENGINE + TOP
READING_MODULES = set().union(*READING)


def import_graph() -> dict[str, set[str]]:
    """Module -> the lrbench modules it imports anywhere (function bodies included), from the source."""
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                deps |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("lrbench")}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


TORCH_LIKE = ("torch", "torchvision", "timm", "fvcore", "transformers", "safetensors.torch")


def direct_torch_imports() -> dict[str, set[str]]:
    """Module -> the torch-world packages it imports itself, anywhere (function bodies included)."""
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            found |= {n for n in names if any(n == t or n.startswith(t + ".") for t in TORCH_LIKE)}
        out[name] = found
    return out


def torch_through(graph: dict[str, set[str]], direct: dict[str, set[str]]) -> dict[str, list[str]]:
    """Reading module -> the first import chain by which it reaches torch (none for a clean module)."""
    bad = {}
    for start in sorted(READING_MODULES):
        seen, todo = {start}, [[start]]
        while todo:
            path = todo.pop(0)
            if direct[path[-1]]:
                bad[start] = path + sorted(direct[path[-1]])[:1]
                break
            for d in sorted(graph[path[-1]] - seen):
                seen.add(d)
                todo.append(path + [d])
    return bad


def test_the_reading_layer_never_imports_torch():
    assert torch_through(import_graph(), direct_torch_imports()) == {}


def test_a_reading_module_reaching_torch_is_caught():
    """The check above can fail: directly, or through another module."""
    graph, direct = import_graph(), direct_torch_imports()
    direct["lrbench.stats"] = {"torch"}
    graph["lrbench.zoo"].add("lrbench.engine.weights")
    bad = torch_through(graph, direct)
    assert bad["lrbench.stats"] == ["lrbench.stats", "torch"]
    assert bad["lrbench.zoo"][0] == "lrbench.zoo" and bad["lrbench.zoo"][-1].startswith("torch")
    assert "lrbench.report" in bad  # report -> ... -> stats


def test_layers_run_one_way():
    graph = import_graph()
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert set(graph) == set(rank), "every module has a layer"
    upward = [(a, b) for a, deps in graph.items() for b in deps if rank[b] > rank[a]]
    assert upward == []
    # and no circle inside a layer
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            assert state.get(d) != 1, f"import circle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_an_upward_import_is_caught(monkeypatch):
    """The check above can fail: a checkpoint module that imported the weights puller would be reported."""
    graph = import_graph()
    graph["lrbench.engine.checkpoint"].add("lrbench.engine.weights")
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert [(a, b) for a, deps in graph.items() for b in deps if rank[b] > rank[a]] == [
        ("lrbench.engine.checkpoint", "lrbench.engine.weights")
    ]


@pytest.mark.slow
def test_cli_imports_no_torch_and_help_is_fast():
    code = "import sys, lrbench.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = subprocess.run([sys.executable, "-m", "lrbench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reproduce" in r.stdout  # its speed: benchmarks/reading_commands.py


def _path_to_weights(args: list[str]) -> tuple[list[list[str]], int]:
    """Run ``lrbench ARGS`` in this process and record, each time weights are loaded into a model
    (``checkpoint.match_state_dict``), the lrbench modules on the call stack from the CLI down (consecutive frames of
    one module once); also count the calls of ``zoo.resolve``."""
    from typer.testing import CliRunner

    from lrbench.cli import app

    paths, resolves = [], [0]

    def profile(frame, event, arg):
        if event != "call":
            return
        module, name = frame.f_globals.get("__name__", ""), frame.f_code.co_name
        if module == "lrbench.zoo" and name == "resolve":
            resolves[0] += 1
        if module == "lrbench.engine.checkpoint" and name == "match_state_dict":
            stack, f = [], frame
            while f is not None:
                m = f.f_globals.get("__name__", "")
                if m.startswith("lrbench") and (not stack or stack[-1] != m):
                    stack.append(m)
                f = f.f_back
            paths.append(stack[::-1])

    sys.setprofile(profile)
    try:
        r = CliRunner().invoke(app, args)
    finally:
        sys.setprofile(None)
    assert r.exit_code == 0, r.output
    return paths, resolves[0]


def test_one_way_from_a_name_to_its_weights(tmp_path, hub, synth, randomize, mmengine_bytes):
    """`lrbench eval MODEL` reaches the loaded weights through at most 6 modules, each in a lower layer than its
    caller (never back up), and resolves the name once -- with a local checkpoint and with the zoo's weights."""
    from lrbench.engine.models import create_model

    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    data = mmengine_bytes(randomize(create_model("lrformer-t"), seed=1))
    (tmp_path / "t.pth").write_bytes(data)
    hub.add("yuhuan-wu/LRFormer-Models", "lrformer-t-160k_ade20k_46.7.pth", data)
    synth(tmp_path / "data", "ade20k", n=1, sizes=((64, 64),))
    base = ["eval", "lrformer-t", "--data-root", str(tmp_path / "data"), "--workers", "0", "--overwrite"]
    runs = {
        "checkpoint": base + ["--checkpoint", str(tmp_path / "t.pth"), "--out", str(tmp_path / "a.json")],
        "zoo, first pull": base + ["--out", str(tmp_path / "b.json")],
        "zoo, converted": base + ["--out", str(tmp_path / "c.json")],
    }
    for what, args in runs.items():
        paths, resolves = _path_to_weights(args)
        assert resolves == 1, what
        assert paths, what
        for path in paths:
            assert path[0] == "lrbench.cli" and path[-1] == "lrbench.engine.checkpoint", (what, path)
            assert len(path) <= 6, (what, path)
            assert all(rank[a] >= rank[b] for a, b in zip(path, path[1:])), (what, path)  # never back up


def test_architecture_facts_match_the_models():
    """`lrbench models` reads zoo/architectures.yaml (no model built); the file must say what the models are."""
    import yaml

    from lrbench.engine.models import architecture_facts
    from lrbench.zoo import ARCHITECTURES_FILE
    from lrbench.zoo import architecture_facts as shipped

    measured = architecture_facts()
    assert shipped() == measured, f"write this to {ARCHITECTURES_FILE}:\n" + yaml.safe_dump(
        {"architectures": measured}, sort_keys=False, default_flow_style=None
    )
