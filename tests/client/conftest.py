"""The client's tests run against the service for real: the live uvicorn, the reference onnxruntime session
and the readings are tests/app/conftest.py's, imported here (not copied) so that every module of
tests/client shares one session uvicorn. `store`, `manifest`, `trained_small` and `small_plant` come from
tests/conftest.py."""

from tests.app.conftest import anyio_backend, live, readings, reference

__all__ = ["anyio_backend", "live", "readings", "reference"]
