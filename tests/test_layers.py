"""The package's import structure: layers run one way (no circles) and the CLI starts without torch."""

import ast
import subprocess
import sys
import time
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lrbench"
# Lower layers never import higher ones. Modules of one layer may import each other (acyclically).
LAYERS = [
    {"lrbench.errors", "lrbench.names", "lrbench.classes", "lrbench.version", "lrbench.metrics", "lrbench.models.base"},
    {"lrbench.fileio", "lrbench.datasets", "lrbench.stats"},
    {"lrbench.checkpoint", "lrbench.data", "lrbench.results", "lrbench.sources", "lrbench.settings"},
    {
        "lrbench.models.lrformer",
        "lrbench.models.segformer",
        "lrbench.models.upernet_swin",
        "lrbench.models.mask2former",
        "lrbench.models.lrformer_plus",
        "lrbench.models.mask2former_swin",
        "lrbench.models.mask2former_resnet",
        "lrbench.models",
    },
    {"lrbench.recipes"},
    {"lrbench.zoo"},
    {"lrbench.inference"},
    {"lrbench.speed", "lrbench.complexity", "lrbench.evaluate", "lrbench.claims"},
    {"lrbench.predictions", "lrbench.report", "lrbench.publish", "lrbench.environment"},
    {"lrbench.api", "lrbench.reproduce"},
    {"lrbench.commands"},
    {"lrbench.cli", "lrbench.__main__", "lrbench"},
]


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
    """The check above can fail: a checkpoint module that imported the zoo would be reported."""
    graph = import_graph()
    graph["lrbench.checkpoint"].add("lrbench.zoo")
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    assert [(a, b) for a, deps in graph.items() for b in deps if rank[b] > rank[a]] == [
        ("lrbench.checkpoint", "lrbench.zoo")
    ]


def test_cli_imports_no_torch_and_help_is_fast():
    code = "import sys, lrbench.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "lrbench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reproduce" in r.stdout
    assert time.perf_counter() - t0 < 2.0  # < 0.5 s on an idle 2-core machine; generous under a busy test run


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
        if module == "lrbench.checkpoint" and name == "match_state_dict":
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
    from lrbench.models import create_model

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
            assert path[0] == "lrbench.cli" and path[-1] == "lrbench.checkpoint", (what, path)
            assert len(path) <= 6, (what, path)
            assert all(rank[a] >= rank[b] for a, b in zip(path, path[1:])), (what, path)  # never back up
