"""The inspect stage on real formats: statuses for bad weights, FARMS determinism, float64 parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alphaq.audit.run import InspectConfig, inspect
from alphaq.errors import AlphaQError


def _checkpoint(tmp_path, tensors):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 1})
    )
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_nonfinite_and_tiny_matrices_get_a_status_and_the_run_continues(tmp_path):
    g = torch.Generator().manual_seed(0)
    bad = torch.randn(96, 64, generator=g)
    bad[3, 5] = float("nan")
    p = "model.layers.0.block_sparse_moe"
    path = _checkpoint(
        tmp_path,
        {
            f"{p}.experts.0.w1.weight": bad,
            f"{p}.experts.1.w1.weight": torch.randn(96, 64, generator=g),
            f"{p}.gate.weight": torch.randn(4, 64, generator=g),
        },
    )
    result = inspect(path)
    by_name = result.details.set_index("name")
    assert by_name.loc[f"{p}.experts.0.w1.weight", "status"] == "nonfinite"
    assert "1 NaN/Inf" in by_name.loc[f"{p}.experts.0.w1.weight", "message"]
    assert np.isnan(by_name.loc[f"{p}.experts.0.w1.weight", "alpha"])
    assert by_name.loc[f"{p}.gate.weight", "status"] == "skipped"  # 4 x 64 router: too small to fit
    assert by_name.loc[f"{p}.experts.1.w1.weight", "status"] == "success"
    assert by_name.loc[f"{p}.experts.0.w1.weight", "warning"] == ""  # never "over-trained"
    assert any("nonfinite" in w for w in result.manifest["warnings"])


def test_float64_inspect_equals_weightwatcher_fit_on_the_same_matrix(tmp_path):
    import weightwatcher as ww  # noqa: F401  (the reference implementation)
    from weightwatcher.WW_powerlaw import pl_fit

    torch.manual_seed(1)
    w = torch.distributions.StudentT(3.0).sample((256, 128)) * 0.05
    path = _checkpoint(tmp_path, {"model.layers.0.block_sparse_moe.experts.0.w1.weight": w})
    row = inspect(path, InspectConfig(dtype="float64")).details.iloc[0]
    evals = np.linalg.svd(w.double().numpy(), compute_uv=False) ** 2
    reference = pl_fit(data=evals[evals > 1e-5], xmax=None, pl_package="ww")
    assert row["alpha"] == pytest.approx(reference.alpha, rel=1e-9)
    assert row["xmin"] == pytest.approx(reference.xmin, rel=1e-9)


def test_farms_is_deterministic_for_a_seed(tmp_path):
    g = torch.Generator().manual_seed(2)
    path = _checkpoint(
        tmp_path, {"model.layers.0.block_sparse_moe.experts.0.w1.weight": torch.randn(512, 384, generator=g)}
    )
    a = inspect(path, InspectConfig(farms=True, fit="hill", seed=3)).details.iloc[0]
    b = inspect(path, InspectConfig(farms=True, fit="hill", seed=3)).details.iloc[0]
    assert a["alpha"] == b["alpha"] and a["num_evals"] == 12 * 128  # 4 x 3 blocks of 128


def test_experts_only_on_a_dense_model_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    save_file({"model.layers.0.mlp.up_proj.weight": torch.randn(64, 32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(AlphaQError, match="no matrix selected|no routed expert"):
        inspect(tmp_path, InspectConfig(experts_only=True))


def test_cpu_inspect_command_does_not_import_torch(tmp_path):
    """On CPU `alphaq inspect` (the console entry point) reads with numpy and computes with LAPACK, without torch.
    (pyarrow writes details.parquet, and pyarrow imports pandas when it builds an array.)"""
    import subprocess
    import sys

    code = (
        "import sys\nfrom alphaq.cli.app import main\n"
        f"sys.argv = ['alphaq', 'inspect', '--out', {str(tmp_path / 'run')!r}, '--no-html']\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
        "for name in ('torch',):\n"
        "    assert name not in sys.modules, name + ' imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "details.csv").is_file() and (tmp_path / "run" / "details.parquet").is_file()


def test_saved_tables_are_what_pandas_writes(tmp_path):
    """details.csv / experts.csv come from the row writer; they equal pandas' to_csv of the result's DataFrames,
    missing values, skipped and NaN rows included, and the Parquet file reads back as the same frame."""
    import pandas as pd

    from alphaq.audit.expert_quality import aggregate_experts
    from alphaq.audit.run import save_inspect

    g = torch.Generator().manual_seed(4)
    bad = torch.randn(96, 64, generator=g)
    bad[0, 0] = float("inf")
    p = "model.layers.0.block_sparse_moe"
    (tmp_path / "ckpt").mkdir()
    path = _checkpoint(
        tmp_path / "ckpt",
        {
            f"{p}.experts.0.w1.weight": bad,
            f"{p}.experts.0.w2.weight": torch.randn(64, 96, generator=g),
            f"{p}.experts.1.w1.weight": torch.randn(96, 64, generator=g),
            f"{p}.gate.weight": torch.randn(4, 64, generator=g),
        },
    )
    result = inspect(path)
    out = save_inspect(result, tmp_path / "run")
    assert (out / "details.csv").read_text() == result.details.to_csv(index=False)
    assert (out / "experts.csv").read_text() == aggregate_experts(result.details).to_csv(index=False)
    assert result.experts.equals(aggregate_experts(result.details))
    assert result.experts["status"].tolist() == ["partial", "success"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "details.parquet"), result.details, check_dtype=False)
    assert str(pd.read_parquet(out / "details.parquet")["layer"].dtype) == "Int64"


def test_schedule_runs_the_costliest_first_and_keeps_shapes_together():
    """Longest-processing-time order: the largest Gram first, same shapes consecutive in checkpoint order, the
    small matrices (routers) last; the tables stay in checkpoint order."""
    from types import SimpleNamespace

    from alphaq.audit.analysis import schedule_matrices

    refs = [
        SimpleNamespace(name=n, shape=s)
        for n, s in [
            ("router", (8, 64)),
            ("up0", (128, 64)),
            ("down0", (64, 128)),
            ("big", (256, 512)),
            ("up1", (128, 64)),
            ("down1", (64, 128)),
        ]
    ]
    order = [ref.name for ref in schedule_matrices(refs)]
    assert order == ["big", "down0", "down1", "up0", "up1", "router"]  # [64,128] and [128,64]: equal cost, by shape


def test_a_matrix_too_large_to_hold_is_fitted_from_its_blocked_gram_as_when_read_whole(tmp_path, monkeypatch):
    from alphaq.audit import analysis

    g = torch.Generator().manual_seed(2)
    p = "model.layers.0.block_sparse_moe"
    tensors = {
        "model.embed_tokens.weight": (torch.distributions.StudentT(3.0).sample((700, 64)) * 0.05).to(torch.bfloat16),
        f"{p}.experts.0.w1.weight": torch.randn(96, 64, generator=g),
        f"{p}.experts.1.w1.weight": torch.randn(96, 64, generator=g),
    }
    tensors["model.embed_tokens.weight"][650, 3] = float("nan")
    tensors["lm_head.weight"] = (torch.randn(700, 64, generator=g) * 0.02).to(torch.bfloat16)
    path = _checkpoint(tmp_path, tensors)
    whole = inspect(path, InspectConfig(dtype="float64")).details.set_index("name")
    monkeypatch.setattr(analysis, "LARGE_MATRIX_BYTES", 0)
    monkeypatch.setattr(analysis, "ROW_BLOCK_BYTES", 64 * 4 * 128)  # blocks of 128 rows: 6 blocks, the last short
    blocked = inspect(path, InspectConfig(dtype="float64")).details.set_index("name")
    assert blocked.loc["lm_head.weight", "status"] == "success"
    for column in ("alpha", "xmin", "lambda_max", "norm", "stable_rank"):
        assert blocked.loc["lm_head.weight", column] == pytest.approx(whole.loc["lm_head.weight", column], rel=1e-9)
    assert blocked.loc["model.embed_tokens.weight", "status"] == "nonfinite"  # the NaN is in the 6th block
    assert "1 NaN/Inf" in blocked.loc["model.embed_tokens.weight", "message"]
    # the experts (wide enough only to be blocked here) agree too
    name = f"{p}.experts.0.w1.weight"
    assert blocked.loc[name, "alpha"] == pytest.approx(whole.loc[name, "alpha"], rel=1e-9)
