#!/usr/bin/env bash
# Everything a session lent a GPU should measure, in one command that finishes within 8 minutes.
#
#   bench/gpu_check.sh [OUT_DIR]      (default: $OUT, else bench/results/gpu_check)
#
# Steps (each under `timeout`; the limits add up to 420 s, plus start-up):
#   env          device, driver, torch/triton versions                       -> env.json
#   tests        the CUDA tests: pytest -k cuda over tests/kernels and tests/quantization/test_loading.py (compiled
#                Triton kernels against the reference; the quantized demo on CUDA against the CPU)
#                                                                             -> kernels_tests.xml, kernels_tests.json
#   kernels      bench/kernel_speed.py --no-autotune: fused dequant-matmul vs torch bf16 at Mixtral, Qwen1.5-MoE, Qwen3-MoE
#                and DeepSeek-V3 expert shapes, batch 1/2/4/8/16, widths 2/3/4/8, GB/s against the HBM peak
#                                                                             -> kernels.json (rewritten after each shape)
#   layer        one Qwen1.5-MoE-shaped MoE layer: 60 experts x gate/up 1408x2048, down 2048x1408, bf16 safetensors
#                                                                             -> layer.json
#   inspect      alphaq inspect --device cuda of that layer                   -> inspect/inspect.json (+ details.csv)
#   quantize     run_quantize --device cuda (rtn, uniform 4-bit plan) on it   -> quantize.json
#   summary      every step's exit status, seconds and limit                  -> gpu_check.json
# Each step's output is in STEP.log beside its JSON. A step that fails or times out (rc 124/137) does not stop the
# others. Set GPU_CHECK_AUTOTUNE=1 to autotune the kernels (slower; may not fit the 8 minutes).
#
# Needs alphaq installed with its test extras (pip install -e '.[test]'; triton comes with CUDA torch).
# Without a CUDA GPU it prints one line and exits 0.
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); nothing measured"
    exit 0
fi

OUT_DIR="${1:-${OUT:-bench/results/gpu_check}}"
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/alphaq-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
: > "$OUT_DIR/steps.jsonl"
export ALPHAQ_GPU_CHECK=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# step NAME LIMIT_SECONDS COMMAND...: run under timeout, log to NAME.log, append a line to steps.jsonl
step() {
    local name="$1" limit="$2"
    shift 2
    local start end rc
    start=$(date +%s.%N)
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    tail -n 5 "$OUT_DIR/$name.log"
    "$PY" - "$OUT_DIR/steps.jsonl" "$name" "$rc" "$start" "$end" "$limit" <<'EOF'
import json, sys
path, name, rc, start, end, limit = sys.argv[1:]
with open(path, "a", encoding="utf-8") as handle:
    handle.write(json.dumps({"step": name, "rc": int(rc), "seconds": round(float(end) - float(start), 2),
                             "limit_seconds": int(limit)}) + "\n")
EOF
    echo "== $name: exit $rc"
}

if command -v alphaq > /dev/null 2>&1; then
    ALPHAQ=(alphaq)
else
    ALPHAQ=("$PY" -c 'from alphaq.cli import app; app(prog_name="alphaq")')
fi
AUTOTUNE="--no-autotune"
[ "${GPU_CHECK_AUTOTUNE:-0}" = "1" ] && AUTOTUNE=""

step env 20 "$PY" bench/gpu_check_steps.py env "$OUT_DIR/env.json"
step tests 90 "$PY" -m pytest tests/kernels tests/quantization/test_loading.py -k cuda -q -p no:cacheprovider -rs \
    --junitxml="$OUT_DIR/kernels_tests.xml"
if [ -f "$OUT_DIR/kernels_tests.xml" ]; then
    "$PY" bench/gpu_check_steps.py junit "$OUT_DIR/kernels_tests.xml" "$OUT_DIR/kernels_tests.json" > /dev/null
fi
# shellcheck disable=SC2086  # AUTOTUNE is empty or one flag
step kernels 140 "$PY" bench/kernel_speed.py $AUTOTUNE --out "$OUT_DIR/kernels.json"
step layer 40 "$PY" bench/gpu_check_steps.py layer "$WORK/qwen15-moe-layer" --record "$OUT_DIR/layer.json"
step inspect 80 "${ALPHAQ[@]}" inspect "$WORK/qwen15-moe-layer" --device cuda --out "$OUT_DIR/inspect" --no-html
step quantize 50 "$PY" bench/gpu_check_steps.py quantize "$WORK/qwen15-moe-layer" "$OUT_DIR/quantize.json" --device cuda
"$PY" bench/gpu_check_steps.py summary "$OUT_DIR"
echo "gpu_check: results in $OUT_DIR (gpu_check.json: every step's exit status and seconds)"
exit 0
