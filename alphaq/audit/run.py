"""The inspect stage: stream a checkpoint's matrices, fit HT-SR metrics, aggregate per expert, save.

``inspect(path)`` returns an :class:`InspectResult` (DataFrames); ``save_inspect`` writes the run
folder that reports and later stages read (details.csv/.parquet, experts.csv, spectra.npz, inspect.json).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alphaq._version import __version__
from alphaq.errors import AlphaQError, ConfigError
from alphaq.locking import locks_output
from alphaq.runfolder import (
    DETAILS_CSV,
    DETAILS_PARQUET,
    EXPERTS_CSV,
    INSPECT_JSON,
    INSPECT_SCHEMA_VERSION,
    SPECTRA_NPZ,
)

if TYPE_CHECKING:
    import pandas as pd

#: Matrices whose smaller side is below this are not fitted (status "skipped").
MIN_SIDE = 8
#: Bytes of float32 weights stacked into one batched eigenvalue call.
BATCH_BYTES = 256 * 1024 * 1024
#: A saved spectrum keeps every eigenvalue up to this count, else the top 256 and quantiles of the rest.
SPECTRUM_POINTS = 1024

#: progress(advance, item, total): called once per matrix.
ProgressFn = Callable[[int, str, int], None]
_IDENTITY_COLUMNS = frozenset({"name", "tensor", "layer", "expert", "proj", "role", "rows", "cols", "params", "dtype", "fit"})

DETAIL_COLUMNS = [
    "name", "tensor", "layer", "expert", "proj", "role", "rows", "cols", "params", "dtype", "num_evals", "alpha",
    "alpha_weighted", "D", "sigma", "xmin", "xmax", "num_pl_spikes", "lambda_max", "norm", "log_norm",
    "spectral_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank", "matrix_rank", "entropy", "detX_num",
    "detX_val", "R_lognormal", "p_lognormal", "fit", "status", "warning", "message",
]


@dataclass(frozen=True)
class InspectConfig:
    """Options of the inspect stage.

    Attributes:
        fit: power-law estimator, ``ww`` (weightwatcher's criterion) or ``hill`` (AlphaQ paper).
        dtype: precision of the eigenvalue computation.
        device: torch device for the SVDs (``cpu``, ``cuda``).
        layers: only these decoder layers (None = all).
        experts_only: analyse routed and shared experts only.
        tail_test: compare the power-law tail with lognormal (powerlaw 2.0, alpha range fixed); about a second
            per matrix, so off by default.
        farms: fit the pooled ESD of random 128x128 blocks (FARMS, as in the AlphaQ code) instead of the
            whole matrix's; the block draw is seeded by ``seed``.
        seed: seed of the FARMS block draw.
    """

    fit: Literal["ww", "hill"] = "ww"
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    layers: tuple[int, ...] | None = None
    experts_only: bool = False
    tail_test: bool = False
    farms: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fit not in ("ww", "hill"):
            raise ConfigError(f"unknown fit {self.fit!r}; use --fit ww or --fit hill")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise ConfigError("layer indices must be >= 0; pass e.g. --layers 0,1,2")


@dataclass
class InspectResult:
    """What inspect found.

    Attributes:
        details: one row per matrix (:data:`DETAIL_COLUMNS`).
        experts: one row per expert (see :mod:`alphaq.audit.expert_quality`).
        manifest: provenance and options (saved as inspect.json).
        spectra: eigenvalues (compressed) of the matrices the report plots, by matrix name.
    """

    details: pd.DataFrame
    experts: pd.DataFrame
    manifest: dict[str, Any]
    spectra: dict[str, np.ndarray] = field(default_factory=dict)


def inspect(path: str | Path | None = None, config: InspectConfig | None = None, *,
            pattern_file: str | Path | None = None, progress: ProgressFn | None = None,
            backend: Any = None) -> InspectResult:
    """Fit HT-SR metrics to every matrix of a checkpoint, without data.

    Args:
        path: checkpoint folder; the bundled demo model when None.
        config: options (defaults: ww fit, float32, cpu, every matrix).
        pattern_file: JSON tensor patterns for an architecture the table does not know.
        progress: called as ``progress(1, matrix name, total)`` after each matrix.
        backend: None (local) or an :class:`alphaq.distributed.RayBackend`: the matrices are analysed by Ray
            tasks (identical results).

    Returns:
        The :class:`InspectResult`.

    Raises:
        AlphaQError: unreadable checkpoint, no matrix selected.
    """
    from alphaq.load import open_checkpoint

    config = config or InspectConfig()
    if path is None:
        from alphaq.zoo.demo import demo_model_path

        path = demo_model_path()
    start = time.perf_counter()
    ckpt = open_checkpoint(path, pattern_file=pattern_file)
    refs = select_matrices(ckpt.matrices, config)
    if not refs:
        raise AlphaQError(f"{ckpt.path}: no matrix selected (layers={config.layers}, experts_only={config.experts_only}); "
                          "check --layers, or pass --pattern-file if this architecture's experts are not recognised")
    if config.experts_only and not any(r.role.value == "expert" for r in refs):
        raise AlphaQError(f"{ckpt.path}: no routed expert found for model_type {ckpt.model_type!r}; "
                          "pass --pattern-file with the expert tensor patterns")
    order = {ref.name: i for i, ref in enumerate(refs)}
    rows: list[dict[str, Any]] = []
    spectra: dict[str, np.ndarray] = {}
    # Same-shape matrices are consecutive so their SVDs batch; rows go back to checkpoint order below.
    by_shape = sorted(refs, key=lambda r: (r.shape, order[r.name]))
    _preload_tables()  # pandas loads on another thread while the first matrices are read and computed
    analysed = (analyse_matrices(ckpt, by_shape, config) if backend is None
                else backend.analyse(ckpt, by_shape, config, pattern_file=pattern_file))
    for ref, row, spectrum in analysed:
        rows.append(row)
        if spectrum is not None:
            spectra[ref.name] = spectrum
        if progress is not None:
            progress(1, ref.name, len(refs))
    rows.sort(key=lambda row: order[row["name"]])
    import pandas as pd

    from alphaq.audit.expert_quality import aggregate_experts

    details = pd.DataFrame(rows, columns=DETAIL_COLUMNS)
    details["layer"] = details["layer"].astype("Int64")
    details["expert"] = details["expert"].astype("Int64")
    experts = aggregate_experts(details)
    warnings = _warnings(details, experts, ckpt)
    manifest = {
        "schema_version": INSPECT_SCHEMA_VERSION, "stage": "inspect", "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"path": str(ckpt.path), "fingerprint": ckpt.fingerprint, "model_type": ckpt.model_type,
                       "num_layers": ckpt.num_layers, "num_experts": ckpt.num_experts,
                       "architecture": ckpt.spec.model_types[0]},
        "options": {**asdict(config), "layers": list(config.layers) if config.layers else None},
        "timing": {"seconds": round(time.perf_counter() - start, 3), "matrices": len(details)},
        "warnings": warnings, "spectra_file": SPECTRA_NPZ,
        "skipped_tensors": len(ckpt.skipped),
    }
    if backend is not None:
        manifest["executor"] = backend.describe()
    return InspectResult(details, experts, manifest, _plotted_spectra(details, experts, spectra))


@locks_output("out_dir", "inspect")
def save_inspect(result: InspectResult, out_dir: str | Path) -> Path:
    """Write the run folder: details.csv (+ .parquet when pyarrow is installed), experts.csv, spectra.npz,
    inspect.json. The files are written together (:func:`alphaq.atomic.staged_files`): a failure (a full disk)
    leaves none of them, and inspect.json is renamed into place last; returns the folder."""
    from alphaq.atomic import staged_files

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AlphaQError(f"--out {out} is an existing file; pass a folder path (or remove the file)")
    arrays: dict[str, np.ndarray] = {}
    for name, evals in result.spectra.items():
        arrays[name] = evals
        match = result.details[result.details["name"] == name].iloc[0]
        arrays[f"{name}::xmin"] = np.asarray(match["xmin"], dtype=np.float64)
        arrays[f"{name}::alpha"] = np.asarray(match["alpha"], dtype=np.float64)
    with staged_files(out) as files:
        files.write_with(DETAILS_CSV, lambda p: result.details.to_csv(p, index=False))
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            files.write_with("details.json", lambda p: result.details.to_json(p, orient="records", indent=1))
        else:
            files.write_with(DETAILS_PARQUET, lambda p: result.details.to_parquet(p, index=False))
        files.write_with(EXPERTS_CSV, lambda p: result.experts.to_csv(p, index=False))
        files.write_with(SPECTRA_NPZ, lambda p: _save_npz(p, arrays))
        files.write_json(INSPECT_JSON, result.manifest)
    return out


def compress_spectrum(evals: np.ndarray, max_points: int = SPECTRUM_POINTS) -> np.ndarray:
    """Keep a spectrum small for plotting: all of it, or the top 256 and quantiles of the rest (ascending)."""
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    if evals.size <= max_points:
        return evals
    head, tail = evals[:-256], evals[-256:]
    picks = np.quantile(head, np.linspace(0.0, 1.0, max_points - 256))
    return np.concatenate([picks, tail])


def analyse_matrices(ckpt: Any, refs: Sequence[Any], config: InspectConfig) -> Iterator[tuple[Any, dict[str, Any], np.ndarray | None]]:
    """Eigenvalues and metrics of ``refs`` (same-shape matrices consecutive, so their eigenvalues batch).

    Args:
        ckpt: the open checkpoint.
        refs: its matrices to analyse.
        config: the options.

    Returns:
        An iterator of (ref, its details row, its compressed spectrum or None when not fitted).
    """
    for ref, evals, status, message in _spectra(ckpt, refs, config):
        yield ref, _metrics_row(ref, evals, status, message, config), (None if evals is None else compress_spectrum(evals))


def select_matrices(matrices: Sequence[Any], config: InspectConfig) -> list[Any]:
    """The matrices the config selects (layers, experts only)."""
    chosen = []
    for ref in matrices:
        if config.experts_only and ref.role.value not in ("expert", "shared_expert"):
            continue
        if config.layers is not None and ref.layer not in config.layers:
            continue
        chosen.append(ref)
    return chosen


# -- internals ---------------------------------------------------------------------------------------


def _spectra(ckpt: Any, refs: Sequence[Any], config: InspectConfig) -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
    """Yield (ref, ascending eigenvalues or None, status, message), batching same-shape matrices."""
    if config.device == "cpu" and not config.farms:
        yield from _cpu_spectra(ckpt, refs, config)
        return
    import torch

    from alphaq.diagnostics.spectrum import eigenvalues, farms_eigenvalues

    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    pending: list[tuple[Any, Any]] = []

    def flush() -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
        if not pending:
            return
        stacked = torch.stack([m for _, m in pending])  # [B, out, in]
        batch_evals = eigenvalues(stacked, dtype=dtype, device=config.device)  # [B, K]
        for (ref, _), evals in zip(pending, batch_evals):
            yield ref, evals, "success", ""
        pending.clear()

    for ref in refs:
        if min(ref.shape) < MIN_SIDE:
            yield ref, None, "skipped", _too_small(ref)
            continue
        matrix = ckpt.read_matrix(ref, dtype=torch.float32)
        if not torch.isfinite(matrix).all():
            yield ref, None, "nonfinite", _nonfinite(int((~torch.isfinite(matrix)).sum()))
            continue
        if config.farms:
            yield ref, farms_eigenvalues(matrix, seed=config.seed), "success", ""
            continue
        if pending and (pending[0][1].shape != matrix.shape or
                        (len(pending) + 1) * matrix.numel() * 4 > BATCH_BYTES):
            yield from flush()
        pending.append((ref, matrix))
    yield from flush()


def _cpu_spectra(ckpt: Any, refs: Sequence[Any], config: InspectConfig) -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
    """:func:`_spectra` on CPU without torch: numpy reads (:meth:`Checkpoint.read_array`) streamed through
    :func:`alphaq.diagnostics.spectrum.stream_eigenvalues` (the next matrix is read while others compute)."""
    from alphaq.diagnostics.spectrum import count_nonfinite, stream_eigenvalues

    problems: dict[str, tuple[str, str]] = {}

    def matrices() -> Iterator[tuple[Any, np.ndarray | None]]:
        for ref in refs:
            if min(ref.shape) < MIN_SIDE:
                problems[ref.name] = ("skipped", _too_small(ref))
                yield ref, None
                continue
            matrix = ckpt.read_array(ref)  # [out, in] float32
            bad = count_nonfinite(matrix)
            if bad:
                problems[ref.name] = ("nonfinite", _nonfinite(bad))
                matrix = None
            yield ref, matrix

    for ref, evals in stream_eigenvalues(matrices(), dtype=config.dtype):
        status, message = problems.pop(ref.name, ("success", ""))
        yield ref, evals, status, message


def _too_small(ref: Any) -> str:
    return f"matrix {ref.shape[0]}x{ref.shape[1]} is too small to fit (min side {MIN_SIDE})"


def _nonfinite(count: int) -> str:
    return f"{count} NaN/Inf weights; fix or re-download the checkpoint"


def _preload_tables() -> None:
    """Import pandas (through :mod:`alphaq.audit.expert_quality`) on a background thread: about half a second of
    start-up that overlaps the eigenvalue computation instead of preceding it."""
    import importlib
    import sys
    import threading

    # what the computation itself needs is imported here first, so the background import never holds the import
    # lock of a module the main thread is waiting for
    import alphaq.diagnostics.esd_metrics
    import alphaq.diagnostics.lapack
    import alphaq.diagnostics.spectrum  # noqa: F401

    if "alphaq.audit.expert_quality" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("alphaq.audit.expert_quality",),
                         name="alphaq-preload").start()


def _metrics_row(ref: Any, evals: np.ndarray | None, status: str, message: str, config: InspectConfig) -> dict[str, Any]:
    from alphaq.diagnostics.esd_metrics import esd_metrics

    row: dict[str, Any] = {
        "name": ref.name, "tensor": ref.tensor, "layer": ref.layer, "expert": ref.expert, "proj": ref.proj,
        "role": ref.role.value, "rows": ref.shape[0], "cols": ref.shape[1], "params": ref.params, "dtype": ref.dtype,
        "fit": config.fit, "status": status, "warning": "", "message": message,
    }
    if evals is None:
        return row
    metrics = esd_metrics(evals, method=config.fit, max_dim=max(ref.shape)).to_dict()
    row.update({k: v for k, v in metrics.items() if k in DETAIL_COLUMNS and k not in _IDENTITY_COLUMNS})
    if config.tail_test and row["status"] == "success":
        from alphaq.diagnostics.tail_compare import compare_power_law

        comparison = compare_power_law(evals, row["xmin"])
        row["R_lognormal"], row["p_lognormal"] = comparison.R_lognormal, comparison.p_lognormal
    return row


def _plotted_spectra(details: pd.DataFrame, experts: pd.DataFrame, spectra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The spectra the report plots: every matrix of the best, median and worst routed experts, and the
    three matrices with the highest alpha."""
    names: list[str] = []
    routed = experts[(experts["role"] == "expert") & experts["alpha_mean"].notna()].sort_values("alpha_mean")
    if not routed.empty:
        picks = [routed.iloc[0], routed.iloc[len(routed) // 2], routed.iloc[-1]]
        for pick in picks:
            mask = (details["layer"] == pick["layer"]) & (details["expert"] == pick["expert"]) & (details["role"] == "expert")
            names.extend(details.loc[mask, "name"])
    fitted = details[details["status"] == "success"].sort_values("alpha", ascending=False)
    names.extend(fitted["name"].head(3))
    return {n: spectra[n] for n in dict.fromkeys(names) if n in spectra}


def _warnings(details: pd.DataFrame, experts: pd.DataFrame, ckpt: Any) -> list[str]:
    out = []
    for status in ("nonfinite", "failed", "skipped"):
        count = int((details["status"] == status).sum())
        if count:
            out.append(f"{count} matrices with status '{status}' (see the details table)")
    if not (details["role"] == "expert").any():
        out.append(f"no routed expert found for model_type {ckpt.model_type!r}: metrics cover the other matrices only")
    flagged = experts[experts["quality"] != "ok"] if not experts.empty else experts
    for label, count in (flagged["quality"].value_counts().items() if not flagged.empty else []):
        out.append(f"{count} expert{'s' if count != 1 else ''} flagged '{label}'")
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
