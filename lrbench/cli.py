"""The ``lrbench`` command line: a thin Typer layer over :mod:`lrbench.commands` (the reading commands) and
:mod:`lrbench.engine.commands` (those that build or run a model): parse, call one function, render.

Importing this module does not import torch, and neither do the reading commands (``models``, ``zoo list|info|lock``,
``compare``, ``report``, ``data check``), ``--help`` or an argument error: the engine is imported only when an engine
command runs, after its arguments were checked. Tables go to a terminal as rich tables and anywhere else (a pipe, a
file) as whole, unwrapped plain rows. Errors: a :class:`~lrbench.errors.LrbenchError` or a bad argument prints one line
``error: ...`` on stderr and exits 2; Ctrl-C exits 130 and SIGTERM 143 (an eval saves its state first); anything
else is a bug and shows its traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import signal
import sys
import threading
import time
import typing
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors

from .errors import LrbenchError, Terminated
from .names import FAMILIES
from .settings import (
    Dataset,
    Device,
    Dtype,
    EvalSettings,
    Mode,
    Protocol,
    check_corruptions,
    check_entry_name,
    check_model_name,
    check_sha256,
    check_shape,
)
from .version import __version__

if typing.TYPE_CHECKING:
    from .zoo import Resolved

console = Console()
err_console = Console(stderr=True)

Family = Literal[FAMILIES]  # type: ignore[valid-type]
RESUME_HINT = {"eval": "; continue with the same command and --resume"}


def _notes(lines: list[str]) -> None:
    """One line each on stderr for what a command left out (it still succeeded)."""
    for line in lines:
        err_console.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


class LrbenchGroup(TyperGroup):
    """Turns user errors into one line and an exit status; leaves bugs their traceback."""

    def invoke(self, ctx) -> Any:
        try:
            return super().invoke(ctx)
        except LrbenchError as e:
            _error(str(e))
            raise typer.Exit(2) from None
        except (KeyboardInterrupt, Terminated) as e:
            what = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
            hint = RESUME_HINT.get(ctx.invoked_subcommand or "", "")
            err_console.print(f"[bold red]{what}[/]{hint}", highlight=False)
            raise typer.Exit(130 if isinstance(e, KeyboardInterrupt) else 143) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.ClickException as e:  # a bad argument: one line naming it, and where the help is
            where = f" (see `{e.ctx.command_path if getattr(e, 'ctx', None) else self._path(args)} -h`)"
            _error(e.format_message().replace("\n", " ").replace("Value error, ", "") + where)
            rv = e.exit_code
        except typer.Abort:
            rv = 1
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if standalone_mode:
            sys.exit(rv or 0)
        return rv

    def _path(self, args) -> str:
        """``lrbench zoo pull`` for the words of ``args`` that name (sub)commands."""
        words, group = ["lrbench"], self
        for word in sys.argv[1:] if args is None else args:
            command = getattr(group, "commands", {}).get(word)
            if command is None:
                break
            words.append(word)
            group = command
        return " ".join(words)


app = typer.Typer(
    cls=LrbenchGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Reproduce LRFormer and its baselines: zoo, eval, flops, speed, claims, report, reproduce.",
)
zoo_app = typer.Typer(
    no_args_is_help=True, help="Pretrained weights: list, inspect, pull, lock and publish zoo entries."
)
app.add_typer(zoo_app, name="zoo")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: check a folder before evaluating on it.")
app.add_typer(data_app, name="data")


def _preflight(
    model: str | None = None,
    entry: str | None = None,
    shape=None,
    sha256: str | None = None,
    dataset: str | None = None,
    recipe: bool = True,
    creates_manifest: bool = False,
) -> Resolved | None:
    """Argument errors that need no model, answered before torch is imported: unknown names (with a did-you-mean),
    a zoo entry on another dataset, an architecture without a test recipe there (``recipe``), ``--shape`` rules, the
    ``--sha256`` format. Returns what ``model`` resolved to (None when not asked)."""
    from .zoo import resolve

    arch = check_model_name(model) if model else None
    resolved = resolve(model, dataset) if model and recipe else None
    if entry:
        check_entry_name(entry, local_may_be_missing=creates_manifest)
    check_shape(shape, arch)
    check_sha256(sha256)
    return resolved


def _reading():
    """The reading commands (:mod:`lrbench.commands`: the manifest, results, numpy; never torch), imported when one
    runs so that ``--help`` and argument errors stay at typer's own start-up cost."""
    from . import commands

    return commands


def _engine():
    """The commands that build or run a model (imports torch: only when one of them runs)."""
    from .engine import commands as engine_commands

    return engine_commands


def show(table: Table) -> None:
    """A table on stdout: rich on a terminal; elsewhere (piped, redirected) its title and whole rows as plain text,
    columns aligned and never wrapped or cut, so ``lrbench zoo list | grep mmseg`` sees every name whole."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.text import Text

    plain = lambda cell: Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)  # noqa: E731
    cols = [[plain(c.header)] + [plain(v) for v in c._cells] for c in table.columns]
    widths = [max(len(v) for v in col) for col in cols]
    lines = [plain(table.title)] if table.title else []
    rows = zip(*cols) if table.show_header else list(zip(*cols))[1:]
    for row in rows:
        cells = [v.rjust(w) if c.justify == "right" else v.ljust(w) for v, w, c in zip(row, widths, table.columns)]
        lines.append("  ".join(cells).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def print_json(obj: object, indent: int | None = 2) -> None:
    sys.stdout.write(json.dumps(obj, indent=indent) + "\n")


def _fmt(v, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def progress_bar(transient: bool = True, disable: bool = False):
    """The rich progress bar every long command uses (on stderr, so --json output stays clean): done/total, rate,
    elapsed and remaining time. Only on a terminal: piped or captured stderr gets the results and errors alone."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(show_speed=True),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=err_console,
        transient=transient,
        disable=disable or not err_console.is_terminal,
    )


def with_progress(label: str, fn, *args, total: int | None = None, **kwargs):
    """Call ``fn(*args, progress=..., **kwargs)`` under a progress bar; ``progress(done, total, what="")``."""
    with progress_bar() as bar:
        task = bar.add_task(label, total=total, status="")
        return fn(*args, progress=lambda d, n, what="": bar.update(task, completed=d, total=n, status=what), **kwargs)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"lrbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Weights from the caches only (as HF_HUB_OFFLINE=1 or LRBENCH_OFFLINE=1)."
    ),
) -> None:
    if offline:
        os.environ["LRBENCH_OFFLINE"] = "1"


JSON = typer.Option(False, "--json", help="Machine-readable output.")
SHAPE = typer.Option(None, "--shape", metavar="H W", help="Input height and width (default: the recipe's).")
NAME = "Architecture (lrformer-s; see `lrbench models`) or zoo entry (lrformer-s_ade20k; see `lrbench zoo list`)."


@app.command("models", epilog="Example: lrbench models --family lrformer")
def models_cmd(family: Optional[Family] = typer.Option(None, help="Only this family."), json_out: bool = JSON) -> None:
    """List the registered architectures with parameter counts and stage layout."""
    rows = _reading().models(family)
    if json_out:
        print_json(rows)
        return
    table = Table(title="lrbench architectures (150 classes)")
    for col in ("name", "family", "params M", "stage dims", "depths", "stride"):
        table.add_column(
            col,
            justify="right" if col in ("params M", "stride") else "left",
            no_wrap=col in ("name", "params M"),
            overflow="fold",
        )
    for r in rows:
        table.add_row(
            r["name"],
            r["family"],
            f"{r['params'] / 1e6:.2f}",
            "/".join(map(str, r["dims"])),
            "/".join(map(str, r["depths"])),
            str(r["output_stride"] or "-"),
        )
    show(table)


@app.command("flops", epilog="Example: lrbench flops lrformer-s_cityscapes   (1024x2048, 19 classes)")
def flops_cmd(
    model: str = typer.Argument(..., help=NAME),
    shape: Optional[tuple[int, int]] = SHAPE,
    dataset: Optional[Dataset] = typer.Option(
        None, help="Dataset of the recipe and class count (default: the entry's, else ade20k)."
    ),
    num_classes: Optional[int] = typer.Option(None, min=1, help="Classes (default: the dataset's)."),
    out: Optional[str] = typer.Option(None, help="Also write the result JSON here (atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_out: bool = JSON,
) -> None:
    """Parameters and GFLOPs (fvcore's convention: 1 multiply-add = 1 FLOP, backbone + decode head; shapes only)."""
    _preflight(model, shape=shape)
    res = with_progress(
        f"flops {model}",
        _engine().flops,
        model,
        shape=shape,
        dataset=dataset,
        num_classes=num_classes,
        out=out,
        overwrite=overwrite,
        total=3,
    )
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{res['model']} @ {res['shape'][0]}x{res['shape'][1]}, {res['num_classes']} classes")
    table.add_column("part")
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs (multiply-adds)", justify="right")
    table.add_row("backbone", f"{res['params_backbone'] / 1e6:.2f}", f"{res['gflops_backbone']:.2f}")
    table.add_row("decode head", f"{res['params_head'] / 1e6:.2f}", f"{res['gflops_head']:.2f}")
    semantic = res["gflops_full"] - res["gflops_backbone"] - res["gflops_head"]
    if res["gflops"] > res["gflops_backbone"] + res["gflops_head"] + 1e-9:  # counted by this family's convention
        table.add_row("semantic inference", "", f"{semantic:.2f}")
    table.add_row("total", f"{res['params'] / 1e6:.2f}", f"{res['gflops']:.2f}", style="bold")
    show(table)
    if res["gflops_full"] > res["gflops"] + 1e-9:
        console.print(
            f"whole inference (with the semantic combination, {semantic:.2f}, which this family's published "
            f"figures leave out): {res['gflops_full']:.2f} GFLOPs"
        )
    console.print("by operator: " + ", ".join(f"{k} {v:.2f}" for k, v in res["by_operator"].items()))
    console.print(f"unit: {res['unit']}")
    shares = [f"{k.removeprefix('aten::')} {v['share']:.1%}" for k, v in res["skipped_ops"].items() if v["share"]]
    console.print(
        f"not counted by the convention (est. {res['skipped_share']:.1%} more at 1 FLOP per element): "
        + (", ".join(shares[:8]) + (", ..." if len(shares) > 8 else "") if shares else "no arithmetic ops")
    )
    if res["unsupported_ops"]:
        console.print(f"[yellow]not counted (unsupported): {res['unsupported_ops']}[/]")


@app.command("speed", epilog="Example: lrbench speed lrformer-t --shape 1024 2048 --batch-size 2 --dtype bf16")
def speed_cmd(
    model: str = typer.Argument(..., help=NAME),
    shape: Optional[tuple[int, int]] = SHAPE,
    dataset: Optional[Dataset] = typer.Option(None, help="Dataset of the default shape and classes."),
    batch_size: int = typer.Option(1, "--batch-size", min=1),
    dtype: Dtype = typer.Option("fp32", help="Autocast dtype."),
    channels_last: bool = typer.Option(False, "--channels-last"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model first."),
    device: Device = typer.Option("auto", help="auto = cuda when available, else cpu."),
    warmup: int = typer.Option(3, min=0, help="Warm-up iterations (discarded)."),
    iters: int = typer.Option(10, min=1, help="Timed iterations."),
    out: Optional[str] = typer.Option(None, help="Also write the result JSON here (atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_out: bool = JSON,
) -> None:
    """Forward latency (median, IQR) and images/s, with the device and settings it was measured with."""
    _preflight(model, shape=shape, dataset=dataset)
    res = with_progress(
        f"speed {model}",
        _engine().speed,
        model,
        shape=shape,
        dataset=dataset,
        batch_size=batch_size,
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        device=device,
        warmup=warmup,
        iters=iters,
        out=out,
        overwrite=overwrite,
        total=warmup + iters,
    )
    if json_out:
        print_json(res)
        return
    console.print(
        f"{res['model']} @ {res['shape'][0]}x{res['shape'][1]}  batch {batch_size}  {dtype}"
        f"{'  channels_last' if channels_last else ''}{'  compiled' if compile else ''}"
    )
    console.print(f"device: {res['device_name']}  torch {res['torch']}  warmup {warmup}  iters {iters}")
    console.print(f"timer: {res['timer']['covers']}; {res['timer']['clock']}")
    if res["compile_s"] is not None:
        console.print(f"torch.compile: {res['compile_s']:.1f} s for the first call (not in the latency below)")
    mem = f"  peak memory {res['peak_mem_mb']:.0f} MiB" if res["peak_mem_mb"] is not None else ""
    console.print(
        f"[bold]{res['median_ms']:.1f} ms[/] median (IQR {res['iqr_ms']:.1f} ms)  "
        f"{res['images_per_s']:.2f} images/s{mem}"
    )


@app.command("claims", epilog="Example: lrbench claims --quick --plot claims.png")
def claims_cmd(
    plot: Optional[str] = typer.Option(None, help="Write the cost-vs-resolution plot (PNG) here."),
    out: Optional[str] = typer.Option(None, help="Write the result JSON here (atomically)."),
    device: Device = typer.Option("cpu", help="Device for the attention-layer latencies."),
    quick: bool = typer.Option(False, "--quick", help="Fewer sizes (256-1024) for a fast look."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out / --plot."),
    json_out: bool = JSON,
) -> None:
    """The LRSA scaling study: attention and whole-model cost vs resolution, with a verdict per claim."""
    res = with_progress("claims", _engine().claims, quick=quick, device=device, out=out, plot=plot, overwrite=overwrite)
    if json_out:
        print_json(res)
        return
    table = Table(title=f"LRFormer claims, measured on {res['meta']['device_name']}")
    for col in ("claim", "verdict", "evidence"):
        table.add_column(col, overflow="fold")
    for c in res["claims"]:
        table.add_row(c["claim"], f"[{'green' if c['verdict'] == 'holds' else 'red'}]{c['verdict']}[/]", c["evidence"])
    show(table)
    if plot:
        console.print(f"plot: {plot}")


def _cli_fields(cls, without: tuple[str, ...] = ()) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that are command-line options (``without`` left to their defaults)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("python_only") and f.name not in without]


def _settings_options(cls, without: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """The CLI parameters of a settings dataclass (:mod:`lrbench.settings`): each field's type, default and help,
    so an option is declared once, in the dataclass."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in _cli_fields(cls, without):
        meta = f.metadata
        if meta.get("argument"):
            default = typer.Argument(..., help=meta["help"])
            annotation = str
        else:
            kw = dict(meta.get("typer") or {})
            value = ... if kw.pop("required", False) else meta.get("cli_default", f.default)
            flag = meta.get("flag") or "--" + f.name.replace("_", "-")
            default, annotation = typer.Option(value, flag, help=meta["help"], **kw), hints[f.name]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    return params


def _with_settings(cls, without: tuple[str, ...] = ()):
    """Decorate a command taking ``settings`` (plus its own CLI-only options) so that its options are ``cls``'s
    fields (but ``without``, which keep their defaults); it is called with the settings object built once from them."""

    def wrap(fn):
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for name, p in inspect.signature(fn).parameters.items()
            if name != "settings"
        ]
        names = [f.name for f in _cli_fields(cls, without)]

        @functools.wraps(fn)
        def command(**kwargs):
            settings = cls(**{k: kwargs.pop(k) for k in names})
            return fn(settings=settings, **kwargs)

        params = _settings_options(cls, without)
        command.__signature__ = inspect.Signature(params + own)
        command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
        return command

    return wrap


@app.command("eval", epilog="Example: lrbench eval lrformer-s_ade20k --data-root ~/data --protocol ms")
@_with_settings(EvalSettings)
def eval_cmd(
    settings: EvalSettings,
    json_out: bool = typer.Option(
        False, "--json", help="Print the result as JSON (summary and per-class table; --full for everything)."
    ),
    full: bool = typer.Option(False, "--full", help="With --json: the whole record (areas, timings...)."),
) -> None:
    """mIoU on a validation set with the standard protocol (resumable; distributed under torchrun)."""
    settings.check()  # every argument error that needs no model: before torch is imported
    resolved = _preflight(settings.model, dataset=settings.dataset)
    model = settings.model
    quiet = int(os.environ.get("RANK", "0")) > 0  # under torchrun only rank 0 reports
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task(f"{model}", total=None, status="")
        miou = {"text": ""}

        def update(done: int, total: int, summary: dict) -> None:
            if summary.get("mIoU") is not None:
                miou["text"] = f"mIoU {summary['mIoU']:.2f}"
            bar.update(task, completed=done, total=total, status=miou["text"])

        from .engine.evaluate import evaluate  # torch: only once the arguments are known to be good

        res = evaluate(settings, progress=update, resolved=resolved)
        out = res["out"]
    if quiet:
        return
    if json_out:
        keys = (
            "model",
            "arch",
            "zoo_entry",
            "weights",
            "weights_source",
            "checkpoint",
            "checkpoint_sha256",
            "dataset",
            "num_images",
            "complete",
            "protocol",
            "mode",
            "mIoU",
            "miou_ci95",
            "mAcc",
            "aAcc",
            "per_class",
            "skipped",
            "device_name",
            "corruption",
            "calibration",
        )
        print_json(res if full else {k: res.get(k) for k in keys} | {"out": out})
        return
    labels = "" if res["label_form"] == "labelTrainIds" else f"; labels: {res['label_form']}, mapped on the fly"
    c = res.get("corruption")
    corrupted = f"; corrupted: {c['name']} severity {c['severity']}" if c else ""
    table = Table(
        title=f"{model} on {res['dataset']} ({res['num_images']} images, {res['protocol']}, {res['mode']}{labels}"
        f"{corrupted})"
    )
    for col in ("class", "IoU", "95% CI", "Acc"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in res["per_class"]:
        if r["IoU"] is not None:
            ci = r.get("IoU_ci95")
            table.add_row(
                r["class"], f"{r['IoU']:.2f}", f"{ci[0]:.1f}–{ci[1]:.1f}" if ci else "-", _fmt(r["Acc"], ".2f")
            )
    show(table)
    rate = res["timings"]["images_per_s"]
    ci = f" (95% CI {res['miou_ci95'][0]:.2f}–{res['miou_ci95'][1]:.2f})" if res.get("miou_ci95") else ""
    console.print(
        f"[bold]mIoU {res['mIoU']:.2f}[/]{ci}  mAcc {_fmt(res['mAcc'], '.2f')}  aAcc {res['aAcc']:.2f}   "
        f"({_fmt(rate, '.2f')} images/s on {res['device_name']}) -> {out}"
    )
    if res.get("checkpoint_sha256"):
        console.print(f"weights: {escape(str(res.get('weights_source')))} (sha256 {res['checkpoint_sha256'][:16]}…)")
    cal = res.get("calibration")
    if cal:
        where = f"; reliability diagram {cal['diagram']} beside the result" if cal.get("diagram") else ""
        console.print(f"ECE {_fmt(cal['ece'], '.2f')}% ({cal['bins']} bins; confidence: {cal['confidence']}){where}")
    if res["skipped"]:
        console.print(f"[yellow]skipped {len(res['skipped'])} bad files (listed in {out})[/]")


@app.command("predict", epilog="Example: lrbench predict lrformer-s_ade20k photos/ street.jpg --out preds")
def predict_cmd(
    model: str = typer.Argument(..., help=NAME),
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Image files, folders (recursive) or globs."),
    out: str = typer.Option(..., help="Folder for NAME.png (label map) and NAME_overlay.jpg."),
    dataset: Optional[Dataset] = typer.Option(None, help="Recipe, classes and palette (default: the entry's)."),
    checkpoint: Optional[str] = typer.Option(None, help="Local weights (default: the zoo's)."),
    protocol: Protocol = typer.Option("ss", help="ss (single scale) | ms (6 scales + flip)."),
    mode: Optional[Mode] = typer.Option(None, help="Default: the recipe's."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Opacity of the colour mask in the overlay."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Images of equal size predicted together."),
    device: Device = typer.Option("auto", help="auto = cuda when available, else cpu."),
    dtype: Dtype = typer.Option("fp32", help="Autocast dtype."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images (listed) instead of stopping."),
    json_out: bool = typer.Option(False, "--json", help="Per image: outputs and class areas (pixel fractions)."),
) -> None:
    """Label maps (palette PNG) and overlays of a model's predictions, with the same pipeline eval scores."""
    _preflight(model, dataset=dataset)
    records = with_progress(
        "predict",
        _engine().predict,
        model,
        inputs,
        out=out,
        dataset=dataset,
        checkpoint=checkpoint,
        protocol=protocol,
        mode=mode,
        alpha=alpha,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        skip_bad=skip_bad,
    )
    if json_out:
        print_json(records)
        return
    done = [r for r in records if "error" not in r]
    console.print(f"{len(done)} images -> {out}/ (NAME.png label maps, NAME_overlay.jpg overlays)")
    for r in records:
        if "error" in r:
            console.print(f"[yellow]skipped {escape(r['image'])}: {escape(r['error'])}[/]")


@app.command("compare", epilog="Example: lrbench compare results/eval/a.json results/eval/b.json")
def compare_cmd(
    result_a: str = typer.Argument(..., metavar="RESULT_A", help="An eval result JSON."),
    result_b: str = typer.Argument(..., metavar="RESULT_B", help="An eval result JSON over the same images."),
    json_out: bool = JSON,
) -> None:
    """A - B in mIoU with its 95% confidence interval from a paired bootstrap over the images (see lrbench.stats)."""
    res = _reading().compare(result_a, result_b)
    if json_out:
        print_json(res)
        return
    if res.get("kind") == "robust":
        _show_robust_compare(res)
        return
    lo, hi = res["ci95"]
    console.print(
        f"mIoU A {res['miou_a']:.2f} - B {res['miou_b']:.2f} = [bold]{res['diff']:+.2f}[/] "
        f"(95% CI {lo:+.2f} … {hi:+.2f}, {res['n_images']} images): {_verdict(lo, hi)}"
    )
    table = Table(title="per class: IoU A - B, sorted by the difference (paired bootstrap over the same images)")
    for col in ("class", "IoU A", "IoU B", "A - B", "95% CI", "verdict"):
        table.add_column(col, justify="left" if col in ("class", "verdict") else "right")
    for r in res["per_class"]:
        if r["diff"] is None:
            table.add_row(r["class"], _fmt(r["iou_a"], ".2f"), _fmt(r["iou_b"], ".2f"), "-", "-", r["why"])
            continue
        ci = f"{r['ci95'][0]:+.2f} … {r['ci95'][1]:+.2f}" if r["ci95"] else "-"
        verdict = _verdict(*r["ci95"]) if r["ci95"] else "no interval"
        table.add_row(r["class"], f"{r['iou_a']:.2f}", f"{r['iou_b']:.2f}", f"{r['diff']:+.2f}", ci, verdict)
    show(table)
    console.print(f"absent classes: {res['absent_classes']}", highlight=False)


def _verdict(lo: float, hi: float) -> str:
    return "A is better" if lo > 0 else "B is better" if hi < 0 else "not significant"


def _show_robust_compare(res: dict) -> None:
    table = Table(title=f"robustness: {res['model_a']} (A) - {res['model_b']} (B), mIoU, {res['n_images']} images")
    for col in ("", "A - B", "95% CI", "verdict"):
        table.add_column(col, justify="right" if col in ("A - B", "95% CI") else "left")
    rows = [("clean", res["clean"]), ("mean corrupted", res["mean_corrupted"])] + list(res["per_corruption"].items())
    for name, d in rows:
        lo, hi = d["ci95"]
        table.add_row(name, f"{d['diff']:+.2f}", f"{lo:+.2f} … {hi:+.2f}", _verdict(lo, hi))
    show(table)


@app.command(
    "analyze",
    epilog="Example: lrbench analyze results/eval/lrformer-t_ade20k_ss.json --worst 5 --overlays worst/",
)
def analyze_cmd(
    result: str = typer.Argument(
        ..., metavar="RESULT", help="An eval result JSON (with its .per_image.npz beside it)."
    ),
    top: int = typer.Option(10, min=0, help="How many confusions to list."),
    sort: Literal["pixels", "share"] = typer.Option(
        "pixels", help="Rank confusions by pixels | share (of the true class's pixels)."
    ),
    worst: int = typer.Option(0, min=0, help="List the K images with the lowest per-image mIoU."),
    overlays: Optional[str] = typer.Option(
        None, help="With --worst: write image | ground truth | prediction for them here (runs the model again)."
    ),
    plots: str = typer.Option("plots", help="Folder for the confusion heat map."),
    device: Device = typer.Option("auto", help="For --overlays: auto = cuda when available, else cpu."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing overlay files."),
    json_out: bool = JSON,
) -> None:
    """Why a number is what it is: top confusions, per-class IoU with intervals, the worst images, a heat map."""
    if overlays is not None and not worst:
        raise typer.BadParameter("--overlays needs --worst K (which images to draw)", param_hint="--overlays")
    res = _reading().analyze(result, top=top, worst=worst, plots=plots, sort=sort)
    if overlays is not None:
        res["overlays"] = _engine().analyze_overlays(
            result, [w["image"] for w in res["worst_images"]], overlays, device=device, overwrite=overwrite
        )
    if json_out:
        print_json(res)
        return
    ci = f" (95% CI {res['miou_ci95'][0]:.2f}–{res['miou_ci95'][1]:.2f})" if res.get("miou_ci95") else ""
    console.print(f"{res['model']} on {res['dataset']}: mIoU {res['mIoU']:.2f}{ci}, {res['num_images']} images")
    table = Table(title=f"top confusions (true -> predicted), by {res['sorted_by']}")
    for col in ("true", "predicted", "pixels", "share of true"):
        table.add_column(col, justify="right" if col in ("pixels", "share of true") else "left")
    for c in res["top_confusions"]:
        table.add_row(c["true"], c["predicted"], str(c["pixels"]), f"{c['share_of_true']:.1%}")
    show(table)
    if res["worst_images"]:
        table = Table(title=f"worst {len(res['worst_images'])} images ({res['worst_convention']})")
        for col in ("image", "mIoU", "classes", "worst classes (IoU)"):
            table.add_column(col, justify="right" if col in ("mIoU", "classes") else "left")
        for w in res["worst_images"]:
            cls = ", ".join(f"{c['class']} {c['IoU']:.1f}" for c in w["worst_classes"])
            table.add_row(w["image"], f"{w['mIoU']:.2f}", str(w["classes"]), cls)
        show(table)
    if res["heatmap"]:
        console.print(f"heat map: {res['heatmap']}")
    if res.get("overlays"):
        console.print(f"overlays: {len(res['overlays'])} images -> {overlays}/")


@app.command(
    "robust",
    epilog="Example: lrbench robust segformer-b0_cityscapes --data-root ~/data   (then lrbench report)",
)
@_with_settings(EvalSettings, without=("corruption", "severity", "out"))
def robust_cmd(
    settings: EvalSettings,
    corruptions: Optional[str] = typer.Option(
        None, help="Comma-separated subset of the 16 corruptions (default: all; see `lrbench eval --corruption`)."
    ),
    out_dir: Optional[str] = typer.Option(
        None, "--out-dir", help="Folder of the runs' results (default results/robust/MODEL_DATASET_PROTOCOL)."
    ),
    json_out: bool = JSON,
) -> None:
    """Corruption robustness: clean + 16 corruptions x severities (Kamann & Rother / Cityscapes-C protocol); every
    eval option applies to each run."""
    settings.check()
    model = settings.model
    chosen = check_corruptions([c.strip() for c in corruptions.split(",") if c.strip()] if corruptions else None)
    _preflight(model, dataset=settings.dataset)
    res = with_progress(f"robust {model}", _engine().robust, settings, out_dir=out_dir, corruptions=chosen)
    if int(os.environ.get("RANK", "0")) > 0:
        return
    if json_out:
        print_json(res)
        return
    table = Table(title=f"{res['model']} on {res['dataset']}: mIoU under corruption ({res['num_images']} images)")
    for col in ("", "mIoU"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("clean", f"{res['clean_mIoU']:.2f}")
    for name, v in res["per_corruption"].items():
        table.add_row(name, f"{v:.2f}")
    for g, v in res["per_group"].items():
        table.add_row(f"{g} (mean)", f"{v:.2f}")
    table.add_row("mean corrupted", f"{res['mean_corrupted_mIoU']:.2f}", style="bold")
    show(table)
    console.print(f"relative robustness {res['relative_robustness']:.1f}% -> {res['out']}")


@app.command("report", epilog="Example: lrbench report --results results --out RESULTS.md")
def report_cmd(
    results: str = typer.Option("results", help="Folder of result JSON files."),
    out: str = typer.Option("RESULTS.md", help="Markdown report (a .csv is written beside it)."),
    plots: str = typer.Option("plots", help="Folder for the PNG plots."),
) -> None:
    """Regenerate RESULTS.md (+ CSV and plots) from result files and the zoo's published numbers."""
    paths = _reading().report(results, out, plots)
    _notes(paths["ignored"])
    console.print(f"wrote {paths['report']}, {paths['csv']} and {len(paths['plots'])} plots")


@app.command("reproduce", epilog="Example: lrbench reproduce --quick --out /tmp/lr/RESULTS.md")
def reproduce_cmd(
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Datasets (enables the evals)."),
    quick: bool = typer.Option(False, "--quick", help="ADE-sized FLOPs, fewer sizes and iterations."),
    results: Optional[str] = typer.Option(None, help="Result JSON folder (default: results/ beside --out)."),
    out: str = typer.Option("RESULTS.md", help="The report."),
    plots: Optional[str] = typer.Option(None, help="PNG folder (default: plots/ beside --out)."),
    device: Device = typer.Option("auto", help="auto = cuda when available, else cpu."),
    evals_only: bool = typer.Option(False, "--evals-only", help="Only the evals (with --data-root) and the report."),
) -> None:
    """The main job: params, FLOPs, the claims study, speed (and evals with --data-root) -> RESULTS.md.
    Under torchrun every eval is sharded across the ranks; rank 0 writes the results and the report."""
    t0 = time.perf_counter()
    outcome = with_progress(
        "reproduce",
        _engine().run_reproduce,
        data_root=data_root,
        quick=quick,
        results=results,
        out=out,
        plots=plots,
        device=device,
        evals_only=evals_only,
    )
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun only rank 0 reports
        return
    paths = outcome.report
    _notes(paths["ignored"])
    console.print(
        f"wrote {paths['report']} ({paths['csv']}, {len(paths['plots'])} plots) in {time.perf_counter() - t0:.0f} s"
    )
    for name, why in outcome.skipped:
        console.print(f"[yellow]eval {name} skipped:[/] {escape(why)}")
    if not data_root:
        console.print(
            "mIoU rows stay pending: run `lrbench reproduce --data-root PATH` with the datasets, or the "
            "`lrbench eval` command shown in each row."
        )


@app.command("convert", epilog="Example: lrbench convert lrformer-t lrformer-t-160k_ade20k.pth lrformer-t.safetensors")
def convert_cmd(
    model: str = typer.Argument(..., help=NAME),
    checkpoint: str = typer.Argument(..., help="Official mmseg .pth, transformers .bin/.safetensors, ..."),
    out: str = typer.Argument(..., help="Output .safetensors with lrbench key names."),
    dataset: Optional[Dataset] = typer.Option(
        None, help="Dataset of the checkpoint's head (sets the class count; default: the entry's, else ade20k)."
    ),
    num_classes: Optional[int] = typer.Option(None, min=1, help="Classes, if not a dataset's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Convert a checkpoint to lrbench-named safetensors (checked strictly against the model first)."""
    _preflight(model, recipe=False)
    res = _engine().convert(model, checkpoint, out, dataset=dataset, num_classes=num_classes, overwrite=overwrite)
    console.print(f"{checkpoint} -> {out} ({res['arch']}, {res['num_classes']} classes, {res['tensors']} tensors)")
    for n in res["notes"]:
        console.print(f"  note: {escape(n)}")


@zoo_app.command("list", epilog="Example: lrbench zoo list --dataset cityscapes")
def zoo_list_cmd(
    dataset: Optional[Dataset] = typer.Option(None),
    family: Optional[Family] = typer.Option(None),
    json_out: bool = JSON,
) -> None:
    """Every zoo entry with its published numbers."""
    entries = _reading().zoo_list(dataset, family)
    if json_out:
        print_json(entries)
        return
    table = Table(
        title="lrbench zoo (published numbers; ·mmseg = mmseg's retrained baseline; `lrbench zoo info NAME` for "
        "sources and files)"
    )
    for col in ("name", "params", "GFLOPs", "input", "ss", "ms", "weights"):
        table.add_column(
            col,
            justify="left" if col in ("name", "weights") else "right",
            overflow="fold",
            min_width=18 if col == "name" else None,
        )
    for e in entries:
        p, hub, url = e["published"], e.get("hub"), e.get("url")
        if hub:
            w = "hub" if hub["filename_verified"] else "hub (listed)"
        else:
            w = urlsplit(url["url"]).netloc.split(".")[-2] if url else "none"
        w += " ·mmseg" if e["origin"] == "mmseg" else ""
        shape = "x".join(map(str, p.get("flops_shape") or [])) or "-"
        table.add_row(
            e["name"],
            _fmt(p.get("params_m")),
            _fmt(p.get("gflops")),
            shape,
            _fmt(p.get("miou_ss")),
            _fmt(p.get("miou_ms")),
            w,
        )
    show(table)


@zoo_app.command("info", epilog="Example: lrbench zoo info lrformer-l_ade20k")
def zoo_info_cmd(
    name: str = typer.Argument(..., help="Zoo entry, e.g. lrformer-s_ade20k."), json_out: bool = JSON
) -> None:
    """Everything the manifest knows about one entry, and where its converted weights are cached."""
    _preflight(entry=name)
    info = _reading().zoo_info(name)
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
    show(table)


@zoo_app.command("pull", epilog="Example: lrbench zoo pull lrformer-t_ade20k --revision main")
def zoo_pull_cmd(
    name: str = typer.Argument(..., help="Zoo entry, e.g. lrformer-s_ade20k."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit)."),
    force: bool = typer.Option(False, "--force", help="Download and convert again."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Override the hub repository."),
    filename: Optional[str] = typer.Option(None, help="Override the file name in the repository."),
    sha256: Optional[str] = typer.Option(None, help="Expected sha256 of the downloaded file."),
    json_out: bool = JSON,
) -> None:
    """Download (HF cache or $LRBENCH_HOME/downloads), verify, pin and convert weights to lrbench safetensors."""
    _preflight(entry=name, sha256=sha256)
    res = with_progress(
        name,
        _engine().zoo_pull,
        name,
        revision=revision,
        force=force,
        repo_id=repo_id,
        filename=filename,
        sha256=sha256,
    )
    if json_out:
        print_json(res)
        return
    state = "already converted" if res["cached"] else "converted"
    console.print(
        f"{name}: {state} -> {res['path']}\n  from {res['origin']}\n  file {res['source']}\n  sha256 {res['sha256']}"
        f"{'' if res['verified'] else ' (nothing to check it against was known; now pinned)'}"
    )
    for n in res["notes"]:
        console.print(f"  note: {n}")


@zoo_app.command("lock", epilog="Example: lrbench zoo lock --out zoo.lock.yaml   (then LRBENCH_ZOO=zoo.lock.yaml)")
def zoo_lock_cmd(
    out: str = typer.Option("zoo.lock.yaml", help="Manifest to write (YAML)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    json_out: bool = JSON,
) -> None:
    """Write the entries pulled so far, pinned to the exact files (commit, sha256), as a shareable manifest."""
    res = _reading().zoo_lock(out, overwrite)
    if json_out:
        print_json(res)
        return
    console.print(f"pinned {len(res['entries'])} entries -> {res['out']} (use it with LRBENCH_ZOO={res['out']})")


@zoo_app.command(
    "publish",
    epilog="Example: lrbench zoo publish lrformer-t_ade20k --checkpoint "
    "lrformer-t-160k_ade20k.pth --repo-id me/lrformer-t-ade20k --dry-run /tmp/card",
)
def zoo_publish_cmd(
    name: str = typer.Argument(..., help="Zoo entry, e.g. lrformer-s_ade20k."),
    checkpoint: str = typer.Option(..., help="The official weights to publish (any format lrbench reads)."),
    repo_id: str = typer.Option(..., "--repo-id", help="Hub repository OWNER/NAME (created if needed)."),
    revision: str = typer.Option("main", help="Branch to commit to."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dry_run: Optional[str] = typer.Option(None, "--dry-run", help="Only write the folder (weights, config, card)."),
    results: Optional[str] = typer.Option("results", help="Results folder with measured mIoU for the card."),
    json_out: bool = JSON,
) -> None:
    """Verify, convert to safetensors and publish a zoo entry's weights with a model card; prints the manifest lines."""
    _preflight(entry=name, creates_manifest=True)
    res = _engine().zoo_publish(
        name, checkpoint, repo_id, revision=revision, private=private, dry_run=dry_run, results=results
    )
    if json_out:
        print_json(res)
        return
    where = f"wrote {res['folder']}" if not res["uploaded"] else f"published {res['commit_url']}"
    console.print(f"{name}: {where} ({', '.join(res['files'])}; sha256 {res['sha256']})")
    if res.get("manifest_file"):
        console.print(f"pinned in {res['manifest_file']} ($LRBENCH_ZOO)")
    else:
        console.print("manifest lines for zoo/models.yaml (or a local manifest in $LRBENCH_ZOO):")
        console.print(escape(res["manifest"]), highlight=False)


@app.command("env", epilog="Example: lrbench env --json > env.json   (attach it to a bug report)")
def env_cmd(json_out: bool = JSON) -> None:
    """Versions, devices, the hub endpoint (and whether it answers) and the caches: what a bug report needs."""
    from .engine.environment import environment

    res = environment()
    if json_out:
        print_json(res)
        return
    table = Table(title="lrbench environment", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in res["versions"].items():
        table.add_row(k, v)
    table.add_row("platform", res["platform"])
    table.add_row("CPU threads", str(res["cpu_threads"]))
    c = res["cuda"]
    gpus = ", ".join(c["devices"]) if c["available"] else "not available"
    table.add_row("CUDA", f"{gpus} (torch CUDA {c['torch_cuda']}, cuDNN {c['cudnn']})" if c["available"] else gpus)
    table.add_row("hub", f"{res['hub']['endpoint']}: {res['hub']['status']}")
    table.add_row("url mirror", res["url_mirror"] or "-")
    for k, v in res["caches"].items():
        size = "absent" if v["bytes"] is None else f"{v['bytes'] / 2**20:.1f} MiB"
        table.add_row(k, f"{v['path']} ({size})")
    table.add_row("zoo manifest ($LRBENCH_ZOO)", res["zoo_manifest"] or "-")
    show(table)


@data_app.command("check", epilog="Example: lrbench data check cityscapes --data-root ~/data --full")
def data_check_cmd(
    dataset: Dataset = typer.Argument(..., help="ade20k | coco-stuff | cityscapes."),
    data_root: str = typer.Option(..., "--data-root", help="Folder with the dataset (or its parent)."),
    full: bool = typer.Option(False, "--full", help="Also read every label and check its ids and size."),
    json_out: bool = JSON,
) -> None:
    """Which layout and label form a dataset folder has, its counts against the official val size, unmatched files."""
    from .layouts import check_dataset

    if full:
        res = with_progress(f"checking {dataset}", check_dataset, dataset, data_root, True)
    else:
        res = check_dataset(dataset, data_root)
    if json_out:
        print_json(res)
    else:
        form = (
            "converted labelTrainIds" if res["label_form"] == "labelTrainIds" else res["label_form"] + " (as shipped)"
        )
        console.print(
            f"{res['dataset']} at {escape(res['root'])}: labels {form}; {res['pairs']} image/label pairs of "
            f"{res['val_size']} in the official val split"
            + ("" if res["complete"] else " [yellow](incomplete: a run here is partial)[/]")
        )
        for what in ("images_without_label", "labels_without_image"):
            for p in res[what][:10]:
                console.print(f"  {what.replace('_', ' ')}: {escape(p)}")
            if len(res[what]) > 10:
                console.print(f"  ... {len(res[what]) - 10} more {what.replace('_', ' ')}")
        if full:
            console.print(f"checked {res['checked']} labels: {len(res['bad'])} bad")
            for line in res["bad"][:10]:
                console.print(f"  [red]{escape(line)}[/]")
    if res["bad"] or res["images_without_label"]:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
