"""Shared test fixtures. One local Ray cluster serves the whole session (a head costs ~2 s and ~1 GB)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray cluster shared by every test that asks for it; shut down at the end of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, _temp_dir=f"/tmp/c2f-ray-test-{os.getpid()}", include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
