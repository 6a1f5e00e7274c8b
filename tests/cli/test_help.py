"""Every command's --help reads completely at 80 columns: no line longer, nothing cut with an
ellipsis, every option name and environment variable whole."""

from __future__ import annotations

import re

import pytest
import typer

from fusionmamba_cli.cli.app import app
from tests.cli.helpers import run_cli


def _commands() -> list[tuple[list[str], object]]:
    """(argv path, command) for every command and sub-command, the root included."""
    found: list[tuple[list[str], object]] = []

    def walk(path: list[str], command) -> None:
        found.append((path, command))
        if hasattr(command, "commands"):  # a group (Typer's own Click copy: no isinstance)
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


@pytest.mark.parametrize("path,command", _commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_reads_completely_at_80_columns(capsys, monkeypatch, path, command):
    monkeypatch.setenv("COLUMNS", "80")
    result = run_cli(capsys, *path, "--help")
    assert result.code == 0, result.err
    text = result.out
    assert text.strip()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text  # what Rich puts where it cuts
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-"):
                assert re.search(rf"(^|[\s,/]){re.escape(name)}($|[\s,=])", text, re.M), f"{name} cut in:\n{text}"
        for env in re.findall(r"\$?FUSIONMAMBA_[A-Z_]+", getattr(param, "help", None) or ""):
            assert env in text, f"{env} cut in:\n{text}"
