"""Do the CLI start-up shortcuts pay on a real-size audit? An A/B of ``alphaq inspect`` end to end.

The shortcuts measured (all removed from the package after this measurement; this script rebuilds them itself so
the A/B stays reproducible):

* the one-command application: the console script built a typer application holding only the invoked command
  (typer turns every command's signature into click parameters when an application runs, ~35 ms for all);
* the rich preload thread: the first progress call started importing ``rich.console``/``rich.table`` on a daemon
  thread, so the summary's imports (~40 ms) overlapped the eigenvalue work;
* the ``typer<0.29`` pin: typer 0.29 validates options through pydantic (measured here with the newest typer,
  installed into a separate folder given by ``--new-typer``, e.g. ``pip install --target /tmp/typer029 --no-deps
  typer==0.29.2``).

Variants (each a fresh ``python -c`` process running ``alphaq inspect CKPT --out DIR --no-html``, stdout/stderr
to pipes as in a script):

* ``shortcuts``: one-command application + preload thread;
* ``plain``: the full application (``alphaq.cli.app.app``, the console entry point now), no preload;
* each of them with the installed typer and, with ``--new-typer``, with the newest one.

Two audits: the bundled demo model (117 matrices, small: start-up is a visible share, ~1.5 s) and the ``--real`` checkpoint of
``bench/inspect_vs_weightwatcher.py`` (2 x 2048x7168 + 14336x4096 float32, ~8 s). Runs are interleaved
(``--repeats`` rounds of every variant); medians of wall and of CPU time (user + system: less sensitive to the
other jobs of a shared machine) reported with the load average.

Run: ``python bench/cli_startup_ab.py [--repeats 5] [--new-typer /tmp/typer029]`` (about 4 minutes on a shared
2-core CPU); writes ``bench/results/cli_startup_ab.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inspect_vs_weightwatcher import REAL_GROUPS, _machine, compile_alphaq, make_matrices, write_checkpoint  # noqa: E402  (a sibling script)

from alphaq.atomic import write_json  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "cli_startup_ab.json"

_PLAIN = """
import sys
import alphaq.cli.stages as stages
if hasattr(stages, "preload_on_first_call"):  # the package before the shortcuts were removed
    stages.preload_on_first_call = lambda callback, *modules: callback
from alphaq.cli.app import app
sys.argv[0] = "alphaq"
app()
"""

_SHORTCUTS = """
import importlib, sys, threading
from contextlib import contextmanager
import typer
import alphaq.cli.stages as stages

bar = stages.progress_bar

@contextmanager
def preloading_bar(description):
    with bar(description) as advance:
        started = []
        def call(n, item, total):
            if not started:
                started.append(1)
                missing = [m for m in ("rich.console", "rich.table") if m not in sys.modules]
                threading.Thread(target=lambda: [importlib.import_module(m) for m in missing], daemon=True).start()
            advance(n, item, total)
        yield call

stages.progress_bar = preloading_bar
if hasattr(stages, "preload_on_first_call"):
    stages.preload_on_first_call = lambda callback, *modules: callback  # the bar above preloads
one = typer.Typer(name="alphaq", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
one.callback()(lambda: None)
one.command("inspect")(stages.inspect)
sys.argv[0] = "alphaq"
one()
"""

VARIANTS = {"plain": _PLAIN, "shortcuts": _SHORTCUTS}

_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss,
                  "rc": done.returncode, "stderr": done.stderr.decode()[-2000:]}))
"""


def timed_run(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds, CPU seconds (user + system, all threads) and peak RSS of one child process, started by a
    small launcher (a child forked from this process would inherit its memory high-water mark).

    On a shared, loaded machine the wall time of a run depends on what else runs; its CPU time much less so: the
    one-command application saves CPU (fewer click parameters built), the preload thread only wall time (it
    overlaps rich's import with the eigenvalues). Raises when the command fails."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({result['rc']}): {result['stderr']}")
    return {
        "seconds": round(result["seconds"], 4),
        "cpu_seconds": round(result["cpu_seconds"], 4),
        "peak_rss_mib": round(result["rss_kib"] / 1024.0, 1),
    }


_MECHANISMS = """
import json, sys, tempfile, time
start = time.perf_counter()
import typer
typer_import = time.perf_counter() - start
import alphaq.cli.stages as stages
from alphaq.cli.app import app

one = typer.Typer(name="alphaq", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
one.callback()(lambda: None)
one.command("inspect")(stages.inspect)
application = {"full_app": app, "one_command_app": one}[sys.argv[1]]
args = ["inspect", "/nonexistent/model", "--out", tempfile.mkdtemp() + "/run", "--no-html"]
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    try:
        application(args, standalone_mode=False)
    except (SystemExit, typer.Exit, Exception):
        pass
    times.append(time.perf_counter() - start)
start = time.perf_counter()
import rich.console, rich.table
rich_import = time.perf_counter() - start
print(json.dumps({"typer_import_s": typer_import, "first_call_s": times[0], "warm_call_s": min(times[1:]),
                  "rich_console_table_import_s": rich_import}))
"""


def mechanisms(envs: dict[str, dict[str, str]], processes: int, calls: int) -> dict[str, Any]:
    """What each shortcut can save at most, timed alone, in fresh processes (fastest of ``processes`` each): the
    CLI's own work for one ``alphaq inspect`` call (build the click command, parse, validate, up to the command's
    error on a missing model) with the full and with the one-command application, first call (what a command
    pays) and warm; the import of typer; the import of rich's console and table (what the preload thread
    overlapped)."""
    import json
    import subprocess

    out: dict[str, Any] = {}
    for typ, env in envs.items():
        out[typ] = {}
        for label in ("full_app", "one_command_app"):
            samples = [
                json.loads(
                    subprocess.run(
                        [sys.executable, "-c", _MECHANISMS, label, str(calls)],
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                for _ in range(processes)
            ]
            out[typ][label] = {key: round(min(s[key] for s in samples), 5) for key in samples[0]}
        full, one = out[typ]["full_app"], out[typ]["one_command_app"]
        print(
            f"mechanisms, typer {typ:<8} CLI work, first call: full app {full['first_call_s'] * 1e3:.1f} ms, one-command "
            f"{one['first_call_s'] * 1e3:.1f} ms (warm {full['warm_call_s'] * 1e3:.1f} / {one['warm_call_s'] * 1e3:.1f} ms); "
            f"import typer {full['typer_import_s'] * 1e3:.0f} ms, rich console+table "
            f"{full['rich_console_table_import_s'] * 1e3:.0f} ms"
        )
    return out


def typer_version(env: dict[str, str]) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", "import typer; print(typer.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def run_ab(checkpoints: dict[str, Path], envs: dict[str, dict[str, str]], repeats: int, work: Path) -> dict[str, Any]:
    """Every (audit, typer, variant) ``repeats`` times, interleaved; medians and per-run seconds."""
    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        audit: {typ: {v: [] for v in VARIANTS} for typ in envs} for audit in checkpoints
    }
    for _ in range(max(1, repeats)):
        for audit, ckpt in checkpoints.items():
            for typ, env in envs.items():
                for variant, code in VARIANTS.items():
                    out = work / f"run-{audit}-{typ}-{variant}"
                    load = os.getloadavg()[0]
                    measured = timed_run(
                        [
                            sys.executable,
                            "-c",
                            code,
                            "inspect",
                            *([str(ckpt)] if ckpt else []),
                            "--out",
                            str(out),
                            "--no-html",
                        ],
                        env,
                    )
                    runs[audit][typ][variant].append({**measured, "load_1min": round(load, 2)})
    summary: dict[str, Any] = {}
    for audit, by_typer in runs.items():
        summary[audit] = {}
        for typ, by_variant in by_typer.items():
            medians = {v: statistics.median(r["seconds"] for r in items) for v, items in by_variant.items()}
            cpu = {v: statistics.median(r["cpu_seconds"] for r in items) for v, items in by_variant.items()}
            summary[audit][typ] = {
                "median_seconds": medians,
                "shortcut_saving_seconds": medians["plain"] - medians["shortcuts"],
                "median_cpu_seconds": cpu,
                "shortcut_saving_cpu_seconds": cpu["plain"] - cpu["shortcuts"],
                "spread_seconds": {
                    v: max(r["seconds"] for r in items) - min(r["seconds"] for r in items)
                    for v, items in by_variant.items()
                },
                "runs": by_variant,
            }
            print(
                f"{audit:<6} typer {typ:<8} wall: plain {medians['plain']:.3f} s, shortcuts {medians['shortcuts']:.3f} s "
                f"(saving {medians['plain'] - medians['shortcuts']:+.3f} s); CPU: plain {cpu['plain']:.3f} s, "
                f"shortcuts {cpu['shortcuts']:.3f} s (saving {cpu['plain'] - cpu['shortcuts']:+.3f} s)"
            )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of every variant (medians reported)")
    parser.add_argument(
        "--new-typer",
        type=Path,
        default=None,
        help="folder holding a newer typer (pip install --target DIR --no-deps typer==X)",
    )
    parser.add_argument("--no-real", action="store_true", help="demo audit only (seconds instead of minutes)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    compile_alphaq()
    base = dict(os.environ)
    base.pop("PYTHONPATH", None)
    envs = {"installed": base}
    if args.new_typer is not None:
        envs["newest"] = {**base, "PYTHONPATH": str(args.new_typer)}
    versions = {name: typer_version(env) for name, env in envs.items()}
    with tempfile.TemporaryDirectory(prefix="alphaq-cli-ab-") as tmp:
        checkpoints: dict[str, Any] = {"demo": None}
        if not args.no_real:
            checkpoints["real"] = write_checkpoint(make_matrices(REAL_GROUPS, 0), Path(tmp) / "real")
        results = run_ab(checkpoints, envs, args.repeats, Path(tmp))
    costs = mechanisms(envs, processes=5, calls=20)
    payload = {
        "benchmark": "cli_startup_ab",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "repeats": max(1, args.repeats),
        "audits": {
            "demo": "bundled demo MoE (alphaq.demo_model_path()), 117 matrices",
            "real": [{"group": g, "count": c, "rows": r, "cols": k} for g, c, r, k in REAL_GROUPS],
        },
        "variants": {
            "plain": "full typer application (alphaq.cli.app.app), no preload",
            "shortcuts": "one-command typer application + rich preload thread",
        },
        "typer_versions": versions,
        "machine": _machine(),
        "load_average": list(os.getloadavg()),
        "versions": {"python": platform.python_version()},
        "results": results,
        "mechanisms": costs,
    }
    write_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
