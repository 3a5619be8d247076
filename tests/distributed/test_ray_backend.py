"""``--backend ray`` on a real local Ray (2 CPUs): the same inspect tables and the same quantized bytes as the local
backend, a killed worker retried, a stopped quantize resumed, a failed task named in one line.

The Ray tests skip when ray is not installed, except on CI (``$CI`` set), where they must run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alphaq.audit.run import InspectConfig, inspect, save_inspect
from alphaq.cli import app
from alphaq.distributed import RayBackend, backend_session
from alphaq.distributed.ray_backend import inspect_batches
from alphaq.errors import AlphaQError, ConfigError
from alphaq.load import open_checkpoint
from alphaq.quantization import run as qrun
from tests.fixtures.ray_faults import ENV as FAULTS_ENV
from tests.quantization.quantize_helpers import make_plan, reshard, write_checkpoint

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# ray is imported by the fixture only, after the auth environment is set (Ray reads it once, on import)
HAVE_RAY = importlib.util.find_spec("ray") is not None
if not HAVE_RAY and os.environ.get("CI"):
    raise ImportError("ray is not installed but $CI is set: install the [test] extra (it pulls ray)")
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed (pip install 'alphaq[ray]')")


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config):
    """One local Ray for the session: 2 CPUs, 200 MB object store, no dashboard, token auth with a throwaway token
    in the environment (nothing written to ~/.ray), its files in a short temporary folder; yields the fault folder
    of :mod:`tests.fixtures.ray_faults`."""
    if not HAVE_RAY:
        pytest.skip("ray is not installed (pip install 'alphaq[ray]')")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    import ray

    faults = tmp_path_factory.mktemp("ray-faults")
    temp = tempfile.mkdtemp(prefix="aqray-")  # short: Ray's socket paths must stay under 107 characters
    # started outside pytest's fd capture: Ray's processes must not inherit (and keep) the capture's file
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        ray.init(
            num_cpus=2,
            object_store_memory=200 * 2**20,
            include_dashboard=False,
            _temp_dir=temp,
            log_to_driver=False,
            runtime_env={
                "env_vars": {"PYTHONPATH": str(ROOT), FAULTS_ENV: str(faults), "OMP_NUM_THREADS": "1"},
                "worker_process_setup_hook": "tests.fixtures.ray_faults.kill_once_when_armed",
            },
        )
    try:
        yield faults
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- helpers -------------------------------------------------------------------------------------------


def assert_same_inspect(local: Path, distributed: Path) -> None:
    for name in ("details.csv", "experts.csv"):
        assert (local / name).read_bytes() == (distributed / name).read_bytes(), name
    with np.load(local / "spectra.npz") as a, np.load(distributed / "spectra.npz") as b:
        assert sorted(a.files) == sorted(b.files) and a.files
        for key in a.files:
            assert np.array_equal(a[key], b[key], equal_nan=True), key


def comparable_manifest(out: Path) -> dict:
    manifest = json.loads((out / "quantize.json").read_text())
    for key in ("created", "timing"):
        manifest.pop(key)
    manifest["options"].pop("executor", None)
    for record in manifest["tensors"] + manifest["copied"]:
        record.pop("seconds")
    for shard in manifest["shards"]:
        shard.pop("resumed")
    return manifest


def assert_same_checkpoint(local: Path, distributed: Path) -> None:
    names = sorted(p.name for p in local.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir())
    for name in names:
        if name != "quantize.json":
            assert (local / name).read_bytes() == (distributed / name).read_bytes(), name
    assert comparable_manifest(local) == comparable_manifest(distributed)
    shards = json.loads((distributed / "quantize.json").read_text())["shards"]
    local_shards = json.loads((local / "quantize.json").read_text())["shards"]
    assert [s["sha256"] for s in shards] == [s["sha256"] for s in local_shards]


@pytest.fixture()
def sharded(tiny_checkpoints, tmp_path: Path) -> tuple[Path, Path, Path]:
    """olmoe in 3 source shards, its plan, and the local quantize of it."""
    model = reshard(tiny_checkpoints["olmoe"], tmp_path / "sharded", 3)
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    qrun.run_quantize(model, plan, tmp_path / "local")
    return model, plan, tmp_path / "local"


# -- options (no Ray needed) -----------------------------------------------------------------------------


def test_backend_options_are_checked_in_one_line() -> None:
    with backend_session("local") as backend:
        assert backend is None
    with pytest.raises(ConfigError, match="--ray-address needs --backend ray"):
        backend_session("local", "ray://head:10001")
    with pytest.raises(ConfigError, match="unknown backend 'dask'"):
        backend_session("dask")
    with pytest.raises(ConfigError, match="task_matrices=0 must be an integer >= 1"):
        RayBackend(task_matrices=0)
    with pytest.raises(ConfigError, match="--ray-address is empty"):
        RayBackend(address=" ")
    result = runner.invoke(app, ["inspect", "--ray-address", "auto", "--out", "x"])
    assert result.exit_code == 2 and "--ray-address needs --backend ray" in result.output


def test_inspect_tasks_follow_the_local_batches(tiny_checkpoints) -> None:
    ckpt = open_checkpoint(tiny_checkpoints["mixtral"])
    refs = sorted(ckpt.matrices, key=lambda r: r.shape)
    batches = inspect_batches(refs, task_matrices=3)
    assert [ref for batch in batches for ref in batch] == refs  # every matrix once, in order
    assert all(len({ref.shape for ref in batch}) == 1 and len(batch) <= 3 for batch in batches)
    shapes = [batch[0].shape for batch in batches]
    for shape in set(shapes):  # a shape's run is cut into ceil(count / 3) tasks
        count = sum(ref.shape == shape for ref in refs)
        assert shapes.count(shape) == -(-count // 3)


# -- inspect ---------------------------------------------------------------------------------------------


@needs_ray
def test_inspect_on_ray_equals_local_on_the_bundled_model(ray_cluster, tmp_path: Path) -> None:
    config = InspectConfig(layers=(0, 1))
    save_inspect(inspect(None, config), tmp_path / "local")
    ticks: list[str] = []
    result = runner.invoke(
        app, ["inspect", "--layers", "0,1", "--backend", "ray", "--no-html", "--out", str(tmp_path / "ray")]
    )
    assert result.exit_code == 0, result.output
    assert_same_inspect(tmp_path / "local", tmp_path / "ray")
    manifest = json.loads((tmp_path / "ray" / "inspect.json").read_text())
    assert manifest["executor"]["name"] == "ray" and manifest["executor"]["cpus"] == 2
    distributed = inspect(None, config, progress=lambda n, item, total: ticks.append(item), backend=RayBackend())
    assert len(ticks) == len(distributed.details) == manifest["timing"]["matrices"]


@needs_ray
def test_inspect_on_ray_equals_local_on_a_sharded_checkpoint(ray_cluster, tiny_checkpoints, tmp_path: Path) -> None:
    model = reshard(tiny_checkpoints["mixtral"], tmp_path / "sharded", 3)
    save_inspect(inspect(model), tmp_path / "local")
    save_inspect(inspect(model, backend=RayBackend(task_matrices=2)), tmp_path / "ray")
    assert_same_inspect(tmp_path / "local", tmp_path / "ray")


# -- quantize --------------------------------------------------------------------------------------------


@needs_ray
def test_quantize_on_ray_writes_the_same_bytes(ray_cluster, sharded, tmp_path: Path) -> None:
    model, plan, local = sharded
    result = runner.invoke(
        app,
        ["quantize", str(model), "--plan", str(plan), "--out", str(tmp_path / "ray"), "--backend", "ray", "--no-html"],
    )
    assert result.exit_code == 0, result.output
    assert_same_checkpoint(local, tmp_path / "ray")
    executor = json.loads((tmp_path / "ray" / "quantize.json").read_text())["options"]["executor"]
    assert executor["name"] == "ray" and executor["nodes"] == 1
    # one result in flight at a time: the same bytes again
    qrun.run_quantize(model, plan, tmp_path / "narrow", backend=RayBackend(inflight_bytes=1))
    assert_same_checkpoint(local, tmp_path / "narrow")


@needs_ray
def test_a_killed_worker_is_retried_and_the_output_is_unchanged(ray_cluster, sharded, tmp_path: Path) -> None:
    model, plan, local = sharded
    (ray_cluster / "killed").unlink(missing_ok=True)
    (ray_cluster / "arm").touch()
    try:
        qrun.run_quantize(model, plan, tmp_path / "ray", backend=RayBackend())
    finally:
        (ray_cluster / "arm").unlink()
    killed = int((ray_cluster / "killed").read_text())
    assert killed != os.getpid()
    with pytest.raises(ProcessLookupError):  # that worker process is gone
        os.kill(killed, 0)
    assert_same_checkpoint(local, tmp_path / "ray")


@needs_ray
def test_a_stopped_quantize_on_ray_resumes_to_the_same_bytes(ray_cluster, sharded, tmp_path: Path) -> None:
    model, plan, local = sharded
    manifest = json.loads((local / "quantize.json").read_text())
    first = manifest["shards"][0]["name"]
    first_shard = sum(r["shard"] == first for r in manifest["tensors"] + manifest["copied"])  # its units
    seen: list[str] = []

    def stop_in_second_shard(n: int, item: str, total: int) -> None:
        seen.append(item)
        if len(seen) == first_shard + 1:
            raise KeyboardInterrupt

    out = tmp_path / "ray"
    with pytest.raises(KeyboardInterrupt):
        qrun.run_quantize(model, plan, out, progress=stop_in_second_shard, backend=RayBackend())
    assert sorted(p.name for p in out.iterdir()) == [
        ".alphaq-quantize-progress.json",
        "model-00001-of-00003.safetensors",
    ]
    result = qrun.run_quantize(model, plan, out, backend=RayBackend())
    assert [s["resumed"] for s in result.manifest["shards"]] == [True, False, False]
    assert_same_checkpoint(local, out)


@needs_ray
def test_a_failed_task_names_the_tensor_in_one_line(ray_cluster, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {
        f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight": torch.randn(16, 32, generator=g) for e in range(2)
    }
    tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"][3, 5] = float("nan")
    model = write_checkpoint(
        tmp_path / "nan", {"model_type": "mixtral", "hidden_size": 32, "num_hidden_layers": 1}, tensors
    )
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json", lambda m: 4)
    with pytest.raises(AlphaQError) as local:
        qrun.run_quantize(model, plan, tmp_path / "local")
    with pytest.raises(AlphaQError) as distributed:
        qrun.run_quantize(model, plan, tmp_path / "ray", backend=RayBackend())
    assert str(distributed.value) == str(local.value)
    assert "experts.1.w1.weight: cannot quantize" in str(distributed.value) and "\n" not in str(distributed.value)
    # the inspect of the same checkpoint reports the NaN matrix as locally (a status, not a failure)
    save_inspect(inspect(model), tmp_path / "i-local")
    save_inspect(inspect(model, backend=RayBackend()), tmp_path / "i-ray")
    assert_same_inspect(tmp_path / "i-local", tmp_path / "i-ray")
