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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
