"""The ``alphaq`` command line: thin wrappers that parse options, call one library function, write.

Every command takes MODEL as an optional argument (default: the bundled demo MoE) and writes into a
run folder (``--out``, default ``./alphaq-run``) that later stages and ``alphaq report`` read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from alphaq.errors import AlphaQError

app = typer.Typer(
    name="alphaq",
    help="Data-free HT-SR audit and alpha-guided mixed-precision quantization of MoE LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelArg = Annotated[Optional[Path], typer.Argument(help="Checkpoint folder (default: the bundled demo MoE).",
                                                    show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write into.")]
DEFAULT_OUT = Path("alphaq-run")


def _fail(error: AlphaQError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn AlphaQError into a one-line message and exit status 2."""
    try:
        yield
    except AlphaQError as error:
        _fail(error)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, str, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[item]}", style="dim"))
    with Progress(*columns, transient=not sys.stderr.isatty(), disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(description, total=None, item="")

        def advance(n: int, item: str, total: int) -> None:
            bar.update(task, advance=n, total=total, item=item[-60:])

        yield advance


def _parse_ints(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        values: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                values.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                values.append(int(part))
    except ValueError:
        _fail(AlphaQError(f"{option} {text!r} is not a list of integers; pass e.g. {option} 0,1,4-7"))
    return tuple(values)


@app.command()
def inspect(
    model: ModelArg = None,
    out: OutOpt = DEFAULT_OUT,
    fit: Annotated[str, typer.Option(help="Power-law estimator: ww (weightwatcher's) or hill (AlphaQ paper).")] = "ww",
    layers: Annotated[Optional[str], typer.Option(help="Only these layers, e.g. 0,1,4-7.")] = None,
    experts_only: Annotated[bool, typer.Option("--experts-only", help="Analyse expert matrices only.")] = False,
    device: Annotated[str, typer.Option(help="Device for the SVDs: cpu or cuda.")] = "cpu",
    float64: Annotated[bool, typer.Option("--float64", help="Eigenvalues in float64 (exact; slower).")] = False,
    tail_test: Annotated[bool, typer.Option(help="Power law vs lognormal test of each tail (powerlaw).")] = True,
    pattern_file: Annotated[Optional[Path], typer.Option(help="JSON tensor patterns for unknown architectures.")] = None,
    html: Annotated[bool, typer.Option(help="Write inspect.html.")] = True,
) -> None:
    """Per-matrix and per-expert HT-SR metrics, a data-free quality ranking, and an HTML report."""
    from alphaq.audit import InspectConfig, save_inspect
    from alphaq.audit import inspect as run_inspect

    with _user_errors():
        config = InspectConfig(fit=fit, dtype="float64" if float64 else "float32", device=device,  # type: ignore[arg-type]
                               layers=_parse_ints(layers, "--layers"), experts_only=experts_only, tail_test=tail_test)
        with _progress("inspect") as advance:
            result = run_inspect(model, config, pattern_file=pattern_file, progress=advance)
        save_inspect(result, out)
        if html:
            from alphaq.report.inspect_page import render_inspect

            render_inspect(out)
    _print_inspect_summary(result, out)


def _print_inspect_summary(result: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    details, experts, manifest = result.details, result.experts, result.manifest
    ckpt = manifest["checkpoint"]
    table = Table(title=f"alphaq inspect: {Path(ckpt['path']).name} ({ckpt['model_type']})", show_header=True)
    for col in ("what", "value"):
        table.add_column(col)
    fitted = details[details["status"] == "success"]
    table.add_row("matrices", f"{len(details)} ({len(fitted)} fitted)")
    routed = experts[experts["role"] == "expert"] if not experts.empty else experts
    if not routed.empty:
        alphas = routed["alpha_mean"].dropna()
        table.add_row("experts", str(len(routed)))
        table.add_row("expert alpha min / median / max", f"{alphas.min():.2f} / {alphas.median():.2f} / {alphas.max():.2f}")
        table.add_row("quality flags", ", ".join(f"{k}: {v}" for k, v in routed["quality"].value_counts().items()))
    table.add_row("time", f"{manifest['timing']['seconds']:.1f} s")
    table.add_row("written to", str(out))
    console.print(table)
    for warning in manifest["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def main() -> None:  # pragma: no cover - console entry point
    app()
