"""Pieces shared by the command modules: argument types, one-line user errors, the progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from alphaq.errors import AlphaQError
from alphaq.planning.defaults import DEFAULT_GAMMA

ModelArg = Annotated[
    Path | None, typer.Argument(help="Checkpoint folder (default: the bundled demo MoE).", show_default=False)
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder to write into.")]
DEFAULT_OUT = Path("alphaq-run")
# plan options, declared once for `alphaq plan`, `alphaq run` (and `alphaq compare` where they apply)
BudgetOpt = Annotated[
    str,
    typer.Option(
        help="Average payload bits per expert weight (3.5) or total expert bytes (12GB); with --target gguf the GGUF "
        "file: its size (7.5MB), bits per weight of the whole file (3.5) or a llama-quantize preset (Q3_K_M)."
    ),
]
WidthsOpt = Annotated[
    str | None,
    typer.Option(
        help="Candidate widths, any subset of 1..8 (default 2,3,4,8; with --target gguf 2,3,4,5,6,8).",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str,
    typer.Option(
        help="alphaq (alphaq's packed checkpoint) | gguf (a whole-model llama.cpp plan: one type per GGUF tensor, "
        "Q2_K..Q6_K/Q8_0/F16, bytes and errors measured with llama-quantize, the budget is the file)."
    ),
]
GroupSizeOpt = Annotated[int, typer.Option(help="Columns per scale/zero group (128, 64, 32).")]
GranularityOpt = Annotated[
    str | None,
    typer.Option(
        help="expert | matrix | layer (layer = one width per layer and projection); default expert, layer for --target gguf.",
        show_default=False,
    ),
]
GammaOpt = Annotated[float, typer.Option(help="Exponent of the alpha importance (median_alpha / alpha)^gamma.")]
AllocatorOpt = Annotated[
    str,
    typer.Option(
        help="alphaq | uniform | random | alpha_ratio | weight_norm | frequency (frequency needs --calibration-text)."
    ),
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        "--quant-method",
        help="Quantizer of the plan's error model and of the checkpoint: rtn | rtn_clip | hqq.",
    ),
]
ErrorModelOpt = Annotated[str, typer.Option(help="measured (quantize the weights) or analytic (Var(W) 2^-2b).")]
MinBitsOpt = Annotated[str | None, typer.Option(help="Lower bounds: global and per layer, e.g. '2,0:4'.")]
MaxBitsOpt = Annotated[str | None, typer.Option(help="Upper bounds, same form.")]
KeepOpt = Annotated[str, typer.Option(help="Widths of matrices outside the budget, e.g. attention=16,shared=8.")]
SolverOpt = Annotated[str, typer.Option(help="exact | lagrangian | auto.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the random allocator.")]
CalibrationTextOpt = Annotated[
    Path | None, typer.Option(help="Text for the frequency allocator (the only one that needs data).")
]
PatternFileOpt = Annotated[Path | None, typer.Option(help="JSON tensor patterns for unknown architectures.")]
DeviceOpt = Annotated[str, typer.Option(help="Where to compute: cpu or cuda.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        help="local (this process) or ray (one task per matrix on a Ray cluster that sees the checkpoint at the same path; pip install 'alphaq[ray]')."
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="--backend ray: the cluster's address, e.g. ray://head:10001 (default: $RAY_ADDRESS, else a Ray started here).",
    ),
]
#: Defaults of the plan options (one place for `plan` and `run`).
PLAN_DEFAULTS = {
    "budget": "3.5",
    "widths": None,
    "group_size": 128,
    "granularity": None,
    "allocator": "alphaq",
    "gamma": DEFAULT_GAMMA,
    "method": "rtn",
    "error_model": "measured",
    "keep": "",
    "solver": "auto",
    "seed": 0,
}


def plan_config(
    *,
    budget: str,
    widths: str | None,
    group_size: int,
    granularity: str | None,
    allocator: str,
    gamma: float,
    method: str,
    error_model: str = "measured",
    min_bits: str | None = None,
    max_bits: str | None = None,
    keep: str = "",
    solver: str = "auto",
    seed: int = 0,
    target: str = "alphaq",
) -> Any:
    """The :class:`alphaq.planning.planner.PlanConfig` of the shared plan options (validated there).

    Returns:
        The config.

    Raises:
        ConfigError: an invalid option (its message names the option).
    """
    from alphaq.planning.planner import PlanConfig

    return PlanConfig(
        budget=budget,
        widths=widths,
        group_size=group_size,
        granularity=granularity,  # type: ignore[arg-type]
        allocator=allocator,
        gamma=gamma,
        error_model=error_model,
        quant_method=method,  # type: ignore[arg-type]
        min_bits=min_bits,
        max_bits=max_bits,
        keep=keep or None,
        solver=solver,
        seed=seed,  # type: ignore[arg-type]
        target=target,
    )


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (an empty or missing list gives ``[]``)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def fail(error: AlphaQError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn AlphaQError, and an OSError from a write (read-only or full disk, a file where a folder should be),
    into a one-line message and exit status 2. ``ALPHAQ_DEBUG=1`` re-raises OSErrors with their traceback."""
    from alphaq.locking import describe_os_error

    try:
        yield
    except AlphaQError as error:
        fail(error)
    except OSError as error:
        if os.environ.get("ALPHAQ_DEBUG"):
            raise
        typer.echo(f"error: {describe_os_error(error)}", err=True)
        raise typer.Exit(code=2) from None


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, str, int], None]]:
    """A rich progress bar on stderr when it is a terminal; elsewhere (a pipe, a log file) nothing is drawn and
    rich's progress module is not even imported."""
    if not sys.stderr.isatty():
        yield lambda n, item, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[item]}", style="dim"),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=None, item="")

        def advance(n: int, item: str, total: int) -> None:
            bar.update(task, advance=n, total=total, item=item[-60:])

        yield advance
