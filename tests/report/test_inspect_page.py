from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alphaq.audit.artifacts import InspectRun, Spectrum, load_inspect_run
from alphaq.errors import AlphaQError
from alphaq.report.inspect_page import render_inspect

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


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inspect_run(tmp_path_factory.mktemp("moe") / "run")


@pytest.fixture(scope="module")
def moe_html(moe_run: Path) -> str:
    return render_inspect(moe_run).read_text(encoding="utf-8")


def test_load_inspect_run_types_and_counts(moe_run: Path) -> None:
    run = load_inspect_run(moe_run)
    assert isinstance(run, InspectRun)
    assert run.manifest["checkpoint"]["num_experts"] == 8
    # embedding + 3 x (4 attention + router + 8 x 3 expert) + lm_head
    assert len(run.details) == 1 + 3 * (4 + 1 + 24) + 1
    assert len(run.experts) == 24
    assert str(run.details["layer"].dtype) == "Int64" and str(run.experts["rank_global"].dtype) == "Int64"
    assert run.details["warning"].isna().sum() == 0 and set(run.details["warning"]) <= {
        "",
        "over-trained",
        "under-trained",
    }
    failed = run.experts[(run.experts["layer"] == FAILED_EXPERT[0]) & (run.experts["expert"] == FAILED_EXPERT[1])]
    assert failed["quality"].tolist() == ["failed"] and np.isnan(failed["alpha_mean"].iloc[0])
    assert run.spectra and all(isinstance(s, Spectrum) for s in run.spectra.values())
    assert not any("::" in name for name in run.spectra)
    first = next(iter(run.spectra.values()))
    assert first.xmin == 1.0 and 2.0 < first.alpha < 8.0 and np.all(np.diff(first.evals) >= 0)
    assert run.load_warnings == ()


def test_page_is_one_offline_file(moe_run: Path, moe_html: str) -> None:
    assert (moe_run / "inspect.html").is_file()
    assert moe_html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", moe_html, re.I)
    assert "http://" not in moe_html and "https://" not in moe_html
    assert "<link" not in moe_html and "<script src" not in moe_html and "@import" not in moe_html
    assert not list(moe_run.glob(".inspect.html.*"))  # atomic write left no temporary file


def test_page_sections_figures_and_provenance(moe_html: str) -> None:
    assert tuple(parse(moe_html).section_ids) == SECTION_IDS
    assert moe_html.count('<figure class="fig">') == 3
    assert moe_html.count("<svg") == 3  # heatmap, distribution, ESD (inline SVG)
    assert moe_html.count("data:image/png;base64,") == 2  # heatmap cells and colorbar, rasterized inside the SVG
    for text in ("synthetic-moe-3x8", "mixtral", "0123456789abcdef", "0.1.0", "2025-01-02T03:04:05+00:00"):
        assert text in moe_html
    assert "Best: layer" in moe_html and "Median: layer" in moe_html and "Worst: layer" in moe_html


def test_summary_cards(moe_html: str) -> None:
    summary = section_html(moe_html, "summary")
    assert "Experts per layer" in summary and ">8<" in summary
    assert ">1 failed</span>" in summary  # the expert with no fit
    assert "1 under-trained" in summary
    assert "model.layers.0.mlp.experts.2.gate_proj \u2014 failed: power-law fit did not converge" in summary
    assert "12.3 s" in summary


def test_tables_have_the_right_row_counts(moe_run: Path, moe_html: str) -> None:
    run = load_inspect_run(moe_run)
    ranking = tables_in(moe_html, "expert-ranking")
    assert [(t["total"], t["rows"]) for t in ranking] == [(24, 24)]  # few experts: the full table
    layers = tables_in(moe_html, "per-layer-summary")
    assert [(t["total"], t["rows"]) for t in layers] == [(3, 3)]
    bad = int((run.details["status"] != "success").sum())
    assert bad == 1 + 3 + 1  # embedding skipped, failed expert's 3 matrices, one down_proj
    warnings = tables_in(moe_html, "warnings")
    assert [(t["total"], t["rows"]) for t in warnings] == [(bad, bad)]
    by_role = tables_in(moe_html, "alpha-distribution")
    assert by_role[0]["total"] == 4 + 1 + 3 + 1  # (role, proj): attention x4, router, expert x3, lm_head
    assert "under-trained" in section_html(moe_html, "expert-ranking")


def test_ranking_order_and_nan_rows(moe_html: str) -> None:
    ranking = section_html(moe_html, "expert-ranking")
    body = ranking.split("<tbody>", 1)[1]
    first_rank = re.search(r'<td class="num" data-v="(\d+)">', body).group(1)
    assert first_rank == "1"
    # the failed expert: ranks, alphas and z shown as sortable-last em dashes
    assert body.count('<td class="num na" data-v="">\u2014</td>') == 7
    assert "q-bad" in ranking  # failed / under-trained badges


def test_rendering_is_deterministic(moe_run: Path, moe_html: str) -> None:
    again = render_inspect(moe_run).read_text(encoding="utf-8")
    assert again == moe_html


def test_heatmap_marks_failed_cells(moe_html: str) -> None:
    heatmap = section_html(moe_html, "alpha-heatmap")
    assert "<svg" in heatmap and ">failed<" in heatmap  # annotated NaN cell


def test_dense_checkpoint(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "dense", layers=2, dense=True)
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert "No routed experts in this checkpoint" in section_html(html, "alpha-heatmap")
    assert "No routed experts to rank" in section_html(html, "expert-ranking")
    assert "none (dense)" in section_html(html, "summary")
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [2]
    assert "Saved spectra" in section_html(html, "spectra-esd")
    assert html.count("<svg") == 2  # distribution and ESD


def test_single_layer(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "one", layers=1, experts=4)
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [1]
    assert [t["total"] for t in tables_in(html, "expert-ranking")] == [4]


def test_missing_spectra_and_all_failed(tmp_path: Path) -> None:
    folder = write_inspect_run(tmp_path / "nospec", layers=2, experts=4, spectra=False)
    details = pd.read_csv(folder / "details.csv")
    details["status"], details["alpha"] = "failed", np.nan
    details.to_csv(folder / "details.csv", index=False)
    experts = pd.read_csv(folder / "experts.csv")
    experts[["alpha_mean", "alpha_min", "alpha_max", "rank_global", "rank_in_layer", "robust_z"]] = np.nan
    experts["quality"], experts["status"] = "failed", "failed"
    experts.to_csv(folder / "experts.csv", index=False)
    run = load_inspect_run(folder)
    assert run.spectra == {} and "spectra.npz not found" in run.load_warnings[0]
    html = render_inspect(folder).read_text(encoding="utf-8")
    assert "No spectra saved" in section_html(html, "spectra-esd")
    assert "No successful fit" in section_html(html, "alpha-distribution")
    assert "spectra.npz not found" in html.split("<main>", 1)[1].split("</div>", 1)[0]  # the warnings box
    assert "8 failed" in section_html(html, "summary")
    assert "Not ranked" not in html or "<svg" in section_html(html, "alpha-heatmap")


@pytest.mark.parametrize("damage", ["not_a_zip", "truncated"])
def test_corrupt_spectra_is_a_warning(tmp_path: Path, damage: str) -> None:
    folder = write_inspect_run(tmp_path / "badspec", layers=1, experts=4)
    data = (folder / "spectra.npz").read_bytes()
    (folder / "spectra.npz").write_bytes(b"not a zip" if damage == "not_a_zip" else data[: len(data) // 2])
    run = load_inspect_run(folder)
    assert run.spectra == {} and "spectra.npz is unreadable" in run.load_warnings[0]
    assert "No spectra saved" in render_inspect(folder).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_folder", "inspect run folder not found"),
        ("no_manifest", "no inspect.json"),
        ("bad_json", "inspect.json: unreadable"),
        ("newer_schema", "upgrade alphaq"),
        ("older_schema", "re-run alphaq inspect"),
        ("bool_schema", "schema_version True is not 1"),
        ("wrong_stage", "not an inspect manifest"),
        ("no_details", "details.csv: not found"),
        ("empty_experts", "experts.csv: unreadable CSV"),
        ("missing_columns", "details.csv: missing columns alpha, status"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path: Path, breakage: str, message: str) -> None:
    folder = write_inspect_run(tmp_path / "run", layers=1, experts=4, spectra=False)
    manifest = json.loads((folder / "inspect.json").read_text())
    if breakage == "no_folder":
        folder = tmp_path / "absent"
    elif breakage == "no_manifest":
        (folder / "inspect.json").unlink()
    elif breakage == "bad_json":
        (folder / "inspect.json").write_text("{not json")
    elif breakage in ("newer_schema", "older_schema", "bool_schema", "wrong_stage"):
        key, value = {
            "newer_schema": ("schema_version", 2),
            "older_schema": ("schema_version", 0),
            "bool_schema": ("schema_version", True),
            "wrong_stage": ("stage", "plan"),
        }[breakage]
        (folder / "inspect.json").write_text(json.dumps({**manifest, key: value}))
    elif breakage == "no_details":
        (folder / "details.csv").unlink()
    elif breakage == "empty_experts":
        (folder / "experts.csv").write_text("")
    elif breakage == "missing_columns":
        pd.read_csv(folder / "details.csv").drop(columns=["alpha", "status"]).to_csv(
            folder / "details.csv", index=False
        )
    with pytest.raises(AlphaQError, match=re.escape(message)) as info:
        render_inspect(folder)
    assert "\n" not in str(info.value)
    assert not (folder / "inspect.html").exists()


def test_large_model_page_stays_small(tmp_path: Path) -> None:
    start = time.perf_counter()
    folder = write_inspect_run(tmp_path / "big", layers=48, experts=64, hidden=2048)
    html_path = render_inspect(folder)
    size = html_path.stat().st_size
    assert size < 2_000_000, size
    html = html_path.read_text(encoding="utf-8")
    ranking = tables_in(html, "expert-ranking")
    assert [(t["total"], t["rows"]) for t in ranking] == [(10, 10), (10, 10), (1, 1)]  # top, bottom, not ranked
    assert [t["total"] for t in tables_in(html, "per-layer-summary")] == [48]
    assert time.perf_counter() - start < 60


def test_real_inspect_run_renders(tmp_path: Path) -> None:
    """End to end with the inspect stage on a tiny random Mixtral (skips until the diagnostics land)."""
    pytest.importorskip("alphaq.diagnostics.esd_metrics")
    pytest.importorskip("alphaq.diagnostics.spectrum")
    from alphaq.audit.run import InspectConfig, inspect, save_inspect
    from tests.fixtures.tiny_models import SPECS, make_tiny_checkpoint

    spec = next(s for s in SPECS if s.model_type == "mixtral")
    checkpoint = make_tiny_checkpoint(spec, tmp_path / "ckpt")
    out = save_inspect(inspect(checkpoint, InspectConfig(fit="ww", tail_test=False)), tmp_path / "run")
    html = render_inspect(out).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS
    assert [t["total"] for t in tables_in(html, "expert-ranking")][0] == spec.moe_layers * 4


def test_reads_what_save_inspect_writes(tmp_path: Path) -> None:
    """The inspect stage's own writer (save_inspect) produces a folder this reader renders."""
    from alphaq.audit.expert_quality import expert_rows
    from alphaq.audit.run import InspectResult, save_inspect

    source = write_inspect_run(tmp_path / "synthetic", layers=2, experts=4)
    details = make_details(2, 4)
    rows = details.to_dict("records")
    manifest = json.loads((source / "inspect.json").read_text())
    manifest["timing"]["seconds"] = float("nan")  # written as null
    with np.load(source / "spectra.npz") as archive:
        spectra = {k: archive[k] for k in archive.files if "::" not in k}
    out = save_inspect(InspectResult(rows, expert_rows(rows), manifest, spectra), tmp_path / "saved")
    run = load_inspect_run(out)
    assert len(run.details) == len(details) and len(run.experts) == 8 and set(run.spectra) == set(spectra)
    name = next(iter(spectra))
    assert run.spectra[name].alpha == pytest.approx(float(details.set_index("name").at[name, "alpha"]))
    html = render_inspect(out).read_text(encoding="utf-8")
    assert tuple(parse(html).section_ids) == SECTION_IDS and html.count("<svg") == 3
    assert "\u2014" in section_html(html, "summary")  # unknown time
