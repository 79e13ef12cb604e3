"""The reading layer in use: every command that only reads files (and every --help and argument error) runs without
importing torch, and tables piped to another program come whole."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from synth import write_eval_result

REPO = Path(__file__).resolve().parent.parent

# (argv, expected exit status): run in one fresh interpreter, which must never import torch.
HELP = [
    [],
    ["models"],
    ["flops"],
    ["speed"],
    ["claims"],
    ["eval"],
    ["predict"],
    ["compare"],
    ["report"],
    ["reproduce"],
    ["convert"],
    ["env"],
    ["zoo"],
    ["zoo", "list"],
    ["zoo", "info"],
    ["zoo", "pull"],
    ["zoo", "lock"],
    ["zoo", "publish"],
    ["data"],
    ["data", "check"],
]
ARGUMENT_ERRORS = [
    ["eval", "lrformer-q", "--data-root", "."],  # unknown model, did-you-mean
    ["eval", "lrformer-t", "--protocol", "xx"],
    ["eval", "lrformer-t_ade20k", "--dataset", "cityscapes", "--data-root", "."],
    ["flops", "lrformer-t-plus", "--shape", "500", "500"],  # not multiples of 32
    ["flops", "nope"],
    ["speed", "lrformer-t", "--shape", "16", "16"],
    ["predict", "lrformer-tt", "x.jpg", "--out", "o"],
    ["convert", "nope", "a.pth", "b.safetensors"],
    ["zoo", "info", "lrformer-t_ade2k"],
    ["zoo", "pull", "lrformer-t_ade20k", "--sha256", "abc"],
    ["zoo", "pull", "nope_ade20k"],
    ["zoo", "publish", "nope", "--checkpoint", "x", "--repo-id", "a/b"],
    ["zoo", "list", "--family", "lrformr"],
    ["models", "--family", "lrformr"],
    ["eval"],  # missing argument
    ["zoo", "lock"],  # nothing pulled with this $LRBENCH_HOME
    ["compare", "missing-a.json", "missing-b.json"],
    ["data", "check", "ade20k", "--data-root", "/nonexistent-lrbench"],
]


def run_without_torch(calls: list[tuple[list[str], int]], cwd: Path, env_home: Path) -> list[dict]:
    """Run ``lrbench ARGS`` for each call in one interpreter; return exit status and output per call, and fail if
    torch (or timm) was imported at any point."""
    script = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from lrbench.cli import app
        out = []
        for args in json.loads(sys.argv[1]):
            o, e = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
                try:
                    app(args, prog_name="lrbench")
                    code = 0
                except SystemExit as x:
                    code = x.code or 0
            out.append({"args": args, "code": code, "stdout": o.getvalue(), "stderr": e.getvalue()})
        heavy = sorted(m for m in ("torch", "timm", "torchvision", "fvcore") if m in sys.modules)
        print(json.dumps({"calls": out, "heavy": heavy}))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "LRBENCH_HOME": str(env_home), "HOME": str(env_home), "COLUMNS": "80"}
    r = subprocess.run(
        [sys.executable, "-c", script, json.dumps([a for a, _ in calls])],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["heavy"] == [], f"imported {res['heavy']}"
    for (args, code), got in zip(calls, res["calls"]):
        assert got["code"] == code, (args, got)
    return res["calls"]


@pytest.mark.slow
def test_help_and_argument_errors_never_import_torch(tmp_path):
    calls = [(h + ["--help"], 0) for h in HELP] + [(a, 2) for a in ARGUMENT_ERRORS]
    got = run_without_torch(calls, tmp_path, tmp_path / "home")
    for c in got[len(HELP) :]:
        assert c["stderr"].startswith("error: ") and c["stderr"].count("\n") == 1, c
        assert c["stdout"] == "", c
    by = {" ".join(c["args"]): c["stderr"] for c in got}
    assert "did you mean lrformer-t" in by["eval lrformer-q --data-root ."]
    assert "multiples of 32" in by["flops lrformer-t-plus --shape 500 500"]
    assert "--sha256 must be 64 hexadecimal digits" in by["zoo pull lrformer-t_ade20k --sha256 abc"]
    assert "nothing to lock" in by["zoo lock"]


@pytest.mark.slow
def test_reading_commands_never_import_torch_and_piped_tables_are_whole(tmp_path, synth):
    data = tmp_path / "data"
    synth(data, "ade20k", n=2, sizes=((32, 48),))
    rng = np.random.default_rng(0)
    union = rng.integers(50, 200, size=(20, 5))
    a = write_eval_result(tmp_path, "a", (union * 0.5).astype(np.int64), union)
    b = write_eval_result(tmp_path, "b", (union * 0.4).astype(np.int64), union)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "flops.json").write_text(
        (REPO / "results" / "flops" / "lrformer-t_512x512_150.json").read_text()
    )
    calls = [
        (["zoo", "list"], 0),
        (["zoo", "list", "--json"], 0),
        (["zoo", "list", "--dataset", "cityscapes", "--family", "segformer"], 0),
        (["zoo", "info", "segformer-b5-mmseg-640_ade20k"], 0),
        (["zoo", "info", "lrformer-t_ade20k", "--json"], 0),
        (["models"], 0),
        (["models", "--family", "lrformer", "--json"], 0),
        (["compare", str(a), str(b), "--json"], 0),
        (["report", "--results", "results", "--out", "R/RESULTS.md", "--plots", "R/plots"], 0),
        (
            ["data", "check", "ade20k", "--data-root", str(data), "--full"],
            0,
        ),  # 2 of 2,000: incomplete (a partial run), nothing bad
        (["data", "check", "ade20k", "--data-root", str(data), "--json"], 0),
    ]
    got = {" ".join(c["args"]): c for c in run_without_torch(calls, tmp_path, tmp_path / "home")}
    from lrbench.zoo import load_zoo

    # piped: the plain table holds every entry's whole name on one line, whatever the width
    lines = got["zoo list"]["stdout"].splitlines()
    assert lines[0].startswith("lrbench zoo") and lines[1].split()[:3] == ["name", "params", "GFLOPs"]
    names = [line.split()[0] for line in lines[2:]]
    assert names == list(load_zoo()) and max(len(x) for x in lines) > 80
    assert [e["name"] for e in json.loads(got["zoo list --json"]["stdout"])] == list(load_zoo())
    sub = got["zoo list --dataset cityscapes --family segformer"]["stdout"].splitlines()[2:]
    assert [s.split()[0] for s in sub] == [
        n for n, e in load_zoo().items() if e.dataset == "cityscapes" and e.family == "segformer"
    ]
    info = got["zoo info segformer-b5-mmseg-640_ade20k"]["stdout"]
    assert "download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b5_640x640_160k_ade20k/" in info
    assert json.loads(got["zoo info lrformer-t_ade20k --json"]["stdout"])["arch"] == "lrformer-t"
    # what the peer tests recorded (zoo/verified.yaml), shown per entry
    assert "verified" in info and "mmsegmentation 1.2.2: strict load" in info.replace("\n", " ")
    rows = json.loads(got["models --family lrformer --json"]["stdout"])
    assert [r["name"] for r in rows] == ["lrformer-t", "lrformer-s", "lrformer-b", "lrformer-l", "lrformer-xl"]
    # the same rows the models report when built (zoo/architectures.yaml; checked against the models in test_layers)
    flops = json.loads((REPO / "results" / "flops" / "lrformer-t_512x512_150.json").read_text())
    assert rows[0]["params"] == flops["params"]
    assert json.loads(got[f"compare {a} {b} --json"]["stdout"])["diff"] == pytest.approx(10.0, abs=0.5)
    assert (tmp_path / "R" / "RESULTS.md").is_file()
    check = json.loads(got[f"data check ade20k --data-root {data} --json"]["stdout"])
    assert check["pairs"] == 2 and check["bad"] == []
