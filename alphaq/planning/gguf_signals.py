"""Data-free signals of a whole-model GGUF plan, keyed by GGUF tensor name.

* :func:`fisher_weights`: the self-Fisher (:mod:`alphaq.planning.self_fisher`) of every matrix of a transformers
  model, reduced to weights of the GGUF tensor it becomes: the mean over rows per input column (``[cols]``, or
  ``[E, cols]`` for a layer's experts), so a converter's row permutation (llama's q/k) does not matter, and per
  row (``[rows, 1]``) for the token embedding and output head, whose rows are tokens.
* :func:`alpha_by_tensor`: the inspect table's alpha of each matrix, as ``[E]`` per GGUF tensor.

The GGUF name of a matrix is :func:`alphaq.export.llamacpp.gguf_names` (the same mapping the export writes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

_TOKEN_ROWS = ("token_embd", "output")


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (a details table's empty cell)."""
    import pandas as pd

    return value is None or bool(pd.isna(value))


def _plan_tensor(name: str, role: str, layer: Any, expert: Any, proj: Any, rows: int, cols: int) -> Any:
    from alphaq.planning.plan_file import PlanTensor

    return PlanTensor(
        name=name,
        tensor=name,
        layer=None if _missing(layer) else int(layer),
        expert=None if _missing(expert) else int(expert),
        proj=None if _missing(proj) else str(proj),
        role=str(getattr(role, "value", role)),
        rows=int(rows),
        cols=int(cols),
        params=int(rows) * int(cols),
        bits=16,
        group_size=None,
        bytes=2 * int(rows) * int(cols),
        error=0.0,
    )


def fisher_weights(fisher: Mapping[str, torch.Tensor], model_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """GGUF name -> element weights of its squared error, from a Fisher diagonal keyed like the model's parameters.

    Args:
        fisher: :func:`alphaq.planning.self_fisher.fisher_diagonal` output (in-memory parameter names).
        model_config: the model's config (``model_type`` picks the tensor patterns).

    Returns:
        ``blk.0.attn_q.weight`` -> ``[cols]``; ``blk.0.ffn_down_exps.weight`` -> ``[E, cols]``;
        ``token_embd.weight`` / ``output.weight`` -> ``[rows, 1]``.
    """
    from alphaq.export.llamacpp import gguf_names
    from alphaq.load.in_memory import open_in_memory

    ckpt = open_in_memory(dict(fisher), model_config=dict(model_config))
    columns: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    out: dict[str, np.ndarray] = {}
    for ref in ckpt.matrices:
        rows, cols = ref.shape
        mapped = gguf_names(_plan_tensor(ref.name, ref.role, ref.layer, ref.expert, ref.proj, rows, cols))
        if mapped is None or len(mapped) != 1:
            continue
        gguf = mapped[0][0][0] + ".weight"
        f = ckpt.read_matrix(ref).double().numpy()  # [rows, cols]
        if gguf.removesuffix(".weight") in _TOKEN_ROWS:
            out[gguf] = f.mean(axis=1)[:, None]  # [rows, 1]
        else:
            columns[gguf][ref.expert if ref.expert is not None else -1] = f.mean(axis=0)  # [cols]
    for gguf, per in columns.items():
        if list(per) == [-1]:
            out[gguf] = per[-1]
        else:
            out[gguf] = np.stack([per[e] for e in sorted(per)])  # [E, cols]
    return out


def alpha_by_tensor(details: pd.DataFrame) -> dict[str, np.ndarray]:
    """GGUF name -> alpha of each of its matrices (``[E]`` for expert tensors, in expert order; ``[1]`` otherwise).

    Args:
        details: the inspect details table (``name``, ``role``, ``layer``, ``expert``, ``proj``, ``rows``, ``cols``,
            ``alpha``).
    """
    from alphaq.export.llamacpp import gguf_names

    per: dict[str, dict[int, float]] = defaultdict(dict)
    for row in details.itertuples(index=False):
        mapped = gguf_names(_plan_tensor(row.name, row.role, row.layer, row.expert, row.proj, row.rows, row.cols))
        if mapped is None or len(mapped) != 1:
            continue
        expert = -1 if _missing(row.expert) else int(row.expert)
        alpha = float("nan") if _missing(row.alpha) else float(row.alpha)
        per[mapped[0][0][0] + ".weight"][expert] = alpha
    return {name: np.array([v[e] for e in sorted(v)]) for name, v in per.items()}


__all__ = ["alpha_by_tensor", "fisher_weights"]
