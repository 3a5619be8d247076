"""The Ray backend of ``alphaq inspect`` and ``alphaq quantize`` (``--backend ray [--ray-address ADDR]``).

The driver (the process running the command) opens the checkpoint, decides the work exactly as the local backend
does and writes every output itself; the Ray tasks only compute:

- inspect: one task per batch of same-shape matrices, cut at the local backend's batch boundaries
  (:data:`alphaq.audit.analysis.BATCH_BYTES`) and at :attr:`RayBackend.task_matrices` matrices. Each task computes the
  eigenvalues and metrics of its matrices with the local code (:func:`alphaq.audit.analysis.analyse_matrices`); the
  eigenvalues of a batch are computed matrix by matrix, so the cut changes no value. Results are taken in
  submission order, so details.csv / experts.csv are identical to a local run's.
- quantize: one task per quantized (or dense) matrix, running the local unit code
  (:func:`alphaq.quantization.run_units.run_unit`) and returning the bytes of its output tensors and its record; the
  driver writes each output shard with the local writer (copied tensors it reads itself), records it in the
  progress file and so resumes exactly as a local run does. At most :attr:`RayBackend.inflight_bytes` of
  results are outstanding at once.

Workers read the checkpoint BY PATH with :func:`alphaq.load.open_checkpoint` (so every node must see the
checkpoint folder at the same path: shared storage) and check its fingerprint against the driver's; no weight
goes through the object store on the way in. A worker that dies is retried (``max_retries``); a task that fails
raises a one-line :class:`alphaq.errors.AlphaQError` naming the tensor. ``ray`` is imported only here, and only
when the backend is used.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphaq.errors import AlphaQError, ConfigError

if TYPE_CHECKING:
    from alphaq.audit.run import InspectConfig
    from alphaq.load.checkpoint import Checkpoint

#: Values of ``--backend``.
BACKENDS: tuple[str, ...] = ("local", "ray")
#: Most matrices in one inspect task (a local eigenvalue batch is cut into tasks of at most this many).
TASK_MATRICES = 8
#: Most bytes of quantize results (output tensors) submitted and not yet written.
INFLIGHT_BYTES = 1 << 30
#: Most quantize tasks submitted and not yet written.
INFLIGHT_TASKS = 512
#: Worker-side cache of opened checkpoints: (path, pattern file) -> Checkpoint.
_OPENED: dict[tuple[str, str | None], Any] = {}
#: Driver-side cache of the remote functions (ray.remote wraps them on first use).
_REMOTES: dict[str, Any] = {}


@dataclass(frozen=True)
class RayBackend:
    """Where and how the Ray tasks run.

    Attributes:
        address: Ray cluster address (``ray://host:10001``, ``host:6379`` or ``auto``); None: ``$RAY_ADDRESS`` if
            set, else a Ray instance started on this machine for the run.
        max_retries: times a task whose worker died is run again.
        task_matrices: most matrices in one inspect task.
        inflight_bytes: most bytes of quantize results outstanding at once.
    """

    address: str | None = None
    max_retries: int = 3
    task_matrices: int = TASK_MATRICES
    inflight_bytes: int = INFLIGHT_BYTES

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise ConfigError("--ray-address is empty; pass a cluster address such as ray://head:10001, or omit it")
        for name, low in (("max_retries", 0), ("task_matrices", 1), ("inflight_bytes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"RayBackend.{name}={value!r} must be an integer >= {low}")

    @contextmanager
    def session(self) -> Iterator[RayBackend]:
        """Connect for the duration of the block; a Ray instance this started is shut down at its end."""
        started = self.connect()
        try:
            yield self
        finally:
            if started:
                _import_ray().shutdown()

    def connect(self) -> bool:
        """Join the cluster unless this process already has (``ray.init``); return whether it connected now.

        Raises:
            AlphaQError: ray is not installed, or the cluster cannot be reached.
        """
        ray = _import_ray()
        if ray.is_initialized():
            return False
        import logging

        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if address is None:
            kwargs["include_dashboard"] = False
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"--ray-address {address}" if address else "a local Ray instance"
            raise AlphaQError(
                f"{where}: cannot start or reach Ray ({_first_line(exc)}); start a cluster with "
                "`ray start --head` and pass its address, or use --backend local"
            ) from None
        return True

    def describe(self) -> dict[str, Any]:
        """``{"name": "ray", "address", "nodes", "cpus"}`` of the connected cluster (for the run's manifest)."""
        ray = _import_ray()
        self.connect()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        return {
            "name": "ray",
            "address": self.address or os.environ.get("RAY_ADDRESS") or "local",
            "nodes": nodes,
            "cpus": int(ray.cluster_resources().get("CPU", 0)),
        }

    # -- inspect --------------------------------------------------------------------------------------

    def analyse(
        self, ckpt: Checkpoint, refs: Sequence[Any], config: InspectConfig, *, pattern_file: str | Path | None = None
    ) -> Iterator[tuple[Any, dict[str, Any], Any]]:
        """The Ray counterpart of :func:`alphaq.audit.analysis.analyse_matrices`: the same (ref, row, spectrum)
        triples, in the same order, computed by tasks of :func:`inspect_batches`.

        Args:
            ckpt: the driver's open checkpoint.
            refs: its matrices to analyse, same-shape ones consecutive (the order inspect sorts them in).
            config: the :class:`alphaq.audit.run.InspectConfig`.
            pattern_file: the pattern file the checkpoint was opened with (the workers open it the same way).

        Raises:
            AlphaQError: a task failed (names its first matrix and the cause).
        """
        ray = _import_ray()
        self.connect()
        task = _remote(ray, _inspect_task).options(max_retries=self.max_retries, **_resources(config.device))
        source = (
            _shared_path(ckpt.path),
            None if pattern_file is None else _shared_path(pattern_file),
            ckpt.fingerprint,
        )
        batches = inspect_batches(refs, self.task_matrices)
        futures = [task.remote(*source, [ref.name for ref in batch], config) for batch in batches]
        # after a failure the tasks still queued are dropped, not cancelled: Ray 2.60 can abort the driver
        # (task_manager "Tried to complete task that was not pending") when a task that is finishing is cancelled
        for batch, future in zip(batches, futures):
            by_name = {ref.name: ref for ref in batch}
            for name, row, spectrum in _get(ray, future, batch[0].name, self.max_retries):
                yield by_name[name], row, spectrum

    # -- quantize -------------------------------------------------------------------------------------

    def shard_writer(self, job: Any, shards: Sequence[Any]) -> Callable[[Any, Any, Path], dict[str, Any]]:
        """A drop-in for :func:`alphaq.quantization.run._write_output_shard` that has the units of ``shards``
        (the shards still to write, in write order) quantized by Ray tasks, submitted ahead of the writer."""
        if getattr(job, "calibration", None) is not None:
            raise ConfigError("--backend ray does not run calibrated methods (--method gptq) yet; use --backend local")
        ray = _import_ray()
        self.connect()
        return _ShardPipeline(self, ray, job, shards)


def backend_session(name: str, address: str | None = None) -> Any:
    """Context manager of the CLI's ``--backend``/``--ray-address``: yields None (local) or a connected
    :class:`RayBackend` (disconnected at the end if it started Ray).

    Raises:
        ConfigError: an unknown backend, or ``--ray-address`` without ``--backend ray``.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; use --backend local or --backend ray")
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --backend ray; add it, or drop --ray-address")
        return _nothing()
    return RayBackend(address=address).session()


def inspect_batches(refs: Sequence[Any], task_matrices: int = TASK_MATRICES) -> list[list[Any]]:
    """Cut ``refs`` (same-shape matrices consecutive) into the tasks of :meth:`RayBackend.analyse`: runs of one
    shape, cut where the local backend's eigenvalue batch would be full and at ``task_matrices`` matrices."""
    from alphaq.audit.analysis import BATCH_BYTES

    batches: list[list[Any]] = []
    for ref in refs:
        current = batches[-1] if batches else None
        if (
            current is None
            or current[0].shape != ref.shape
            or len(current) >= task_matrices
            or (len(current) + 1) * ref.params * 4 > BATCH_BYTES
        ):
            batches.append([ref])
        else:
            current.append(ref)
    return batches


# -- worker side -------------------------------------------------------------------------------------


def _inspect_task(
    path: str, pattern_file: str | None, fingerprint: str, names: list[str], config: InspectConfig
) -> list[tuple[str, dict[str, Any], Any]]:
    """Worker: open the checkpoint by path and analyse the named matrices; (name, row, spectrum) for each."""
    from alphaq.audit.analysis import analyse_matrices

    ckpt = _open_checkpoint(path, pattern_file, fingerprint)
    refs = {ref.name: ref for ref in ckpt.matrices}
    return [
        (ref.name, row, spectrum)
        for ref, row, spectrum in analyse_matrices(ckpt, [refs[name] for name in names], config)
    ]


def _quantize_task(
    path: str, fingerprint: str, job: Any, unit: Any, shard: str
) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """Worker: run one quantize/dense unit; the bytes of its output tensors (name order of the unit) and its record."""
    from alphaq.quantization.run_units import run_unit

    collected = _Collector()
    record = run_unit(dataclasses.replace(job, ckpt=_open_checkpoint(path, None, fingerprint)), unit, collected, shard)
    return collected.items, record


class _Collector:
    """Stands in for :class:`alphaq.quantization.shards.ShardWriter` in a worker: keeps the bytes written."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    def write(self, name: str, data: bytes | memoryview) -> None:
        self.items.append((name, bytes(data)))


def _open_checkpoint(path: str, pattern_file: str | None, fingerprint: str) -> Any:
    """The checkpoint at ``path`` (opened once per worker process), checked to be the driver's."""
    import socket

    from alphaq.load import open_checkpoint

    key = (path, pattern_file)
    if key not in _OPENED:
        ckpt = open_checkpoint(path, pattern_file=pattern_file)
        if ckpt.fingerprint != fingerprint:
            raise AlphaQError(
                f"{path} on node {socket.gethostname()} is not the driver's checkpoint (fingerprint "
                f"{ckpt.fingerprint}, the driver's {fingerprint}); every node must see the same "
                "checkpoint at the same path (shared storage)"
            )
        if len(_OPENED) >= 4:
            _OPENED.clear()
        _OPENED[key] = ckpt
    return _OPENED[key]


# -- driver side -------------------------------------------------------------------------------------


class _ShardPipeline:
    """Writes output shards in order while Ray tasks quantize their units ahead (bounded by bytes and count)."""

    def __init__(self, backend: RayBackend, ray: Any, job: Any, shards: Sequence[Any]) -> None:
        self._backend, self._ray = backend, ray
        self._task = _remote(ray, _quantize_task).options(max_retries=backend.max_retries, **_resources(job.device))
        self._source = (_shared_path(job.ckpt.path), job.ckpt.fingerprint)
        self._job = job
        self._queue = deque((shard.name, unit) for shard in shards for unit in shard.units if unit.kind != "copy")
        self._inflight: dict[tuple[str, str], tuple[Any, int]] = {}
        self._bytes = 0

    def __call__(self, job: Any, shard: Any, out: Path) -> dict[str, Any]:
        from alphaq.quantization import shards as st
        from alphaq.quantization.run_units import run_unit

        units: list[dict[str, Any]] = []

        def fill(writer: Any) -> None:
            for unit in shard.units:
                if unit.kind == "copy":  # read and written here: no compute, and no bytes through the object store
                    units.append(run_unit(job, unit, writer, shard.name))
                else:
                    items, record = self._take(shard.name, unit)
                    for name, data in items:
                        writer.write(name, data)
                    units.append(record)
                job.tick(unit)

        try:
            digest, size = st.write_shard(out / shard.name, shard.tensors, fill)
        except BaseException:
            self.close()
            raise
        return {"sha256": digest, "bytes": size, "units": units}

    def close(self) -> None:
        """Drop the tasks not yet written (after a failure or an interrupt); they are not cancelled, as Ray 2.60
        can abort the driver when a finishing task is cancelled, and their results are freed unread."""
        self._inflight.clear()
        self._queue.clear()
        self._bytes = 0

    def _submit(self) -> None:
        while self._queue:
            shard, unit = self._queue[0]
            if self._inflight and (
                len(self._inflight) >= INFLIGHT_TASKS or self._bytes + unit.nbytes > self._backend.inflight_bytes
            ):
                return
            self._queue.popleft()
            job, planned = self._job, self._job.plan.get(unit.source)
            slim = dataclasses.replace(
                job,
                ckpt=None,
                progress=None,
                on_bytes=None,  # this unit's part of the job
                refs={unit.source: job.refs[unit.source]},
                plan={} if planned is None else {unit.source: planned},
            )
            future = self._task.remote(*self._source, slim, unit, shard)
            self._inflight[(shard, unit.key)] = (future, unit.nbytes)
            self._bytes += unit.nbytes

    def _take(self, shard: str, unit: Any) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
        self._submit()
        future, nbytes = self._inflight.pop((shard, unit.key))
        self._bytes -= nbytes
        result = _get(self._ray, future, unit.key, self._backend.max_retries)
        self._submit()
        return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AlphaQError(
            "--backend ray needs the ray package: pip install 'alphaq[ray]' (or use --backend local)"
        ) from None
    return ray


def _remote(ray: Any, function: Callable[..., Any]) -> Any:
    if function.__name__ not in _REMOTES:
        _REMOTES[function.__name__] = ray.remote(function)
    return _REMOTES[function.__name__]


def _resources(device: str) -> dict[str, Any]:
    """One CPU a task; one GPU too when the computation runs on CUDA."""
    return {"num_cpus": 1, "num_gpus": 1 if str(device).startswith("cuda") else 0}


def _shared_path(path: str | Path) -> str:
    """The absolute path the workers open (the same on every node with shared storage)."""
    return str(Path(path).expanduser().resolve())


def _get(ray: Any, future: Any, what: str, retries: int) -> Any:
    """``ray.get(future)``, a failure turned into one AlphaQError line naming ``what`` (a matrix or tensor)."""
    try:
        return ray.get(future)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None) or exc
        message = _first_line(cause)
        if isinstance(cause, AlphaQError):
            text = message if what in message else f"{what}: {message}"
            raise (type(cause)(text) if type(cause).__init__ is AlphaQError.__init__ else AlphaQError(text)) from None
        raise AlphaQError(
            f"{what}: the Ray task failed ({type(cause).__name__}: {message}); see the worker's "
            "log (`ray logs`), fix the cause and rerun"
        ) from None
    except ray.exceptions.RayError as exc:
        raise AlphaQError(
            f"{what}: the Ray task was lost ({type(exc).__name__}) after {retries} retries; check "
            "the nodes' memory and logs (`ray logs`), then rerun (quantize resumes)"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
