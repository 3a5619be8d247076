"""Running the inspect and quantize stages on a cluster (``--backend ray``); the local backend needs none of it."""

from alphaq.distributed.ray_backend import BACKENDS, RayBackend, backend_session

__all__ = ["BACKENDS", "RayBackend", "backend_session"]
