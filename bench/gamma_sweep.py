"""Gamma ablation of the alphaq allocator on the bundled model (256 windows of WikiText-2 test).

Writes /tmp/gamma/<gamma>/ runs and /tmp/gamma/sweep.csv; the committed copy is reports/compare/gamma_sweep.csv.
"""
import pandas as pd
from alphaq.evaluation.compare import run_compare
from alphaq.planning.planner import PlanConfig
frames = []
for gamma in (0.0, 1.0, 4.0, 16.0):
    df = run_compare(None, ["2.5", "3.5"], ["alphaq"], f"/tmp/gamma/{gamma}", max_windows=256,
                     config=PlanConfig(budget="3.5", gamma=gamma))
    df["gamma"] = gamma
    frames.append(df)
    print(gamma, df[["entry", "budget", "ppl"]].to_string() if "entry" in df else df.to_string(), flush=True)
pd.concat(frames).to_csv("/tmp/gamma/sweep.csv", index=False)
