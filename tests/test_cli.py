"""The command line as such: commands not covered elsewhere, conventions (-h, examples, choices), and the line between
a user error (one line, exit 2) and a bug (a traceback)."""

import json

import pytest
from typer.testing import CliRunner

import lrbench.claims
import lrbench.commands
import lrbench.engine.commands
import lrbench.engine.complexity
import lrbench.engine.measure
import lrbench.engine.reproduce
from lrbench.cli import app
from lrbench.names import FAMILIES


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_models_command():
    r = run("models", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["lrformer-s"]["dims"] == [64, 128, 320, 512] and rows["lrformer-s"]["output_stride"] == 8
    assert abs(rows["segformer-b2"]["params"] / 1e6 - 27.46) < 0.05
    assert {row["family"] for row in rows.values()} == set(FAMILIES)
    r = run("models", "--family", "upernet-swin")
    assert r.exit_code == 0 and "upernet-swin-l" in r.stdout and "lrformer" not in r.stdout


def measured_once(study: dict, calls: list):
    """run_claims standing in for itself: the session's study (tests/conftest.py), after recording how it was
    called (the measurements are checked in test_complexity; here the command's wiring is)."""

    def run_claims(sizes=None, device="cpu", **kw):
        calls.append((sizes, device))
        return study

    return run_claims


@pytest.mark.slow
def test_claims_command_on_small_sizes(tmp_path, monkeypatch, claims_study):
    calls = []
    monkeypatch.setattr(lrbench.engine.measure, "run_claims", measured_once(claims_study, calls))
    monkeypatch.setattr(lrbench.engine.commands, "run_claims", measured_once(claims_study, calls))
    r = run("claims", "--quick", "--out", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.output
    assert calls == [(lrbench.claims.QUICK_SIZES, "cpu")]  # --quick: the quick sizes, on the default device
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["kind"] == "claims" and [a["size"] for a in res["attention"][::3]] == [[128, 128], [256, 256]]
    verdicts = {c["claim"]: c["verdict"] for c in res["claims"]}
    assert verdicts["LRSA attention (QK^T, AV) FLOPs are constant in input resolution"] == "holds"
    assert "LRFormer claims, measured on" in r.stdout and "holds" in r.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    r = run("claims", "--quick", "--out", str(tmp_path / "c.json"))
    assert r.exit_code == 2 and "c.json already exists; pass --overwrite" in r.stderr


@pytest.mark.slow
def test_reproduce_command_writes_beside_out(tmp_path, monkeypatch, claims_study):
    """reproduce --out X writes X, X's results/ and plots/ and nothing in the current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(lrbench.engine.reproduce, "SPEED_MODELS", ("lrformer-t",))
    monkeypatch.setattr(
        lrbench.engine.complexity,
        "count_flops",
        lambda arch, shape, k: {"model": arch, "shape": list(shape), "num_classes": k, "params": 1e6, "gflops": 1.0},
    )
    calls = []
    monkeypatch.setattr(lrbench.engine.measure, "run_claims", measured_once(claims_study, calls))
    r = run("reproduce", "--quick", "--out", str(tmp_path / "out" / "R.md"), "--device", "cpu")
    assert calls == [(lrbench.claims.QUICK_SIZES, "cpu")]
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "cwd").iterdir()) == []
    assert (tmp_path / "out" / "R.md").read_text().startswith("# LRFormer reproduction results")
    speed = json.loads((tmp_path / "out/results/speed/lrformer-t_512x512_cpu.json").read_text())
    assert speed["kind"] == "speed" and speed["median_ms"] > 0
    assert (tmp_path / "out/plots/claims.png").is_file() and (tmp_path / "out/R.csv").is_file()


def test_help_conventions():
    for cmd in (
        ["models"],
        ["flops"],
        ["speed"],
        ["claims"],
        ["eval"],
        ["report"],
        ["reproduce"],
        ["convert"],
        ["zoo", "list"],
        ["zoo", "info"],
        ["zoo", "pull"],
    ):
        r = run(*cmd, "-h")
        assert r.exit_code == 0 and "Example: lrbench " + cmd[0] in r.stdout, cmd
    r = run("eval", "--help")  # fixed choices are listed (and completed by the shell)
    assert "--dataset <ade20k|coco-stuff|cityscapes>" in r.stdout and "--device <auto|cpu|cuda>" in r.stdout
    assert "--protocol <ss|ms>" in r.stdout and "--mode <whole|slide>" in r.stdout
    assert "--shape H W" in run("flops", "-h").stdout
    assert "--install-completion" in run("--help").stdout


def test_user_error_is_one_line_but_a_bug_shows_its_traceback(monkeypatch):
    r = run("flops", "lrformer-q")
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "error: unknown model or zoo entry 'lrformer-q'; did you mean lrformer-t, lrformer-s, lrformer-l?"
    ]

    def buggy(family):
        return {}["internal"]  # a bug inside a command: a KeyError that is not a user error

    monkeypatch.setattr(lrbench.commands, "models", buggy)
    r = run("models")
    assert r.exit_code == 1 and isinstance(r.exception, KeyError) and "error:" not in r.stderr


@pytest.mark.parametrize("name", ["lrformer-t_cityscapes", "lrformer-t"])
def test_flops_accepts_entries_and_architectures(name):
    r = run("flops", name, "--shape", "64", "128", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["model"] == "lrformer-t" and res["shape"] == [64, 128]
    assert res["num_classes"] == (19 if name.endswith("cityscapes") else 150)


@pytest.mark.slow
def test_env_offline_in_seconds(tmp_path):
    """`lrbench env --json`: versions, devices, the hub's answer and the caches, in < 10 s with no network."""
    import os
    import subprocess
    import sys
    import time

    env = os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9", "LRBENCH_HOME": str(tmp_path / "home")}
    (tmp_path / "home" / "downloads").mkdir(parents=True)
    (tmp_path / "home" / "downloads" / "x.pth").write_bytes(b"\0" * 1000)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lrbench", "env", "--json"], capture_output=True, text=True, env=env)
    assert time.monotonic() - t0 < 25 and r.returncode == 0, r.stderr  # the margin is for a loaded machine
    res = json.loads(r.stdout)
    assert res["versions"]["lrbench"] and res["versions"]["torch"] and res["versions"]["huggingface_hub"]
    assert res["hub"]["endpoint"] == "http://127.0.0.1:9" and res["hub"]["status"].startswith("unreachable")
    assert res["caches"]["lrbench_home"] == {"path": str(tmp_path / "home"), "bytes": 1000}
    assert res["cuda"]["available"] in (True, False)
