"""The ``gguf`` planner target's measured errors: every routed-expert matrix quantized by llama.cpp itself.

Convert the checkpoint once to a 16-bit GGUF, run ``llama-quantize`` once per candidate type with every
routed-expert tensor at that type (``ffn_*_exps=q2_k``; the rest Q8_0, unused), read each result back and
dequantize each expert's slice with the ``gguf`` package, and take the relative Frobenius error
``||W - dequant(quant(W))||_F / ||W||_F`` against the checkpoint's own matrix. The table is cached in the run
folder (``gguf_errors.json``) for the checkpoint fingerprint, the llama.cpp build and the widths.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.errors import PlanError
from alphaq.export.ggml_types import GGUF_WIDTH_TYPES, check_gguf_widths
from alphaq.export.gguf_io import EXPERT_PATTERN, convert_checkpoint, expert_slices, quantize_gguf
from alphaq.export.llamacpp_tools import LlamaCppTools, find_tools
from alphaq.planning.costs import MatrixErrors
from alphaq.progress import ProgressFn

if TYPE_CHECKING:
    import pandas as pd
    import torch

GGUF_ERRORS_JSON = "gguf_errors.json"
GGUF_ERRORS_SCHEMA_VERSION = 1


def measure_gguf_errors(
    details: pd.DataFrame,
    read_matrix: Callable[[str], torch.Tensor],
    widths: Sequence[int],
    *,
    model_dir: str | Path,
    fingerprint: str,
    run_dir: str | Path | None = None,
    tools: LlamaCppTools | None = None,
    progress: ProgressFn | None = None,
) -> MatrixErrors:
    """Every routed-expert matrix's error at every ``gguf`` width, measured with llama.cpp.

    Args:
        details: inspect details (routed-expert rows, with layer / expert / proj, are measured).
        read_matrix: ``name -> float32 [rows, cols]`` from the checkpoint (the reference weights).
        widths: ``gguf``-target widths (subset of 2,3,4,5,6,8).
        model_dir: checkpoint folder (converted with llama.cpp's converter).
        fingerprint: the checkpoint's fingerprint (cache key).
        run_dir: where ``gguf_errors.json`` is cached (None: no cache).
        tools: llama.cpp tools (default :func:`find_tools`).
        progress: ``progress(1, type name, total)`` per width.

    Returns:
        :class:`MatrixErrors` with model ``measured``.

    Raises:
        LlamaCppMissing: the tools are not built.
        PlanError: an expert matrix has no GGUF tensor or a different shape there.
    """
    from alphaq.planning.units import expert_rows

    check_gguf_widths(tuple(widths))
    tools = tools or find_tools()
    rows = expert_rows(details)
    names = tuple(str(n) for n in rows["name"])
    key = {
        "fingerprint": fingerprint,
        "widths": list(widths),
        "llama_cpp_python": tools.info.get("llama_cpp_python"),
        "matrices": len(names),
    }
    cache = Path(run_dir) / GGUF_ERRORS_JSON if run_dir is not None else None
    cached = _load_cache(cache, key, names)
    if cached is not None:
        return cached
    where = {
        (int(r.layer), int(r.expert), str(r.proj)): i
        for i, r in enumerate(rows[["layer", "expert", "proj"]].itertuples(index=False))
    }
    from alphaq.planning.costs import check_finite

    reference = [check_finite(name, read_matrix(name).detach().float()).numpy() for name in names]  # [rows, cols] each
    sq_norm = np.array([float(np.square(w, dtype=np.float64).sum()) for w in reference])
    error = np.full((len(names), len(widths)), np.nan)
    with tempfile.TemporaryDirectory(prefix="alphaq-gguf-errors-") as tmp:
        source = convert_checkpoint(tools, model_dir, Path(tmp) / "source.gguf")
        for column, width in enumerate(widths):
            ggml = GGUF_WIDTH_TYPES[width]
            out = Path(tmp) / f"experts-{ggml}.gguf"
            quantize_gguf(
                tools, source, out, tensor_type_file=None, flags=["--tensor-type", f"{EXPERT_PATTERN}={ggml.lower()}"]
            )
            for layer, proj, weights in expert_slices(out):  # [E, rows, cols]
                for expert in range(weights.shape[0]):
                    i = where.get((layer, expert, proj))
                    if i is None:
                        continue
                    ref = reference[i]
                    if weights.shape[1:] != ref.shape:
                        raise PlanError(
                            f"GGUF tensor blk.{layer}.ffn_{proj}_exps holds expert {expert} as "
                            f"{tuple(weights.shape[1:])}, the checkpoint {ref.shape}; the details "
                            "belong to another checkpoint: re-run `alphaq inspect`"
                        )
                    diff = ref - weights[expert]
                    error[i, column] = float(np.sqrt(np.square(diff, dtype=np.float64).sum() / sq_norm[i]))
            out.unlink()
            if progress is not None:
                progress(1, ggml, len(widths))
    missing = [names[i] for i in np.where(np.isnan(error).any(axis=1))[0]]
    if missing:
        raise PlanError(
            f"no GGUF expert tensor holds {missing[0]} ({len(missing)} matrices unmatched); the "
            "converter named its experts differently (fused gate_up?): plan with the default target"
        )
    result = MatrixErrors(names, tuple(int(w) for w in widths), error, sq_norm, "measured")
    if cache is not None:
        _save_cache(cache, key, result, tools)
    return result


def _load_cache(path: Path | None, key: dict[str, Any], names: tuple[str, ...]) -> MatrixErrors | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        data.get("schema_version") != GGUF_ERRORS_SCHEMA_VERSION
        or data.get("key") != key
        or tuple(data.get("names", ())) != names
    ):
        return None
    return MatrixErrors(
        names,
        tuple(key["widths"]),
        np.asarray(data["error"], dtype=np.float64),
        np.asarray(data["sq_norm"], dtype=np.float64),
        "measured",
    )


def _save_cache(path: Path, key: dict[str, Any], errors: MatrixErrors, tools: LlamaCppTools) -> None:
    from alphaq._version import __version__
    from alphaq.atomic import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "schema_version": GGUF_ERRORS_SCHEMA_VERSION,
            "alphaq_version": __version__,
            "key": key,
            "llama_cpp": tools.describe(),
            "types": {str(w): GGUF_WIDTH_TYPES[w] for w in errors.widths},
            "names": list(errors.names),
            "error": errors.error.tolist(),
            "sq_norm": errors.sq_norm.tolist(),
        },
    )
