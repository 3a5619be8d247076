"""alphaq.export.llamacpp_runs against the real llama.cpp tools and the bundled demo model (no mocks).

The demo model is converted once to an F16 GGUF; its KL divergence is measured against itself (0) and against a
Q2_K file (positive). Skips without the tools, except when ``$CI`` is set (CI builds them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from alphaq.errors import AlphaQError, ConfigError
from alphaq.export.gguf_io import convert_checkpoint, read_types
from alphaq.export.kld_output import chunk_means
from alphaq.export.kld_tokens import saved_nll, saved_perplexity, token_kld
from alphaq.export.llamacpp_runs import (
    KNOWN_PRESETS,
    KldResult,
    imatrix,
    kld,
    kld_base,
    parse_kld,
    preset_size,
    read_imatrix,
    read_kld_base,
    slice_kld_base,
    synthetic_token_text,
)
from alphaq.export.llamacpp_tools import BUILD_COMMAND, LlamaCppFailed, LlamaCppMissing, LlamaCppTools, find_tools
from alphaq.zoo.demo import demo_model_path

pytest.importorskip("gguf", reason="the GGUF tests need the gguf package (pip install 'alphaq[gguf]')")

CTX = 256
CHUNKS = 4
#: llama-perplexity --kl-divergence of the demo model's Q2_K against its F16 (WikiText-2 test, 8 x 256 tokens),
#: recorded from a real run of the vendored llama.cpp (0.3.36); model-loader lines left out.
RECORDED = """\
0.00.338.119 I kl_divergence: computing over 8 chunks, n_ctx=256, batch_size=512, n_seq=2
0.00.759.087 I kl_divergence: 0.42 seconds per pass - ETA 0.02 minutes

chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p
   1      71.9263 ±   16.7191      -0.00466 ±    0.01556       0.01531 ±    0.00177     2.150 ±  0.762 %    88.976 ±  2.790 %
   2      51.6029 ±    9.0241       0.01295 ±    0.01068       0.01242 ±    0.00100     1.923 ±  0.441 %    88.976 ±  1.969 %
   3      52.5344 ±    7.4468       0.01019 ±    0.01025       0.01279 ±    0.00085     1.807 ±  0.318 %    89.239 ±  1.590 %
   4      46.4721 ±    5.6138       0.01099 ±    0.00847       0.01273 ±    0.00074     1.852 ±  0.277 %    89.370 ±  1.369 %
   5      47.0746 ±    5.0603       0.01246 ±    0.00719       0.01240 ±    0.00062     1.780 ±  0.235 %    90.236 ±  1.179 %
   6      47.1354 ±    4.7155       0.01401 ±    0.00637       0.01215 ±    0.00056     1.692 ±  0.206 %    89.633 ±  1.105 %
   7      45.7555 ±    4.2356       0.01017 ±    0.00606       0.01255 ±    0.00059     1.892 ±  0.242 %    89.539 ±  1.027 %
   8      48.0236 ±    4.1016       0.01049 ±    0.00556       0.01277 ±    0.00055     1.877 ±  0.215 %    89.173 ±  0.975 %

====== Perplexity statistics ======
Mean PPL(Q)                   :  48.023556 ±   4.101583
Mean PPL(base)                :  47.522280 ±   4.074013
Cor(ln(PPL(Q)), ln(PPL(base))):  99.79%
Mean ln(PPL(Q)/PPL(base))     :   0.010493 ±   0.005563
Mean PPL(Q)/PPL(base)         :   1.010548 ±   0.005622
Mean PPL(Q)-PPL(base)         :   0.501276 ±   0.266736

====== KL divergence statistics ======
Mean    KLD:   0.012767 ±   0.000553
Maximum KLD:   0.217408
99.9%   KLD:   0.154145
99.0%   KLD:   0.092587
95.0%   KLD:   0.042007
90.0%   KLD:   0.027294
Median  KLD:   0.007640
10.0%   KLD:   0.000033
 5.0%   KLD:   0.000007
 1.0%   KLD:   0.000003
 0.1%   KLD:  -0.000002
Minimum KLD:  -0.000004

====== Token probability statistics ======
Mean    Δp: -0.218 ± 0.059 %
Maximum Δp: 17.260%
99.9%   Δp:  7.787%
99.0%   Δp:  4.270%
95.0%   Δp:  1.535%
90.0%   Δp:  0.698%
75.0%   Δp:  0.045%
Median  Δp: -0.001%
25.0%   Δp: -0.116%
10.0%   Δp: -1.447%
 5.0%   Δp: -2.922%
 1.0%   Δp: -6.210%
 0.1%   Δp: -20.236%
Minimum Δp: -23.271%
RMS Δp    :  1.877 ± 0.215 %
Same top p: 89.173 ± 0.975 %
"""


@pytest.fixture(scope="module")
def tools() -> LlamaCppTools:
    try:
        return find_tools()
    except LlamaCppMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"llama.cpp tools missing and CI is set (`{BUILD_COMMAND}`): {exc}", pytrace=False)
        pytest.skip(f"needs llama.cpp (`{BUILD_COMMAND}`): {exc}")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llamacpp-runs")


@pytest.fixture(scope="module")
def f16(tools: LlamaCppTools, work: Path) -> Path:
    return convert_checkpoint(tools, demo_model_path(), work / "demo-f16.gguf", outtype="f16")


@pytest.fixture(scope="module")
def text(work: Path) -> Path:
    """WikiText-2 test, or (without the data folder) synthetic token text of the same tokenizer."""
    from alphaq.evaluation.datasets import wikitext2_test

    try:
        return wikitext2_test()
    except AlphaQError:
        path = work / "synthetic.txt"
        path.write_text(synthetic_token_text(demo_model_path(), 4 * CTX * CHUNKS, seed=0), encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def base(tools: LlamaCppTools, f16: Path, text: Path, work: Path) -> tuple[Path, float]:
    """The F16's saved log-probabilities and its perplexity."""
    logits = work / "f16.kld"
    ppl = kld_base(tools, f16, text, logits, ctx=CTX, chunks=CHUNKS)
    return logits, ppl.ppl


@pytest.fixture(scope="module")
def q2k(tools: LlamaCppTools, f16: Path, work: Path) -> Path:
    size = preset_size(tools, f16, "q2_k", work_dir=work, keep=True)
    assert size.path is not None
    return size.path


@pytest.fixture(scope="module")
def q2k_kld(tools: LlamaCppTools, q2k: Path, base: tuple[Path, float]) -> KldResult:
    return kld(tools, q2k, base[0])


def test_parse_recorded_output() -> None:
    r = parse_kld(RECORDED)
    assert (r.chunks, r.n_ctx, r.tokens_per_chunk) == (8, 256, 127)
    assert (r.mean_kld, r.mean_kld_unc) == (0.012767, 0.000553)
    assert (r.median_kld, r.p99_kld, r.max_kld) == (0.00764, 0.092587, 0.217408)
    assert r.kld_percentiles[99.9] == 0.154145 and r.kld_percentiles[0.0] == -0.000004
    assert sorted(r.kld_percentiles) == [0.0, 0.1, 1.0, 5.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]
    assert (r.same_top, r.same_top_unc) == (0.89173, 0.00975)
    assert (r.ppl_q, r.ppl_base, r.cor_ln_ppl) == (48.023556, 47.52228, 0.9979)
    assert (r.ln_ppl_ratio, r.ln_ppl_ratio_unc, r.ppl_ratio, r.ppl_diff) == (0.010493, 0.005563, 1.010548, 0.501276)
    assert (r.rms_dp, r.rms_dp_unc, r.mean_dp) == (0.01877, 0.00215, -0.00218)
    assert r.dp_percentiles[100.0] == 0.1726 and r.dp_percentiles[75.0] == 0.00045
    # the table holds running means: the last row is the final estimate, chunk means average back to it
    assert [c.chunk for c in r.running] == list(range(1, 9))
    assert r.running[-1].kld == round(r.mean_kld, 5) and r.running[-1].ppl == round(r.ppl_q, 4)
    assert r.chunk_kld[0] == r.running[0].kld and abs(r.chunk_kld[1] - 0.00953) < 1e-9
    assert abs(sum(r.chunk_kld) / 8 - r.mean_kld) < 1e-5
    counts = [s * 127 for s in r.chunk_same_top]
    assert all(abs(c - round(c)) < 1e-9 for c in counts) and sum(counts) == pytest.approx(
        r.same_top * 8 * 127, abs=0.01
    )
    record = json.loads(json.dumps(r.to_dict()))
    assert record["kld_percentiles"]["99"] == 0.092587 and len(record["chunk_kld"]) == 8


def test_parse_needs_the_statistics() -> None:
    cut = RECORDED.split("====== Perplexity statistics")[0]  # what a run scoring < 100 tokens prints
    with pytest.raises(ValueError, match="no KL-divergence statistics"):
        parse_kld(cut)
    assert chunk_means([1.0, 2.0, 2.0]) == [1.0, 3.0, 2.0]


def test_f16_against_itself_has_zero_kld(tools: LlamaCppTools, f16: Path, base: tuple[Path, float]) -> None:
    logits, ppl = base
    header = read_kld_base(logits)
    assert (header.n_ctx, header.n_vocab, header.chunks) == (CTX, 4096, CHUNKS)
    r = kld(tools, f16, logits)
    assert isinstance(r, KldResult) and r.chunks == CHUNKS
    assert abs(r.mean_kld) < 1e-4 and r.max_kld < 1e-3
    assert r.same_top == 1.0 and r.chunk_same_top == [1.0] * CHUNKS
    assert r.ppl_q == pytest.approx(ppl, rel=1e-3) and r.ppl_base == pytest.approx(ppl, rel=1e-3)
    assert abs(r.ln_ppl_ratio) < 1e-4
    assert np.exp(saved_nll(logits).mean()) == pytest.approx(ppl, rel=1e-4)  # the file holds the same NLLs
    assert saved_perplexity(logits).ppl == pytest.approx(ppl, rel=1e-4)  # kld_base's fallback when the log is cut


def test_q2k_has_positive_kld_and_chunk_values_match_single_chunk_runs(
    tools: LlamaCppTools, q2k: Path, q2k_kld: KldResult, base: tuple[Path, float], work: Path
) -> None:
    logits, ppl = base
    r = q2k_kld
    assert r.mean_kld > 1e-3 and r.mean_kld > 3 * r.mean_kld_unc
    assert r.max_kld > r.p99_kld > r.median_kld > 0
    assert r.same_top < 1.0 and r.ppl_base == pytest.approx(ppl, rel=1e-3)
    # each chunk's own values, derived from the running means, equal a run on that chunk alone
    one = kld(tools, q2k, slice_kld_base(logits, work / "chunk2.kld", [2]))
    assert one.chunks == 1
    assert abs(one.mean_kld - r.chunk_kld[2]) <= 5e-6 * 5 + 5e-7
    assert one.same_top == pytest.approx(r.chunk_same_top[2], abs=1e-5)
    first = kld(tools, q2k, logits, chunks=2)
    assert first.chunks == 2 and first.running == r.running[:2]
    assert not list(work.glob("f16.first*"))  # the sliced copy is gone


def test_token_kld_from_two_saved_files(
    tools: LlamaCppTools, q2k: Path, q2k_kld: KldResult, text: Path, base: tuple[Path, float], work: Path
) -> None:
    logits, _ = base
    q_logits = work / "q2k.kld"
    kld_base(tools, q2k, text, q_logits, ctx=CTX, chunks=CHUNKS)  # the quantized model's log-probs, same windows
    tokens = token_kld(logits, q_logits)
    assert tokens.kld.shape == tokens.same_top.shape == (CHUNKS, CTX - 1 - CTX // 2)
    r = q2k_kld
    assert tokens.kld.mean() == pytest.approx(r.mean_kld, abs=2e-6)  # llama.cpp's own mean, to its 6 decimals
    assert tokens.same_top.mean() == pytest.approx(r.same_top, abs=2e-5)
    assert (tokens.nll_q - tokens.nll_base).mean() == pytest.approx(r.ln_ppl_ratio, abs=1e-4)
    per_chunk = tokens.chunk_means()
    bound = [5e-6 * (2 * k - 1) + 2e-6 for k in range(1, CHUNKS + 1)]  # rounding of the printed running means
    assert all(abs(a - b) <= e for a, b, e in zip(per_chunk["kld"], r.chunk_kld, bound, strict=True))
    assert per_chunk["same_top"].tolist() == pytest.approx(r.chunk_same_top, abs=1e-9)
    itself = token_kld(logits, logits)
    assert not itself.kld.any() and itself.same_top.all()
    with pytest.raises(ConfigError, match="same text, ctx and chunks"):
        token_kld(logits, slice_kld_base(q_logits, work / "q2k-first.kld", [0]))


def test_kld_input_errors(tools: LlamaCppTools, f16: Path, text: Path, base: tuple[Path, float], work: Path) -> None:
    logits, _ = base
    with pytest.raises(ConfigError, match="ctx 256"):
        kld(tools, f16, logits, ctx=512)
    with pytest.raises(ConfigError, match="holds 4 chunks"):
        kld(tools, f16, logits, chunks=9)
    with pytest.raises(ConfigError, match="not a llama-perplexity logits file"):
        kld(tools, f16, text)
    with pytest.raises(ConfigError, match="raise chunks or ctx"):
        kld_base(tools, f16, text, work / "tiny.kld", ctx=CTX, chunks=0)


def test_preset_size(tools: LlamaCppTools, f16: Path, q2k: Path, work: Path) -> None:
    size = preset_size(tools, f16, "Q8_0", work_dir=work / "presets")
    assert size.path is None and not list((work / "presets").glob("*.gguf"))  # deleted after reading
    assert size.types["blk.0.ffn_down_exps.weight"][0] == "Q8_0"
    assert size.types["blk.0.ffn_gate_inp.weight"][0] == "F32"
    assert size.file_bytes > sum(b for _, b in size.types.values()) > 0.5 * f16.stat().st_size / 2
    types = read_types(q2k)
    assert types["blk.0.ffn_gate_exps.weight"][0] == "Q2_K" and q2k.stat().st_size < size.file_bytes / 2
    assert size.to_dict()["tensor_bytes"] == sum(b for _, b in size.types.values())


def test_unknown_preset_and_missing_tools(tmp_path: Path) -> None:
    nowhere = LlamaCppTools(
        root=tmp_path, quantize=tmp_path / "q", perplexity=tmp_path / "p", imatrix=None, converter=tmp_path / "c"
    )
    with pytest.raises(ConfigError, match="knows no preset 'Q3_K_XL'; use one of .*Q4_K_M") as err:
        preset_size(nowhere, tmp_path / "f16.gguf", "Q3_K_XL", work_dir=tmp_path)  # raised before running anything
    assert "\n" not in str(err.value) and len(KNOWN_PRESETS) == 39
    with pytest.raises(ConfigError, match="needs an importance matrix for IQ2_XXS"):
        preset_size(nowhere, tmp_path / "f16.gguf", "iq2_xxs", work_dir=tmp_path)
    with pytest.raises(LlamaCppMissing, match="alphaq llamacpp build"):
        preset_size(nowhere, tmp_path / "f16.gguf", "Q4_K_M", work_dir=tmp_path)
    with pytest.raises(LlamaCppMissing, match="llama-imatrix is missing"):
        imatrix(nowhere, tmp_path / "f16.gguf", tmp_path / "t.txt", tmp_path / "i.gguf", ctx=CTX, chunks=1)
    with pytest.raises(LlamaCppMissing, match="alphaq llamacpp build"):
        find_tools(tmp_path)


def test_synthetic_token_text() -> None:
    from tokenizers import Tokenizer

    a = synthetic_token_text(demo_model_path(), 300, seed=1)
    assert a == synthetic_token_text(demo_model_path() / "tokenizer.json", 300, seed=1)
    assert a != synthetic_token_text(demo_model_path(), 300, seed=2)
    assert "<|endoftext|>" not in a and "<|pad|>" not in a
    n = len(Tokenizer.from_file(str(demo_model_path() / "tokenizer.json")).encode(a).ids)
    assert 250 < n < 400  # random ids re-tokenize to about as many tokens
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        synthetic_token_text(Path("/nonexistent"), 10, seed=0)


def test_imatrix_round_trip(tools: LlamaCppTools, f16: Path, work: Path) -> None:
    import gguf

    if tools.imatrix is None:
        pytest.skip(f"llama-imatrix is not in {tools.root} (built before alphaq used it; `{BUILD_COMMAND}`)")
    text = work / "synthetic-imatrix.txt"
    text.write_text(synthetic_token_text(demo_model_path(), 3 * CTX, seed=0), encoding="utf-8")
    out = imatrix(tools, f16, text, work / "demo.imatrix.gguf", ctx=CTX, chunks=2)
    data = read_imatrix(out)
    sums, counts = data["blk.0.ffn_gate_exps.weight"]
    assert sums.shape == (8, 256) and counts.shape == (8,)  # [experts, hidden]
    assert data["blk.0.ffn_down_exps.weight"][0].shape == (8, 512)  # [experts, intermediate]
    assert counts.sum() == 2 * CTX * 2  # every token goes to top-2 experts
    dense_sums, dense_counts = data["blk.0.attn_q.weight"]
    assert dense_sums.shape == (1, 256) and dense_counts.tolist() == [2 * CTX]
    assert (sums >= 0).all() and (dense_sums > 0).all()
    size = preset_size(tools, f16, "Q2_K", work_dir=work / "with-imatrix", imatrix=out, keep=True)
    assert size.types["blk.0.ffn_gate_exps.weight"][0] == "Q2_K" and size.imatrix == out
    fields = gguf.GGUFReader(str(size.path)).fields  # llama-quantize records the imatrix it used
    assert fields["quantize.imatrix.entries_count"].contents() == len(data) == 4 * 8  # 4 layers x 8 weights
    with pytest.raises(ConfigError, match="must end in .gguf"):
        imatrix(tools, f16, text, work / "demo.dat", ctx=CTX, chunks=2)


def test_failed_run_names_the_tool(tools: LlamaCppTools, base: tuple[Path, float], work: Path) -> None:
    logits, _ = base
    broken = work / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(LlamaCppFailed, match="llama-perplexity"):
        kld(tools, broken, logits)
