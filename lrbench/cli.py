"""The ``lrbench`` command line: a thin Typer layer over the Python API (each command calls one function)."""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .fileio import now_iso, write_json

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Reproduce LRFormer and its baselines: zoo, eval, flops, speed, claims, report.")
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError

    return (UserError, CheckpointError, FileNotFoundError, FileExistsError, KeyError, ValueError)


def cli_command(fn: Callable) -> Callable:
    """Turn known user errors into one clear line on stderr and a non-zero exit (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            err_console.print(f"[bold red]error:[/] {escape(str(msg))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            hint = "; continue with the same command and --resume" if fn.__name__ == "eval_cmd" else ""
            err_console.print(f"[bold red]interrupted[/]{hint}", highlight=False)
            raise typer.Exit(130) from None
    return wrapper


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"lrbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    pass


@app.command("models")
@cli_command
def models_cmd(family: Optional[str] = typer.Option(None, help="Only this family (lrformer, segformer, upernet-swin)."),
               json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered architectures with parameter counts and stage layout."""
    from .models import describe_models

    rows = describe_models(family)
    if json_out:
        print_json(rows)
        return
    table = Table(title="lrbench architectures (150 classes)")
    for col in ("name", "family", "params M", "stage dims", "depths", "stride"):
        table.add_column(col, justify="right" if col in ("params M", "stride") else "left",
                         no_wrap=col in ("name", "params M"), overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["family"], f"{r['params'] / 1e6:.2f}", "/".join(map(str, r["dims"])),
                      "/".join(map(str, r["depths"])), str(r["output_stride"] or "-"))
    console.print(table)


@app.command("flops")
@cli_command
def flops_cmd(model: str = typer.Argument(..., help="Architecture name (see `lrbench models`)."),
              shape: Optional[tuple[int, int]] = typer.Option(None, "--shape", help="Input H W (default: recipe)."),
              dataset: str = typer.Option("ade20k", help="Recipe dataset for default shape / classes."),
              num_classes: Optional[int] = typer.Option(None, help="Classes (default: the recipe's)."),
              out: Optional[str] = typer.Option(None, help="Also write the result JSON here (atomically)."),
              json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Parameters and GFLOPs (fvcore, 1 multiply-add = 1 FLOP, backbone + decode head)."""
    from .complexity import count_flops
    from .models import resolve_name
    from .recipes import default_flops_shape, default_num_classes

    resolve_name(model)
    res = count_flops(model, shape or default_flops_shape(model, dataset),
                      num_classes or default_num_classes(model, dataset))
    res["dataset"] = dataset
    if out:
        write_json(out, {"kind": "flops", "date": now_iso(), **res})
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{model} @ {res['shape'][0]}x{res['shape'][1]}, {res['num_classes']} classes")
    table.add_column("part")
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_row("backbone", f"{res['params_backbone'] / 1e6:.2f}", f"{res['gflops_backbone']:.2f}")
    table.add_row("decode head", f"{res['params_head'] / 1e6:.2f}", f"{res['gflops_head']:.2f}")
    table.add_row("total", f"{res['params'] / 1e6:.2f}", f"{res['gflops']:.2f}", style="bold")
    console.print(table)
    console.print("by operator: " + ", ".join(f"{k} {v:.2f}" for k, v in res["by_operator"].items()))
    if res["unsupported_ops"]:
        console.print(f"[yellow]not counted (unsupported): {res['unsupported_ops']}[/]")


@app.command("speed")
@cli_command
def speed_cmd(model: str = typer.Argument(..., help="Architecture name (see `lrbench models`)."),
              shape: Optional[tuple[int, int]] = typer.Option(None, "--shape", help="Input H W (default: recipe)."),
              batch_size: int = typer.Option(1, "--batch-size"),
              dtype: str = typer.Option("fp32", help="fp32 | fp16 | bf16 (autocast)."),
              channels_last: bool = typer.Option(False, "--channels-last"),
              compile: bool = typer.Option(False, "--compile", help="torch.compile the model first."),
              device: str = typer.Option("cuda" if _cuda() else "cpu", help="cpu | cuda"),
              warmup: int = typer.Option(3, help="Warm-up iterations (discarded)."),
              iters: int = typer.Option(10, help="Timed iterations."),
              out: Optional[str] = typer.Option(None, help="Also write the result JSON here (atomically)."),
              json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Forward latency (median, IQR) and images/s, with the device and settings it was measured with."""
    from .models import resolve_name
    from .recipes import default_flops_shape
    from .speed import measure_speed

    resolve_name(model)
    res = measure_speed(model, shape or default_flops_shape(model), batch_size, dtype, channels_last, compile,
                        device, warmup, iters)
    if out:
        write_json(out, {"kind": "speed", "date": now_iso(), **res})
    if json_out:
        print_json(res)
        return
    console.print(f"{model} @ {res['shape'][0]}x{res['shape'][1]}  batch {batch_size}  {dtype}"
                  f"{'  channels_last' if channels_last else ''}{'  compiled' if compile else ''}")
    console.print(f"device: {res['device_name']}  torch {res['torch']}  warmup {warmup}  iters {iters}")
    mem = f"  peak memory {res['peak_mem_mb']:.0f} MiB" if res["peak_mem_mb"] is not None else ""
    console.print(f"[bold]{res['median_ms']:.1f} ms[/] median (IQR {res['iqr_ms']:.1f} ms)  "
                  f"{res['images_per_s']:.2f} images/s{mem}")


@app.command("claims")
@cli_command
def claims_cmd(plot: Optional[str] = typer.Option(None, help="Write the cost-vs-resolution plot (PNG) here."),
               out: Optional[str] = typer.Option(None, help="Write the result JSON here (atomically)."),
               device: str = typer.Option("cpu", help="cpu | cuda (latency of the attention layers)."),
               quick: bool = typer.Option(False, "--quick", help="Fewer sizes (256-1024) for a fast look."),
               json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The LRSA scaling study: attention and whole-model cost vs resolution, with a verdict per claim."""
    from .claims import QUICK_SIZES, plot_claims, run_claims

    if device.startswith("cuda") and not _cuda():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    with progress_bar(transient=True) as bar:
        task = bar.add_task("claims", total=None, status="")
        res = run_claims(QUICK_SIZES if quick else None, device=device,
                         progress=lambda d, n, what: bar.update(task, completed=d, total=n, description=what))
    if out:
        write_json(out, {"kind": "claims", "date": now_iso(), **res})
    if plot:
        plot_claims(res, plot)
    if json_out:
        print_json(res)
        return
    table = Table(title=f"LRFormer claims, measured on {res['meta']['device_name']}")
    for col in ("claim", "verdict", "evidence"):
        table.add_column(col, overflow="fold")
    for c in res["claims"]:
        table.add_row(c["claim"], f"[{'green' if c['verdict'] == 'holds' else 'red'}]{c['verdict']}[/]", c["evidence"])
    console.print(table)
    if plot:
        console.print(f"plot: {plot}")


@app.command("eval")
@cli_command
def eval_cmd(model: str = typer.Argument(..., help="Zoo entry (lrformer-s_ade20k) or architecture (lrformer-s)."),
             dataset: str = typer.Option(..., help="ade20k | coco-stuff | cityscapes"),
             data_root: str = typer.Option(..., "--data-root", help="Folder with the dataset's standard layout."),
             checkpoint: Optional[str] = typer.Option(None, help="Local weights (default: the zoo's)."),
             protocol: str = typer.Option("ss", help="ss (single scale) | ms (6 scales + flip)."),
             mode: Optional[str] = typer.Option(None, help="whole | slide (default: the recipe's)."),
             ms_merge: str = typer.Option("logits", "--ms-merge", help="ms: average logits (SegFormer / mmseg 0.x) "
                                          "or softmax (mmseg 1.x SegTTAModel)."),
             limit: Optional[int] = typer.Option(None, help="Only the first N images."),
             batch_size: int = typer.Option(1, "--batch-size", help="Images per loader batch."),
             workers: int = typer.Option(2, help="DataLoader worker processes."),
             device: str = typer.Option("cuda" if _cuda() else "cpu", help="cpu | cuda"),
             amp: bool = typer.Option(False, "--amp", help="Autocast (fp16 on CUDA, bf16 on CPU)."),
             out: Optional[str] = typer.Option(None, help="Result JSON (default results/<model>_<dataset>_<protocol>.json)."),
             resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same --out."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
             skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip broken files (listed in the result)."),
             json_out: bool = typer.Option(False, "--json", help="Print the result JSON.")) -> None:
    """mIoU on a validation set with the standard protocol (resumable; distributed under torchrun)."""
    from .evaluate import evaluate

    out = out or f"results/{model}_{dataset}_{protocol}.json"
    quiet = int(os.environ.get("RANK", "0")) > 0  # under torchrun only rank 0 reports
    with progress_bar(transient=True, disable=quiet) as bar:
        task = bar.add_task(f"{model} on {dataset}", total=None, status="")
        seen = {"t0": None, "miou": ""}

        def update(done: int, total: int, summary: dict) -> None:
            now = time.perf_counter()
            seen["t0"] = seen["t0"] or (now, done)
            if summary.get("mIoU") is not None:
                seen["miou"] = f"mIoU {summary['mIoU']:.2f}  "
            dt = now - seen["t0"][0]
            rate = f"{(done - seen['t0'][1]) / dt:.2f} img/s" if dt > 0 else ""
            bar.update(task, completed=done, total=total, status=seen["miou"] + rate)

        res = evaluate(model, dataset, data_root, checkpoint=checkpoint, protocol=protocol, mode=mode, limit=limit,
                       batch_size=batch_size, workers=workers, device=device, amp=amp, out=out, resume=resume,
                       overwrite=overwrite, skip_bad=skip_bad, merge=ms_merge, progress=update)
    if quiet:
        return
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{model} on {dataset} ({res['num_images']} images, {protocol}, {res['mode']})")
    for col in ("class", "IoU", "Acc"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in res["per_class"]:
        if r["IoU"] is not None:
            table.add_row(r["class"], f"{r['IoU']:.2f}", _fmt(r["Acc"], ".2f"))
    console.print(table)
    console.print(f"[bold]mIoU {res['mIoU']:.2f}[/]  mAcc {_fmt(res['mAcc'], '.2f')}  aAcc {res['aAcc']:.2f}   "
                  f"({res['timings']['images_per_s']:.2f} images/s on {res['device_name']}) -> {out}")
    if res["skipped"]:
        console.print(f"[yellow]skipped {len(res['skipped'])} bad files (listed in {out})[/]")


@app.command("report")
@cli_command
def report_cmd(results: str = typer.Option("results", help="Folder of result JSON files."),
               out: str = typer.Option("RESULTS.md", help="Markdown report (a .csv is written beside it)."),
               plots: str = typer.Option("plots", help="Folder for the PNG plots.")) -> None:
    """Regenerate RESULTS.md (+ CSV and plots) from result files and the zoo's published numbers."""
    from .report import write_report

    paths = write_report(results, out, plots)
    console.print(f"wrote {paths['report']}, {paths['csv']} and {len(paths['plots'])} plots")


@app.command("reproduce")
@cli_command
def reproduce_cmd(data_root: Optional[str] = typer.Option(None, "--data-root", help="Datasets (enables the evals)."),
                  quick: bool = typer.Option(False, "--quick", help="ADE-sized FLOPs, fewer sizes and iterations."),
                  results: str = typer.Option("results", help="Folder for the result JSON files."),
                  out: str = typer.Option("RESULTS.md", help="The report."),
                  plots: str = typer.Option("plots", help="Folder for the PNG plots."),
                  device: str = typer.Option("cuda" if _cuda() else "cpu", help="cpu | cuda")) -> None:
    """The main job: params, FLOPs, the claims study, speed (and evals with --data-root) -> RESULTS.md."""
    from .report import reproduce

    t0 = time.perf_counter()
    with progress_bar(transient=True) as bar:
        task = bar.add_task("reproduce", total=None, status="")
        paths = reproduce(data_root, quick, results, out, plots, device,
                          progress=lambda what: bar.update(task, description=what))
    console.print(f"wrote {paths['report']} ({paths['csv']}, {len(paths['plots'])} plots) from {results}/ "
                  f"in {time.perf_counter() - t0:.0f} s")
    if not data_root:
        console.print("mIoU rows stay pending: run `lrbench reproduce --data-root PATH` with the datasets, or the "
                      "`lrbench eval` command shown in each row.")


@app.command("convert")
@cli_command
def convert_cmd(model: str = typer.Argument(..., help="Architecture (see `lrbench models`)."),
                checkpoint: str = typer.Argument(..., help="Official mmseg .pth, transformers .bin/.safetensors, ..."),
                out: str = typer.Argument(..., help="Output .safetensors with lrbench key names."),
                num_classes: int = typer.Option(150, help="Classes of the checkpoint's head."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file.")) -> None:
    """Convert a checkpoint to lrbench-named safetensors (checked strictly against the model first)."""
    from pathlib import Path

    from .checkpoint import save_safetensors
    from .models import create_model

    if not out.endswith(".safetensors"):
        raise UserError(f"{out}: the output must be a .safetensors file")
    if Path(out).exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    net = create_model(model, num_classes=num_classes, checkpoint=checkpoint)
    save_safetensors(net.state_dict(), out, metadata={"arch": model, "num_classes": str(num_classes),
                                                      "source": Path(checkpoint).name})
    console.print(f"{checkpoint} -> {out} ({model}, {num_classes} classes, {len(net.state_dict())} tensors)")


zoo_app = typer.Typer(no_args_is_help=True, help="Pretrained weights: list, inspect and pull zoo entries.")
app.add_typer(zoo_app, name="zoo")


def _fmt(v, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


@zoo_app.command("list")
@cli_command
def zoo_list_cmd(dataset: Optional[str] = typer.Option(None, help="ade20k | coco-stuff | cityscapes"),
                 family: Optional[str] = typer.Option(None, help="lrformer | segformer | upernet-swin"),
                 json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every zoo entry with its published numbers."""
    from dataclasses import asdict

    from .zoo import list_entries

    entries = list_entries(dataset, family)
    if json_out:
        print_json([asdict(e) for e in entries])
        return
    table = Table(title="lrbench zoo (published numbers; `lrbench zoo info NAME` for sources and files)")
    for col in ("name", "params M", "GFLOPs", "input", "mIoU ss", "mIoU ms", "weights"):
        table.add_column(col, justify="left" if col in ("name", "weights") else "right", no_wrap=col == "name")
    for e in entries:
        p = e.published
        w = "none known" if e.hub is None else ("hub" if e.hub.filename_verified else "hub, file name guessed")
        shape = "x".join(map(str, p.get("flops_shape") or [])) or "-"
        table.add_row(e.name, _fmt(p.get("params_m")), _fmt(p.get("gflops")), shape, _fmt(p.get("miou_ss")),
                      _fmt(p.get("miou_ms")), w)
    console.print(table)


@zoo_app.command("info")
@cli_command
def zoo_info_cmd(name: str = typer.Argument(..., help="Zoo entry, e.g. lrformer-s_ade20k."),
                 json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Everything the manifest knows about one entry, and where its converted weights are cached."""
    from dataclasses import asdict

    from .zoo import get_entry, weights_dir

    e = get_entry(name)
    info = asdict(e) | {"family": e.family, "cache": str(weights_dir(e.name))}
    if json_out:
        print_json(info)
        return
    table = Table(title=name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        table.add_row(k, "-" if v is None else str(v))
    console.print(table)


@zoo_app.command("pull")
@cli_command
def zoo_pull_cmd(name: str = typer.Argument(..., help="Zoo entry, e.g. lrformer-s_ade20k."),
                 revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
                 force: bool = typer.Option(False, "--force", help="Download and convert again."),
                 repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Override the hub repository."),
                 filename: Optional[str] = typer.Option(None, help="Override the file name in the repository."),
                 sha256: Optional[str] = typer.Option(None, help="Expected sha256 of the downloaded file."),
                 json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Download (HF cache), verify and convert weights to lrbench safetensors ($LRBENCH_HOME)."""
    from .zoo import pull

    res = pull(name, revision=revision, force=force, repo_id=repo_id, filename=filename, sha256=sha256)
    if json_out:
        print_json(res)
        return
    state = "already converted" if res["cached"] else "converted"
    console.print(f"{name}: {state} -> {res['path']}\n  source {res['source']}\n  sha256 {res['sha256']}")
    for n in res["notes"]:
        console.print(f"  note: {n}")


def progress_bar(transient: bool = False, disable: bool = False):
    """The rich progress bar every long command uses (on stderr, so --json output stays clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=err_console,
                    transient=transient, disable=disable)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
