"""`fusionmamba download-weights`, `fusionmamba convert-weights` and `fusionmamba weights list`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fusionmamba_cli.checkpoints import bundled_weights_dir, list_weights, load_manifest
from fusionmamba_cli.checkpoints.hub import default_download_names, fetch_weights, locate, manifest_entries
from fusionmamba_cli.cli.common import JsonOpt, PresetName, QuietOpt, UsageError, console, stdout
from fusionmamba_cli.errors import WeightsNotFoundError
from fusionmamba_cli.model import list_presets


CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Hugging Face cache folder (default: $HF_HUB_CACHE, ~/.cache/huggingface/hub)."),
]

weights_app = typer.Typer(help="Weights available here (bundled, downloaded) and on the Hub.", no_args_is_help=True)


def download_weights_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Weights names from `fusionmamba weights list` (default: the general and per-task defaults).", show_default=False),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every weights file of the manifest that is not bundled.")] = False,
    repo_id: Annotated[str | None, typer.Option("--repo-id", metavar="ORG/NAME", help="Hub repository (default: the manifest's).")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit (default: the manifest's, else main).")] = None,
    cache_dir: CacheDirOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when a verified copy exists.")] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download weights from the Hugging Face Hub into its cache; every file is checked against the manifest's sha256.

    Honours HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE and HF_TOKEN. Example: fusionmamba download-weights --all
    """
    manifest = load_manifest()
    if not manifest.entries:
        raise WeightsNotFoundError(f"no weights manifest in {bundled_weights_dir()}: nothing to download")
    wanted = list(names or [])
    if all_:
        wanted += default_download_names(all_entries=True)
    elif not wanted:
        wanted = default_download_names()
        if not wanted:
            raise UsageError("name the weights to download (see `fusionmamba weights list`) or pass --all")
    wanted = list(dict.fromkeys(wanted))
    manifest_entries(wanted)  # unknown names fail before anything is downloaded
    if not wanted:
        if not quiet:
            console.print("every weights file of the manifest is bundled: nothing to download")
        return
    results = []
    for name in wanted:  # one at a time, so each finished file is reported before the next starts
        [item] = fetch_weights([name], repo_id=repo_id, revision=revision, cache_dir=cache_dir, force=force)
        results.append({"name": item.name, "status": item.status, "path": str(item.path)})
        if not quiet and not json_output:
            stdout.print(f"[green]ok[/green] {item.name}: {item.status}, sha256 verified - {item.path}")
    if json_output:
        typer.echo(json.dumps(results))


def convert_weights_command(
    source: Annotated[Path, typer.Argument(help="The authors' checkpoint (.pth state dict) or any weights file.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write.", show_default=False)],
    preset: Annotated[
        PresetName | None,
        typer.Option(
            "--preset",
            metavar="PRESET",
            help=f"Require exactly this architecture ({', '.join(list_presets())}); default: infer it from the shapes.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a checkpoint saved by the authors' code to safetensors (config in the metadata).

    Example: fusionmamba convert-weights fusion_model.pth -o ct_mri.safetensors --preset official-tiny
    """
    from fusionmamba_cli.checkpoints.convert import convert_checkpoint

    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if output.suffix.lower() != ".safetensors":
        raise UsageError(f"{output}: the output must end in .safetensors")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists (pass --overwrite to replace it)")
    config = convert_checkpoint(source, output, preset.value if preset is not None else None)
    if not quiet:
        stdout.print(
            f"[green]wrote[/green] {output} ({output.stat().st_size / 1e6:.1f} MB): dims={list(config.dims)}, "
            f"depths={list(config.depths)}, depths_decoder={list(config.depths_decoder)}, d_state={config.d_state}, "
            f"block={config.block}, fusion={config.fusion}"
        )


def weights_rows(cache_dir: Path | None = None) -> list[dict]:
    """One dict per manifest entry: where it is available (every local file verified) and its metadata."""
    manifest = load_manifest()
    rows = []
    for entry in list_weights():
        found = locate(entry, cache_dir)
        size = entry.size or (found.path.stat().st_size if found.path is not None else 0)
        rows.append({
            "name": entry.name,
            "tasks": list(entry.tasks),
            "preset": entry.preset,
            "size": size,
            "where": found.where,
            "path": str(found.path) if found.path is not None else None,
            "default": entry.name == manifest.default,
            "default_for": [task for task, name in manifest.task_defaults.items() if name == entry.name],
            "description": entry.description,
        })
    return rows


@weights_app.command("list")
def list_command(cache_dir: CacheDirOpt = None, json_output: JsonOpt = False) -> None:
    """Weights known to the manifest: bundled, downloaded (cached) or only on the Hub. No network."""
    rows = weights_rows(cache_dir)
    if json_output:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        stdout.print(f"no weights manifest in {bundled_weights_dir()}: pass --weights PATH to commands")
        return
    table = Table(title=f"weights (repository: {load_manifest().repo_id or 'none'})")
    for column in ("name", "tasks", "preset", "MB", "where"):
        table.add_column(column, justify="right" if column == "MB" else "left")
    colours = {"bundled": "green", "cached": "green", "remote-only": "yellow"}
    for row in rows:
        where = row["where"]
        marker = " (default)" if row["default"] else ""
        table.add_row(
            row["name"] + marker, ",".join(row["tasks"]), row["preset"], f"{row['size'] / 1e6:.1f}",
            f"[{colours.get(where, 'red')}]{where}[/]",
        )
    stdout.print(table)
