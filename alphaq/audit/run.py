"""The inspect stage: stream a checkpoint's matrices, fit HT-SR metrics, aggregate per expert, save.

The per-matrix work (selection, eigenvalues, metrics rows) is :mod:`alphaq.audit.analysis`; this module runs it
over a checkpoint, aggregates per expert (:mod:`alphaq.audit.expert_quality`) and writes the run folder.

``inspect(path)`` returns an :class:`InspectResult` (row tables, with DataFrame views); ``save_inspect`` writes
the run folder that reports and later stages read (details.csv/.parquet, experts.csv, spectra.npz, inspect.json).
Neither imports pandas or torch on CPU: a small audit is start-up bound, and pandas alone costs about 0.4 s.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from alphaq._version import __version__
from alphaq.audit.analysis import (  # noqa: F401  (BATCH_BYTES, MIN_SIDE, compress_spectrum: re-exported)
    BATCH_BYTES,
    DETAIL_COLUMNS,
    DETAIL_INT_COLUMNS,
    MIN_SIDE,
    analyse_matrices,
    compress_spectrum,
    schedule_matrices,
    select_matrices,
)
from alphaq.audit.table_files import number_or_nan
from alphaq.errors import AlphaQError, ConfigError
from alphaq.locking import locks_output
from alphaq.progress import ProgressFn
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

    from alphaq.load.checkpoint import Checkpoint


@dataclass(frozen=True)
class InspectConfig:
    """Options of the inspect stage.

    Attributes:
        fit: power-law estimator, ``ww`` (weightwatcher's criterion) or ``hill`` (AlphaQ paper).
        dtype: precision of the eigenvalue computation.
        device: torch device for the SVDs (``cpu``, ``cuda``).
        layers: only these decoder layers (None = all).
        experts_only: analyse routed and shared experts only.
        tail_test: compare the power-law tail with lognormal, exponential and truncated power-law tails
            (powerlaw 2.0, :mod:`alphaq.diagnostics.tail_compare`); about a second per matrix, so off by default.
        farms: fit the pooled ESD of random 128x128 blocks (FARMS, as in the AlphaQ code) instead of the
            whole matrix's; the block draw is seeded by ``seed``.
        seed: seed of the FARMS block draw.
        engine: ``alphaq`` (its own eigenvalues and fit) or ``weightwatcher`` (weightwatcher 0.7.7 computes every
            matrix's spectrum and metrics, in float64 on the CPU: slower, to cross-check alphaq's; fit ``ww`` only,
            no FARMS).
    """

    fit: Literal["ww", "hill"] = "ww"
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    layers: tuple[int, ...] | None = None
    experts_only: bool = False
    tail_test: bool = False
    farms: bool = False
    seed: int = 0
    engine: Literal["alphaq", "weightwatcher"] = "alphaq"

    def __post_init__(self) -> None:
        if self.fit not in ("ww", "hill"):
            raise ConfigError(f"unknown fit {self.fit!r}; use --fit ww or --fit hill")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"unknown dtype {self.dtype!r}; use float32 or float64")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.layers is not None and any(layer < 0 for layer in self.layers):
            raise ConfigError("layer indices must be >= 0; pass e.g. --layers 0,1,2")
        if self.engine not in ("alphaq", "weightwatcher"):
            raise ConfigError(f"unknown engine {self.engine!r}; use --engine alphaq or --engine weightwatcher")
        if self.engine == "weightwatcher":
            conflict = (
                "--fit hill"
                if self.fit != "ww"
                else "--farms"
                if self.farms
                else f"--device {self.device}"
                if self.device != "cpu"
                else None
            )
            if conflict:
                raise ConfigError(
                    f"--engine weightwatcher fits whole matrices with its own fit on the CPU; drop {conflict} "
                    "(or use --engine alphaq)"
                )


@dataclass
class InspectResult:
    """What inspect found.

    Attributes:
        detail_rows: one dict per matrix (:data:`DETAIL_COLUMNS`; absent keys are missing values), in checkpoint
            order.
        expert_rows: one dict per expert (:func:`alphaq.audit.expert_quality.expert_rows`).
        manifest: provenance and options (saved as inspect.json).
        spectra: eigenvalues (compressed) of the matrices the report plots, by matrix name.
    """

    detail_rows: list[dict[str, Any]]
    expert_rows: list[dict[str, Any]]
    manifest: dict[str, Any]
    spectra: dict[str, np.ndarray] = field(default_factory=dict)

    @functools.cached_property
    def details(self) -> pd.DataFrame:
        """The per-matrix table as a DataFrame (layer and expert nullable Int64), built on first use."""
        import pandas as pd

        frame = pd.DataFrame(self.detail_rows, columns=DETAIL_COLUMNS)
        for column in DETAIL_INT_COLUMNS:
            frame[column] = frame[column].astype("Int64")
        return frame

    @functools.cached_property
    def experts(self) -> pd.DataFrame:
        """The per-expert table as a DataFrame (see :func:`alphaq.audit.expert_quality.expert_frame`)."""
        from alphaq.audit.expert_quality import expert_frame

        return expert_frame(self.expert_rows)


def inspect(
    path: str | Path | Any | None = None,
    config: InspectConfig | None = None,
    *,
    pattern_file: str | Path | None = None,
    progress: ProgressFn | None = None,
    backend: Any = None,
    model_config: Any = None,
) -> InspectResult:
    """Fit HT-SR metrics to every matrix of a checkpoint, without data.

    Args:
        path: checkpoint folder or Hub model id; the bundled demo model when None. Or, in memory, a loaded
            ``transformers.PreTrainedModel`` or a state dict (name -> ``torch.Tensor``), read without saving
            (:func:`alphaq.load.in_memory.open_in_memory`; the same metrics as its saved folder, tensors named as
            in memory).
        config: options (defaults: ww fit, float32, cpu, every matrix).
        pattern_file: JSON tensor patterns for an architecture the table does not know.
        progress: called as ``progress(1, matrix name, total)`` after each matrix.
        backend: None (local) or an :class:`alphaq.distributed.RayBackend`: the matrices are analysed by Ray
            tasks (identical results); checkpoint folders only.
        model_config: a state dict's model config (dict or ``PretrainedConfig``), for its ``model_type``.

    Returns:
        The :class:`InspectResult`.

    Raises:
        AlphaQError: unreadable checkpoint, no matrix selected.
    """
    from alphaq.load import open_checkpoint
    from alphaq.load.in_memory import is_in_memory, open_in_memory

    config = config or InspectConfig()
    start = time.perf_counter()
    if is_in_memory(path):
        if backend is not None:
            raise AlphaQError(
                "a Ray backend reads the checkpoint from a folder every node sees; save the model "
                "(save_pretrained) and pass that folder, or drop the backend"
            )
        ckpt = open_in_memory(path, model_config=model_config, pattern_file=pattern_file)
    else:
        if model_config is not None:
            raise ConfigError("model_config is for a state dict; a checkpoint folder's config.json is used")
        if path is None:
            from alphaq.zoo.demo import demo_model_path

            path = demo_model_path()
        ckpt = open_checkpoint(path, pattern_file=pattern_file)
    refs = select_matrices(ckpt.matrices, config)
    if not refs:
        raise AlphaQError(
            f"{ckpt.path}: no matrix selected (layers={config.layers}, experts_only={config.experts_only}); "
            "check --layers, or pass --pattern-file if this architecture's experts are not recognised"
        )
    if config.experts_only and not any(r.role.value == "expert" for r in refs):
        raise AlphaQError(
            f"{ckpt.path}: no routed expert found for model_type {ckpt.model_type!r}; "
            "pass --pattern-file with the expert tensor patterns"
        )
    order = {ref.name: i for i, ref in enumerate(refs)}
    rows: list[dict[str, Any]] = []
    spectra: dict[str, np.ndarray] = {}
    # Costliest first, same shapes consecutive (so their SVDs batch); rows go back to checkpoint order below.
    scheduled = schedule_matrices(refs)
    analysed = (
        analyse_matrices(ckpt, scheduled, config)
        if backend is None
        else backend.analyse(ckpt, scheduled, config, pattern_file=pattern_file)
    )
    for ref, row, spectrum in analysed:
        rows.append(row)
        if spectrum is not None:
            spectra[ref.name] = spectrum
        if progress is not None:
            progress(1, ref.name, len(refs))
    rows.sort(key=lambda row: order[row["name"]])
    from alphaq.audit.expert_quality import expert_rows

    experts = expert_rows(rows)
    warnings = _warnings(rows, experts, ckpt)
    manifest = {
        "schema_version": INSPECT_SCHEMA_VERSION,
        "stage": "inspect",
        "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {
            "path": str(ckpt.path),
            "fingerprint": ckpt.fingerprint,
            "model_type": ckpt.model_type,
            "num_layers": ckpt.num_layers,
            "num_experts": ckpt.num_experts,
            "architecture": ckpt.spec.model_types[0],
        },
        "options": {
            **asdict(config),
            "layers": list(config.layers) if config.layers else None,
            **({"dtype": "float64"} if config.engine == "weightwatcher" else {}),
        },  # weightwatcher's SVD precision
        "timing": {"seconds": round(time.perf_counter() - start, 3), "matrices": len(rows)},
        "warnings": warnings,
        "spectra_file": SPECTRA_NPZ,
        "skipped_tensors": len(ckpt.skipped),
    }
    if backend is not None:
        manifest["executor"] = backend.describe()
    return InspectResult(rows, experts, manifest, _plotted_spectra(rows, experts, spectra))


@locks_output("out_dir", "inspect")
def save_inspect(result: InspectResult, out_dir: str | Path) -> Path:
    """Write the run folder: details.csv and .parquet, experts.csv, spectra.npz,
    inspect.json. The files are written together (:func:`alphaq.atomic.staged_files`): a failure (a full disk)
    leaves none of them, and inspect.json is renamed into place last; returns the folder."""
    from alphaq.atomic import staged_files
    from alphaq.audit.expert_quality import EXPERT_COLUMNS, EXPERT_INT_COLUMNS
    from alphaq.audit.table_files import column_kinds, write_csv, write_parquet
    from alphaq.load.in_memory import IN_MEMORY_PREFIX
    from alphaq.runfolder import record_path

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AlphaQError(f"--out {out} is an existing file; pass a folder path (or remove the file)")
    details, experts = result.detail_rows, result.expert_rows
    by_name = {row["name"]: row for row in details}
    arrays: dict[str, np.ndarray] = {}
    for name, evals in result.spectra.items():
        arrays[name] = evals
        arrays[f"{name}::xmin"] = np.asarray(number_or_nan(by_name[name].get("xmin")), dtype=np.float64)
        arrays[f"{name}::alpha"] = np.asarray(number_or_nan(by_name[name].get("alpha")), dtype=np.float64)
    kinds = column_kinds(details, DETAIL_COLUMNS, DETAIL_INT_COLUMNS)  # one typing pass for the CSV and the Parquet
    with staged_files(out) as files:
        files.write_with(DETAILS_CSV, lambda p: write_csv(p, details, DETAIL_COLUMNS, kinds=kinds))
        files.write_with(DETAILS_PARQUET, lambda p: write_parquet(p, details, DETAIL_COLUMNS, kinds=kinds))
        files.write_with(EXPERTS_CSV, lambda p: write_csv(p, experts, EXPERT_COLUMNS, EXPERT_INT_COLUMNS))
        files.write_with(SPECTRA_NPZ, lambda p: _save_npz(p, arrays))
        ckpt = result.manifest["checkpoint"]  # its path as the run folder records paths (runfolder.record_path)
        path = ckpt["path"] if ckpt["path"].startswith(IN_MEMORY_PREFIX) else record_path(ckpt["path"], base=out)
        files.write_json(INSPECT_JSON, {**result.manifest, "checkpoint": {**ckpt, "path": path}})
    return out


# -- internals ---------------------------------------------------------------------------------------


def _plotted_spectra(
    details: list[dict[str, Any]], experts: list[dict[str, Any]], spectra: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The spectra the report plots: every matrix of the best, median and worst routed experts, and the
    three matrices with the highest alpha."""
    names: list[str] = []
    routed = sorted(
        (row for row in experts if row["role"] == "expert" and not math.isnan(row["alpha_mean"])),
        key=lambda row: row["alpha_mean"],
    )  # stable: ties keep the table's order
    if routed:
        for pick in (routed[0], routed[len(routed) // 2], routed[-1]):
            names.extend(
                row["name"]
                for row in details
                if row.get("layer") == pick["layer"] and row.get("expert") == pick["expert"] and row["role"] == "expert"
            )
    fitted = sorted(
        (row for row in details if row["status"] == "success"), key=lambda row: -number_or_nan(row.get("alpha"))
    )
    names.extend(row["name"] for row in fitted[:3])
    return {n: spectra[n] for n in dict.fromkeys(names) if n in spectra}


def _warnings(details: list[dict[str, Any]], experts: list[dict[str, Any]], ckpt: Checkpoint) -> list[str]:
    out = []
    for status in ("nonfinite", "failed", "skipped"):
        count = sum(1 for row in details if row["status"] == status)
        if count:
            out.append(f"{count} matrices with status '{status}' (see the details table)")
    if not any(row["role"] == "expert" for row in details):
        out.append(f"no routed expert found for model_type {ckpt.model_type!r}: metrics cover the other matrices only")
    flagged = Counter(row["quality"] for row in experts if row["quality"] != "ok")
    for label, count in sorted(flagged.items(), key=lambda item: -item[1]):  # most frequent first, ties in order
        out.append(f"{count} expert{'s' if count != 1 else ''} flagged '{label}'")
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
