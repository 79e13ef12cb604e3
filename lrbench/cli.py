"""The ``lrbench`` command line: a thin Typer layer over the Python API (each command calls one function)."""
from __future__ import annotations

import functools
import json
import sys
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Reproduce LRFormer and its baselines: zoo, eval, flops, speed, claims, report.")
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError

    return (UserError, CheckpointError, FileNotFoundError, KeyError, ValueError)


def cli_command(fn: Callable) -> Callable:
    """Turn known user errors into one clear line on stderr and a non-zero exit (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _user_errors() as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            err_console.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def write_json(path: str, obj: object) -> None:
    """Write a result file atomically (readers never see a half-written file)."""
    from .checkpoint import atomic_write_bytes

    data = json.dumps(obj, indent=2) + "\n"
    atomic_write_bytes(path, lambda tmp: open(tmp, "w").write(data))


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
    for col in ("name", "family", "params (M)", "stage dims", "depths", "stride"):
        table.add_column(col, justify="right" if col in ("params (M)", "stride") else "left", no_wrap=True)
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
        write_json(out, {"kind": "flops", **res})
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
        write_json(out, {"kind": "speed", **res})
    if json_out:
        print_json(res)
        return
    console.print(f"{model} @ {res['shape'][0]}x{res['shape'][1]}  batch {batch_size}  {dtype}"
                  f"{'  channels_last' if channels_last else ''}{'  compiled' if compile else ''}")
    console.print(f"device: {res['device_name']}  torch {res['torch']}  warmup {warmup}  iters {iters}")
    mem = f"  peak memory {res['peak_mem_mb']:.0f} MiB" if res["peak_mem_mb"] is not None else ""
    console.print(f"[bold]{res['median_ms']:.1f} ms[/] median (IQR {res['iqr_ms']:.1f} ms)  "
                  f"{res['images_per_s']:.2f} images/s{mem}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
