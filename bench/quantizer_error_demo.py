"""rtn vs rtn_clip vs hqq on the bundled demo MoE's 96 expert matrices: error and time at 2/3/4/8 bits.

Prints a Markdown table and saves ``bench/results/quantizer_error_demo.json``.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from alphaq.atomic import write_json
from alphaq.load import open_checkpoint
from alphaq.quantization import QuantSpec, quantize_dequantize, relative_error
from alphaq.quantization.hqq import quantize_hqq
from alphaq.quantization.primitives import dequantize_groupwise
from alphaq.zoo.demo import demo_model_path

METHODS = ("rtn", "rtn_clip", "hqq", "hqq+scale")


def main() -> None:
    torch.set_num_threads(2)
    ckpt = open_checkpoint(demo_model_path())
    matrices = [(ref, ckpt.read_matrix(ref)) for ref in ckpt.experts()]
    params = np.array([ref.params for ref, _ in matrices], dtype=np.float64)
    rows = []
    for bits in (2, 3, 4, 8):
        spec = QuantSpec(bits, 128)
        for method in METHODS:
            start = time.perf_counter()
            errors = []
            for _, w in matrices:
                if method == "hqq+scale":
                    w_hat = dequantize_groupwise(quantize_hqq(w, spec, optimize_scale=True))
                else:
                    w_hat = quantize_dequantize(w, spec, method=method, dtype=torch.float32)
                errors.append(relative_error(w, w_hat))
            rows.append(
                {
                    "bits": bits,
                    "method": method,
                    "seconds": time.perf_counter() - start,
                    "relative_error": float(params @ np.array(errors) / params.sum()),
                }
            )
    print("| bits | method | relative error (parameter-weighted) | seconds |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['bits']} | {row['method']} | {row['relative_error']:.4f} | {row['seconds']:.2f} |")
    out = Path(__file__).parent / "results" / "quantizer_error_demo.json"
    write_json(
        out,
        {
            "machine": platform.processor() or platform.machine(),
            "threads": 2,
            "group_size": 128,
            "matrices": len(matrices),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
