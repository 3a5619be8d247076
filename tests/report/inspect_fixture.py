"""A synthetic inspect run folder (details, experts, spectra) and an HTML table parser: the report pages' tests."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

PROJS = ("gate_proj", "up_proj", "down_proj")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
DETAIL_COLUMNS = [
    "name",
    "tensor",
    "layer",
    "expert",
    "proj",
    "role",
    "rows",
    "cols",
    "params",
    "dtype",
    "num_evals",
    "alpha",
    "alpha_weighted",
    "D",
    "sigma",
    "xmin",
    "xmax",
    "num_pl_spikes",
    "lambda_max",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "log_alpha_norm",
    "stable_rank",
    "matrix_rank",
    "entropy",
    "detX_num",
    "detX_val",
    "R_lognormal",
    "p_lognormal",
    "fit",
    "status",
    "warning",
    "message",
]
SECTION_IDS = (
    "summary",
    "alpha-heatmap",
    "alpha-distribution",
    "spectra-esd",
    "expert-ranking",
    "per-layer-summary",
    "warnings",
)
FAILED_EXPERT = (0, 2)  # every matrix of this expert failed: alpha NaN
PARTIAL_EXPERT = (2, 7)  # its down_proj failed
UNDER_TRAINED_EXPERT = (1, 5)


# -- fixture builder: a run folder exactly as the inspect stage writes it ------------------------------


def synthetic_eigenvalues(n: int, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A bulk plus a Pareto tail of exponent ``alpha``; returns (ascending eigenvalues, xmin)."""
    n_tail = max(n // 5, 4)
    bulk = rng.uniform(0.02, 1.0, n - n_tail)
    xmin = 1.0
    tail = (
        xmin * (1.0 - rng.uniform(0.0, 1.0, n_tail)) ** (-1.0 / (alpha - 1.0))
        if np.isfinite(alpha)
        else rng.uniform(1.0, 2.0, n_tail)
    )
    return np.sort(np.concatenate([bulk, tail])), xmin


def _row(
    name: str,
    layer: int | None,
    expert: int | None,
    proj: str,
    role: str,
    shape: tuple[int, int],
    alpha: float,
    status: str = "success",
    message: str = "",
) -> dict:
    rows, cols = shape
    ok = status == "success"
    alpha = alpha if ok else np.nan
    return {
        "name": name,
        "tensor": name.rsplit(".", 1)[0] + ".weight",
        "layer": layer,
        "expert": expert,
        "proj": proj,
        "role": role,
        "rows": rows,
        "cols": cols,
        "params": rows * cols,
        "dtype": "bfloat16",
        "num_evals": min(rows, cols),
        "alpha": alpha,
        "alpha_weighted": alpha * 1.3 if ok else np.nan,
        "D": 0.05 if ok else np.nan,
        "sigma": 0.1 if ok else np.nan,
        "xmin": 1.0 if ok else np.nan,
        "xmax": 40.0 if ok else np.nan,
        "num_pl_spikes": 30 if ok else np.nan,
        "lambda_max": 40.0 if ok else np.nan,
        "norm": 10.0,
        "log_norm": 1.0,
        "spectral_norm": 40.0,
        "log_spectral_norm": 1.6,
        "log_alpha_norm": 2.0,
        "stable_rank": 12.5,
        "matrix_rank": min(rows, cols),
        "entropy": 0.9,
        "detX_num": 3,
        "detX_val": 0.5,
        "R_lognormal": 1.2,
        "p_lognormal": 0.3,
        "fit": "ww",
        "status": status,
        "warning": ("over-trained" if alpha < 2 else "under-trained" if alpha > 6 else "") if ok else "",
        "message": message,
    }


def make_details(layers: int, experts: int, *, dense: bool = False, hidden: int = 256, seed: int = 0) -> pd.DataFrame:
    """Per-matrix rows: attention, router and experts (or a dense MLP) per layer, embedding, lm_head."""
    rng = np.random.default_rng(seed)
    rows = [
        _row(
            "model.embed_tokens",
            None,
            None,
            "embed_tokens",
            "embedding",
            (1000, hidden),
            np.nan,
            "skipped",
            "embedding matrices are not fitted",
        )
    ]
    for layer in range(layers):
        for proj in ATTN:
            rows.append(
                _row(
                    f"model.layers.{layer}.self_attn.{proj}",
                    layer,
                    None,
                    proj,
                    "attention",
                    (hidden, hidden),
                    3.4 + rng.normal(0, 0.3),
                )
            )
        if dense:
            for proj in PROJS:
                rows.append(
                    _row(
                        f"model.layers.{layer}.mlp.{proj}",
                        layer,
                        None,
                        proj,
                        "dense_mlp",
                        (2 * hidden, hidden),
                        3.0 + rng.normal(0, 0.3),
                    )
                )
            continue
        rows.append(
            _row(
                f"model.layers.{layer}.mlp.gate",
                layer,
                None,
                "gate",
                "router",
                (experts, hidden),
                4.0 + rng.normal(0, 0.2),
            )
        )
        for expert in range(experts):
            for proj in PROJS:
                alpha = 2.6 + 0.6 * layer / max(layers - 1, 1) + 0.05 * expert % 0.4 + rng.normal(0, 0.15)
                status = "success"
                if (layer, expert) == FAILED_EXPERT or ((layer, expert) == PARTIAL_EXPERT and proj == "down_proj"):
                    status = "failed"
                if (layer, expert) == UNDER_TRAINED_EXPERT:
                    alpha += 4.5
                rows.append(
                    _row(
                        f"model.layers.{layer}.mlp.experts.{expert}.{proj}",
                        layer,
                        expert,
                        proj,
                        "expert",
                        (hidden, 2 * hidden) if proj != "down_proj" else (2 * hidden, hidden),
                        alpha,
                        status,
                        "power-law fit did not converge" if status == "failed" else "",
                    )
                )
    rows.append(_row("lm_head", None, None, "lm_head", "lm_head", (1000, hidden), 2.9))
    frame = pd.DataFrame(rows, columns=DETAIL_COLUMNS)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["expert"] = frame["expert"].astype("Int64")
    return frame


def plotted_names(details: pd.DataFrame, experts: pd.DataFrame) -> list[str]:
    """The matrices the inspect stage saves spectra of: best/median/worst routed experts + 3 highest alpha."""
    names: list[str] = []
    routed = experts[(experts["role"] == "expert") & experts["alpha_mean"].notna()].sort_values("alpha_mean")
    if not routed.empty:
        for pick in (routed.iloc[0], routed.iloc[len(routed) // 2], routed.iloc[-1]):
            mask = (
                (details["layer"] == pick["layer"])
                & (details["expert"] == pick["expert"])
                & (details["role"] == "expert")
            )
            names.extend(details.loc[mask & (details["status"] == "success"), "name"])
    names.extend(details[details["status"] == "success"].sort_values("alpha", ascending=False)["name"].head(3))
    return list(dict.fromkeys(names))


def write_inspect_run(
    folder: Path,
    *,
    layers: int = 3,
    experts: int = 8,
    dense: bool = False,
    hidden: int = 256,
    spectra: bool = True,
    seed: int = 0,
) -> Path:
    """Write inspect.json, details.csv, experts.csv and spectra.npz with synthetic data."""
    from alphaq.audit.expert_quality import aggregate_experts
    from alphaq.audit.run import compress_spectrum

    folder.mkdir(parents=True, exist_ok=True)
    details = make_details(layers, experts, dense=dense, hidden=hidden, seed=seed)
    expert_table = aggregate_experts(details)
    details.to_csv(folder / "details.csv", index=False)
    expert_table.to_csv(folder / "experts.csv", index=False)
    warnings = [
        f"{n} matrices with status '{s}' (see the details table)"
        for s, n in details["status"].value_counts().items()
        if s != "success"
    ]
    warnings += [f"{n} experts flagged {q}" for q, n in expert_table["quality"].value_counts().items() if q != "ok"]
    manifest = {
        "schema_version": 1,
        "stage": "inspect",
        "alphaq_version": "0.1.0",
        "created": "2025-01-02T03:04:05+00:00",
        "checkpoint": {
            "path": f"/models/synthetic-moe-{layers}x{experts}",
            "fingerprint": "0123456789abcdef",
            "model_type": "mixtral" if not dense else "llama",
            "num_layers": layers,
            "num_experts": None if dense else experts,
        },
        "options": {"fit": "ww", "dtype": "float64", "experts_only": False, "layers": None, "device": "cpu"},
        "timing": {"seconds": 12.345, "matrices": len(details)},
        "warnings": warnings,
        "spectra_file": "spectra.npz",
    }
    (folder / "inspect.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if spectra:
        rng = np.random.default_rng(seed + 1)
        arrays: dict[str, np.ndarray] = {}
        for name in plotted_names(details, expert_table):
            row = details[details["name"] == name].iloc[0]
            evals, xmin = synthetic_eigenvalues(int(row["num_evals"]), float(row["alpha"]), rng)
            arrays[name] = compress_spectrum(evals)
            arrays[f"{name}::xmin"] = np.asarray(xmin, dtype=np.float64)
            arrays[f"{name}::alpha"] = np.asarray(row["alpha"], dtype=np.float64)
        np.savez_compressed(folder / "spectra.npz", **arrays)
    return folder


# -- HTML helpers -------------------------------------------------------------------------------------


class _Tables(HTMLParser):
    """Collects each data table's data-total-rows, the rows shown in its body, and section ids."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.section_ids: list[str] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section_ids.append(a.get("id") or "")
        elif tag == "table" and "data-total-rows" in a:
            self.tables.append(
                {
                    "total": int(a["data-total-rows"]),
                    "shown": int(a["data-shown-rows"]),
                    "rows": 0,
                    "section": self.section_ids[-1] if self.section_ids else "",
                }
            )
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body and "gap" not in (a.get("class") or ""):
            self.tables[-1]["rows"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False


def parse(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    return parser


def tables_in(html: str, section: str) -> list[dict]:
    return [t for t in parse(html).tables if t["section"] == section]


def section_html(html: str, section: str) -> str:
    match = re.search(rf'<section class="card" id="{section}">(.*?)</section>', html, re.S)
    assert match, section
    return match.group(1)


# -- tests --------------------------------------------------------------------------------------------
