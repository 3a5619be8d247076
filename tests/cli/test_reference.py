"""docs/cli.md is the output of alphaq.cli.reference and covers every registered command."""

from __future__ import annotations

from pathlib import Path

import typer

from alphaq.cli import app
from alphaq.cli.reference import REGENERATE, cli_reference_markdown, main

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_current() -> None:
    expected = cli_reference_markdown()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert actual == expected, f"docs/cli.md is out of date with alphaq.cli; regenerate it: {REGENERATE}"


def test_every_registered_command_has_a_section() -> None:
    text = cli_reference_markdown()
    names = [
        f"{name} {sub}" if hasattr(command, "commands") else name  # groups: one section per subcommand
        for name, command in typer.main.get_command(app).commands.items()
        for sub in (getattr(command, "commands", None) or [None])
    ]
    assert {"inspect", "plan", "quantize", "eval", "compare", "report", "gallery", "export"} <= set(names)
    assert {"llamacpp build", "llamacpp where"} <= set(names)
    headings = [line[len("## alphaq ") :] for line in text.splitlines() if line.startswith("## alphaq ")]
    assert headings == names  # one section each, in the app's order


def test_options_table_holds_names_types_defaults_and_help() -> None:
    text = cli_reference_markdown()
    section = text.split("## alphaq plan\n", 1)[1].split("\n## ", 1)[0]
    assert "alphaq plan [OPTIONS] [MODEL]" in section
    assert "| `--budget` | str | `3.5` | Average payload bits" in section
    assert "| `--html` / `--no-html` | flag | `--html` | Write plan.html. |" in section
    assert "| `--group-size` | int | `128` |" in section
    quantize = text.split("## alphaq quantize\n", 1)[1].split("\n## ", 1)[0]
    assert "alphaq quantize [OPTIONS] --plan PLAN --out OUT [MODEL]" in quantize
    assert "| `--plan` | path | required |" in quantize
    # pipes in help text are escaped so the table keeps four columns
    for line in section.splitlines():
        if line.startswith("| `--"):
            assert line.replace("\\|", "").count("|") == 5, line


def test_generation_is_deterministic_and_ignores_the_terminal(monkeypatch) -> None:
    first = cli_reference_markdown()
    monkeypatch.setenv("COLUMNS", "40")
    assert cli_reference_markdown() == first


def test_main_writes_the_page_atomically(tmp_path: Path, capsys) -> None:
    target = tmp_path / "cli.md"
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == cli_reference_markdown()
    assert main(["-"]) == 0
    assert capsys.readouterr().out.endswith(cli_reference_markdown())
    assert main(["--bogus"]) == 2
