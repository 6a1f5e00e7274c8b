"""The Typer application: registers the commands and maps known errors to one line + exit code."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from fusionmamba_cli import __version__
from fusionmamba_cli.cli import (
    benchmark,
    demo,
    evaluate,
    fuse,
    info,
    train,
    weights_cmd,
)
from fusionmamba_cli.cli.common import UsageError, console
from fusionmamba_cli.errors import FusionMambaError, InvalidRequestError

app = typer.Typer(
    name="fusionmamba",
    help="Fuse registered image pairs (IR-VIS, CT/PET/SPECT-MRI, GFP-PC) with FusionMamba.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's plain help wraps every word; Rich's panels cut long names at 80 columns
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fusionmamba {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """FusionMamba image fusion."""


app.command("fuse")(fuse.fuse_command)
app.command("info")(info.info_command)
app.command("demo")(demo.demo_command)
app.command("benchmark")(benchmark.benchmark_command)
app.command("download-weights")(weights_cmd.download_weights_command)
app.command("convert-weights")(weights_cmd.convert_weights_command)
app.add_typer(weights_cmd.weights_app, name="weights")
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)


def _is_click_error(exc: BaseException) -> bool:
    """A command-line parsing error (missing argument, bad option, unknown command).

    Typer vendors its own copy of Click, so these are not `click.ClickException` instances:
    recognise them by their interface instead.
    """
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


def main() -> None:
    """Console-script entry point: known errors become one red line; tracebacks only with FUSIONMAMBA_DEBUG=1."""
    try:
        code = app(standalone_mode=False)
    except UsageError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except FusionMambaError as exc:
        if os.environ.get("FUSIONMAMBA_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2 if isinstance(exc, InvalidRequestError) else 1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as exc:
        if _is_click_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":  # Click turns Ctrl-C into Abort
            console.print("[red]interrupted[/red]")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)
