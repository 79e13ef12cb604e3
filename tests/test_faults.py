"""The fault suite: bad input and faults through the CLI, as a user meets them.

Every case must answer with exit status 2 (130/143 for signals), exactly one line on stderr that starts with
``error:`` and names the file or argument, no traceback, and no result file created or changed.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.engine.models import create_model

REPO, FILE = "yuhuan-wu/LRFormer-Models", "lrformer-t-160k_ade20k_46.7.pth"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time; huggingface_hub's own download cache (hf/,
    where a cut download waits to be resumed) is its business, lrbench's converted weights (home/) are not."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "hf"
    }


def fails_cleanly(args: list[str], *fragments: str, root: Path, code: int = 2, state: str | None = None) -> str:
    """Run the CLI; assert the one-line error contract and that nothing under ``root`` changed (except the resume
    ``state`` file an eval that stopped part-way keeps on purpose)."""
    before = snapshot(root)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert r.stdout == ""
    after = snapshot(root)
    if state is not None:
        assert after.pop(state, None) is not None, f"{state} was not saved"
    assert after == before, "a file was created or changed"
    return lines[0]


@pytest.fixture
def work(tmp_path, monkeypatch, synth, randomize, save_mmengine):
    """A synthetic ADE20K set, a random official-format LRFormer-T checkpoint and an isolated cache/cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LRBENCH_ZOO", raising=False)
    synth(tmp_path / "data", "ade20k", n=4, sizes=((64, 96),))
    save_mmengine(randomize(create_model("lrformer-t"), seed=1), tmp_path / "t.pth")
    return tmp_path


def eval_args(work: Path, *extra: str, ckpt: str = "t.pth") -> list[str]:
    return [
        "eval",
        "lrformer-t",
        "--data-root",
        str(work / "data"),
        "--checkpoint",
        str(work / ckpt),
        "--workers",
        "0",
        *extra,
    ]


# ---------------------------------------------------------------- arguments (answered before any work)
ARGUMENT_CASES = [
    (["eval", "lrformer-t", "--dataset", "ade", "--data-root", "."], ["--dataset", "'ade' is not one of"]),
    (["speed", "lrformer-t", "--device", "gpu"], ["--device", "'gpu' is not one of"]),
    (["eval", "lrformer-t", "--data-root", ".", "--device", "gpu"], ["--device"]),
    (["flops", "lrformer-t", "--num-classes", "-5"], ["--num-classes"]),
    (["flops", "lrformer-t", "--num-classes", "0"], ["--num-classes"]),
    (["models", "--family", "lrformr"], ["--family", "'lrformr' is not one of"]),
    (["zoo", "list", "--family", "lrformr"], ["--family"]),
    (["zoo", "list", "--dataset", "ade"], ["--dataset"]),
    (["speed", "lrformer-t", "--dtype", "fp8"], ["--dtype"]),
    (["eval", "lrformer-t", "--protocol", "mss", "--data-root", "."], ["--protocol"]),
    (["eval", "lrformer-t", "--data-root", ".", "--limit", "0"], ["--limit"]),
    (["flops", "lrformer-t", "--shape", "512"], ["--shape"]),
    (["eval", "lrformer-t"], ["Missing option '--data-root'"]),
    (["lrformer-t"], ["No such command 'lrformer-t'"]),
]


@pytest.mark.parametrize("args,fragments", ARGUMENT_CASES, ids=[" ".join(a[:3]) for a, _ in ARGUMENT_CASES])
def test_argument_errors(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = fails_cleanly(args, *fragments, root=tmp_path)
    assert line.endswith("-h`)")  # says where the help is


@pytest.mark.slow
def test_argument_errors_answer_at_once():
    """A real process, as the user runs it: the answer comes before torch is even imported (how fast that is, is
    measured in benchmarks/reading_commands.py, not asserted here: a loaded machine would break any bound)."""
    args = ["eval", "x", "--dataset", "ade", "--data-root", "."]
    r = subprocess.run([sys.executable, "-m", "lrbench", *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--dataset" in r.stderr
    assert _torch_imported_by(args) is False


def _torch_imported_by(args: list[str], cwd=None) -> bool:
    """Whether running the CLI with ``args`` imports torch (in a fresh interpreter)."""
    code = "import sys; from lrbench.cli import app; sys.argv = ['lrbench', *sys.argv[1:]]\n"
    code += "try:\n    app()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd)
    return r.stdout.strip().splitlines()[-1] == "True"


NO_MODEL_NEEDED = [
    (["flops", "lrformer-q"], "unknown model or zoo entry 'lrformer-q'; did you mean lrformer-t"),
    (["eval", "lrformr-s_ade20k", "--data-root", "."], "unknown model or zoo entry 'lrformr-s_ade20k'; did you mean"),
    (["zoo", "info", "segformer-b0_ade"], "unknown zoo entry 'segformer-b0_ade'; did you mean segformer-b0_ade20k"),
    (["zoo", "pull", "lrformer-t_ade20k", "--sha256", "xyz"], "--sha256 must be 64 hexadecimal digits, got 'xyz'"),
    (["speed", "lrformer-t-plus", "--shape", "500", "500"], "multiples of 32 (its test protocol zero-pads"),
    (["flops", "lrformer-t", "--shape", "16", "16"], "--shape must be two sizes H W of at least 32 pixels"),
    (["predict", "lrformer-x", "a.jpg", "--out", "p"], "unknown model or zoo entry 'lrformer-x'"),
    (["flops", "lrformer-t", "--num-classes", "0"], "--num-classes"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,fragment", NO_MODEL_NEEDED, ids=[" ".join(a[:3]) for a, _ in NO_MODEL_NEEDED])
def test_errors_that_need_no_model_answer_before_torch(args, fragment, tmp_path):
    """A real process: names, shapes and checksums are checked before torch is imported (< 1 s when idle:
    benchmarks/reading_commands.py)."""
    r = subprocess.run([sys.executable, "-m", "lrbench", *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    assert _torch_imported_by(args, cwd=tmp_path) is False


# ---------------------------------------------------------------- names, files and values
def test_unknown_names(work):
    fails_cleanly(["flops", "lrformer-q"], "unknown model or zoo entry 'lrformer-q'; did you mean", root=work)
    fails_cleanly(["zoo", "info", "lrformer-x_ade20k"], "unknown zoo entry 'lrformer-x_ade20k'", root=work)
    fails_cleanly(
        ["flops", "lrformer-t", "--shape", "16", "16"], "--shape must be two sizes H W of at least 32", root=work
    )
    fails_cleanly(
        ["speed", "lrformer-t", "--dtype", "fp16", "--device", "cpu"], "--dtype fp16 needs --device cuda", root=work
    )


def test_sha256_is_checked_before_any_network(work, hub):
    fails_cleanly(
        ["zoo", "pull", "lrformer-t_ade20k", "--sha256", "xyz"], "--sha256 must be 64 hexadecimal digits", root=work
    )
    assert hub.requests == []


def test_dataset_and_entry_mismatches(work, synth):
    synth(work / "data", "cityscapes", n=1)
    fails_cleanly(
        ["eval", "lrformer-t_ade20k", "--dataset", "cityscapes", "--data-root", "data"],
        "zoo entry lrformer-t_ade20k is for ade20k, not cityscapes",
        root=work,
    )
    fails_cleanly(
        ["eval", "lrformer-t", "--dataset", "cityscapes", "--data-root", "data"],
        "no released weights for lrformer-t on cityscapes: pass --checkpoint FILE",
        root=work,
    )
    fails_cleanly(
        eval_args(work)[:3] + ["nowhere", "--checkpoint", "t.pth"], "--data-root nowhere: folder not found", root=work
    )
    fails_cleanly(eval_args(work, ckpt="missing.pth"), "--checkpoint", "missing.pth: file not found", root=work)


def test_checkpoint_faults(work, save_mmengine):
    save_mmengine(create_model("lrformer-t", num_classes=19), work / "t19.pth")
    line = fails_cleanly(eval_args(work, ckpt="t19.pth"), "t19.pth", root=work)
    assert "the checkpoint's head has 19 classes, the model 150" in line and "--dataset cityscapes" in line
    assert "num_classes=" not in line  # not a flag eval has
    save_mmengine(create_model("lrformer-s"), work / "s.pth")
    fails_cleanly(
        eval_args(work, ckpt="s.pth"), "s.pth", "looks like lrformer-s with 150 classes, not lrformer-t", root=work
    )
    (work / "text.pth").write_text("hello")
    fails_cleanly(eval_args(work, ckpt="text.pth"), "text.pth: not a PyTorch checkpoint", root=work)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    torch.save({"state_dict": {}, "meta": Evil()}, work / "evil.pth")
    line = fails_cleanly(eval_args(work, ckpt="evil.pth"), "evil.pth: refused: the file asks to run code", root=work)
    assert "weights_only=False" not in line and not (work / "PWNED").exists()


def test_output_faults(work):
    (work / "file.txt").write_text("x")
    fails_cleanly(eval_args(work, "--out", "file.txt/r.json"), "--out file.txt/r.json: cannot write there", root=work)
    fails_cleanly(
        ["flops", "lrformer-t", "--out", "file.txt"], "--out file.txt already exists; pass --overwrite", root=work
    )
    fails_cleanly(
        ["convert", "lrformer-t", "t.pth", "out.bin"], "out.bin: the output must be a .safetensors file", root=work
    )


def test_dataset_faults(work):
    ann = sorted((work / "data/ADEChallengeData2016/annotations/validation").glob("*.png"))
    ann[0].rename(work / "moved.png")
    fails_cleanly(eval_args(work), "ADE_val_00000000.jpg: no annotation", root=work)
    (work / "moved.png").rename(ann[0])
    img = sorted((work / "data/ADEChallengeData2016/images/validation").glob("*.jpg"))[2]
    img.write_bytes(img.read_bytes()[:40])  # truncated
    fails_cleanly(
        eval_args(work, "--out", "r.json"),
        "ADE_val_00000002.jpg: unreadable image",
        "--skip-bad",
        root=work,
        state="r.json.state.pt",
    )  # the two images before it are kept for --resume


def test_report_faults(work):
    res = work / "res"
    res.mkdir()
    (res / "a.json").write_text(json.dumps({"kind": "eval", "model": "m", "dataset": "ade20k"}))
    fails_cleanly(
        ["report", "--results", "res", "--out", "R.md"], "res/a.json: a eval result without protocol", root=work
    )
    (res / "a.json").write_text("{")
    fails_cleanly(["report", "--results", "res", "--out", "R.md"], "a.json: not valid JSON", root=work)
    fails_cleanly(["report", "--results", "none", "--out", "R.md"], "--results none: folder not found", root=work)


# ---------------------------------------------------------------- settings that name a file or folder
def test_settings_that_name_a_file_fail_loudly(work, monkeypatch):
    """Every environment variable and option that names a file or folder: a missing, wrong-kind or malformed target
    is one line naming it and exit 2, never a silent fall-back to the default (a pinned run must stay pinned)."""
    (work / "afile").write_text("x")
    (work / "empty").mkdir()
    (work / "bad.yaml").write_text("models: [unclosed")
    cases = [
        ("LRBENCH_ZOO", "nope.yaml", ["zoo", "list"], "LRBENCH_ZOO=nope.yaml: not found; create it with"),
        ("LRBENCH_ZOO", "empty", ["zoo", "info", "lrformer-t_ade20k"], "LRBENCH_ZOO=empty: is not a file"),
        ("LRBENCH_ZOO", "nope.yaml", ["flops", "lrformer-t"], "LRBENCH_ZOO=nope.yaml: not found"),
        ("LRBENCH_ZOO", "bad.yaml", ["zoo", "list"], "bad.yaml: not valid YAML"),
        ("LRBENCH_RECIPES", "nowhere", ["zoo", "list"], "LRBENCH_RECIPES=nowhere: not found; point it at a folder"),
        ("LRBENCH_RECIPES", "empty", ["zoo", "list"], "empty: holds no recipe .yaml files"),
        ("LRBENCH_HOME", "afile", ["zoo", "lock"], "LRBENCH_HOME=afile: is not a folder"),
        ("LRBENCH_HOME", "no/such/home", ["zoo", "lock"], "LRBENCH_HOME=no/such/home: its parent folder does not"),
        ("HF_HUB_CACHE", "afile", ["zoo", "pull", "lrformer-t_ade20k"], "HF_HUB_CACHE=afile: is not a folder"),
        ("HF_HOME", "afile", ["zoo", "pull", "lrformer-t_ade20k"], "HF_HOME=afile: is not a folder"),
        (
            "LRBENCH_URL_MIRROR",
            "mirror.local/openmmlab",
            ["zoo", "pull", "segformer-b0-mmseg_ade20k"],
            "LRBENCH_URL_MIRROR=mirror.local/openmmlab: not an http(s) URL",
        ),
    ]
    for var, value, args, fragment in cases:
        with monkeypatch.context() as m:
            if var == "HF_HOME":
                m.delenv("HF_HUB_CACHE")
            m.setenv(var, value)
            fails_cleanly(args, fragment, root=work)
    # options
    (work / "home").mkdir()
    (work / "home" / "resolved.json").write_text("{not json")  # the remembered pins: never ignored
    fails_cleanly(["zoo", "lock"], "home/resolved.json: the remembered weight resolutions cannot be read", root=work)
    (work / "home" / "resolved.json").unlink()
    fails_cleanly(eval_args(work, ckpt="missing.pth"), "--checkpoint", "missing.pth: file not found", root=work)
    fails_cleanly(
        ["eval", "lrformer-t", "--data-root", "nodata", "--checkpoint", "t.pth"], "nodata", "not found", root=work
    )
    fails_cleanly(["convert", "lrformer-t", "missing.pth", "o.safetensors"], "missing.pth: file not found", root=work)
    fails_cleanly(["compare", "missing.json", "missing.json"], "missing.json", root=work)
    fails_cleanly(["data", "check", "ade20k", "--data-root", "nodata"], "nodata", root=work)
    fails_cleanly(
        ["predict", "lrformer-t", "nothing", "--checkpoint", "t.pth", "--out", "p"], "nothing: no such file", root=work
    )
    fails_cleanly(["reproduce", "--evals-only", "--data-root", "nodata", "--out", "R.md"], "nodata", root=work)


# ---------------------------------------------------------------- resume
def test_resume_faults_say_what_differs(work):
    args = eval_args(work, "--out", "r.json")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    line = fails_cleanly(
        args + ["--resume", "--protocol", "ms"], "r.json holds a finished result of a different run", root=work
    )
    assert "protocol: ss → ms" in line and "--overwrite" in line
    line = fails_cleanly(args + ["--resume", "--corruption", "fog", "--severity", "2"], "different run", root=work)
    assert "corruption: None → ['fog', 2]" in line  # a clean result is not continued as a corrupted one
    fails_cleanly(args, "r.json already exists; pass --overwrite", root=work)
    # an interrupted run whose image list then changed
    (work / "r.json").unlink()
    torch.save({"fingerprint": {"n": 4}, "areas": {}, "done": [], "skipped": []}, work / "r.json.state.pt")
    fails_cleanly(args, "r.json.state.pt: an interrupted run can be continued; pass --resume", root=work)
    line = fails_cleanly(
        args + ["--resume", "--limit", "3"],
        "r.json.state.pt: saved by a different run",
        "the image list changed: 4 → 3 images",
        root=work,
    )
    assert line.endswith("replace --resume with --overwrite")


# ---------------------------------------------------------------- the hub
def test_hub_faults(work, hub, mmengine_bytes, randomize):
    data = mmengine_bytes(randomize(create_model("lrformer-t"), seed=2))
    fails_cleanly(["zoo", "pull", "lrformer-t_ade20k"], f"{REPO}/{FILE}@main does not exist on the hub", root=work)
    hub.add(REPO, FILE, data)
    hub.fail_with = 500
    before = len(hub.requests)
    fails_cleanly(["zoo", "pull", "lrformer-t_ade20k"], "answered HTTP 500", root=work)
    assert len(hub.requests) - before <= 2  # one answer is enough: no retries (huggingface_hub's take 25 s)
    hub.fail_with, hub.cut_after = None, 1000
    fails_cleanly(["zoo", "pull", "lrformer-t_ade20k"], "lrformer-t_ade20k: cannot download", root=work)
    hub.cut_after = None
    fails_cleanly(["zoo", "pull", "lrformer-t_ade20k", "--sha256", "0" * 64], "checksum mismatch", root=work)


@pytest.mark.slow
def test_no_network_answers_within_seconds(work):
    """HF_ENDPOINT points at a closed local port (see conftest): the hub cannot be reached."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "lrbench", "zoo", "pull", "lrformer-t_ade20k"],
        capture_output=True,
        text=True,
        cwd=work,
        env=os.environ | {"HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert time.perf_counter() - t0 < 25  # retrying would add 25 s to the start-up; the margin is for a loaded machine
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "is not in the cache and the hub cannot be reached" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- signals
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_eval_then_resume_is_identical(sig, tmp_path, synth, randomize, save_mmengine):
    """A real process killed mid-eval; ``--resume`` finishes with the same areas as an uninterrupted run."""
    from lrbench.engine.evaluate import evaluate
    from lrbench.settings import EvalSettings

    synth(tmp_path / "data", "ade20k", n=6, sizes=((64, 96),))
    save_mmengine(randomize(create_model("segformer-b0"), seed=1), tmp_path / "b0.pth")
    ref = evaluate(
        EvalSettings(
            "segformer-b0",
            dataset="ade20k",
            data_root=tmp_path / "data",
            checkpoint=str(tmp_path / "b0.pth"),
            workers=0,
        )
    )
    args = [
        sys.executable,
        "-m",
        "lrbench",
        "eval",
        "segformer-b0",
        "--data-root",
        "data",
        "--checkpoint",
        "b0.pth",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        "r.json",
        "--save-every",
        "0",
    ]
    # The fourth image is a named pipe nobody writes to: the run blocks there, after saving the state of three
    # images, however fast the machine is -- so the signal always lands mid-eval.
    fourth = tmp_path / "data/ADEChallengeData2016/images/validation/ADE_val_00000003.jpg"
    image = fourth.read_bytes()
    fourth.unlink()
    os.mkfifo(fourth)
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "r.json.state.pt"
    deadline = time.time() + 120  # only a hung process waits this long
    while proc.poll() is None and time.time() < deadline:
        if state.exists() and len(torch.load(state, weights_only=True)["done"]) == 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before reaching the pipe"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), err
    if sig == signal.SIGTERM:
        assert err.strip().splitlines()[-1] == "terminated; continue with the same command and --resume"
    assert state.exists() and not (tmp_path / "r.json").exists()
    assert len(torch.load(state, weights_only=True)["done"]) == 3
    fourth.unlink()
    fourth.write_bytes(image)
    r = subprocess.run(args + ["--resume"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["areas"] == ref["areas"] and res["mIoU"] == ref["mIoU"]
