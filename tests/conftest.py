"""Shared test fixtures. One local Ray cluster serves the whole session (a head costs ~2 s and ~1 GB)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The whole session runs torch on one thread, module-scoped fixtures included: the tests' small tensors gain
    nothing from two, two threads on a shared 2-core machine can run many times slower, and CPU kernels change their
    last bits with the thread count, so runs compared byte for byte (in-process vs subprocess) must agree on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU local Ray cluster shared by every test that asks for it; shut down at the end of the session.
    Its workers run torch on one thread too (Ray keeps an OMP_NUM_THREADS that is already set)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, _temp_dir=f"/tmp/c2f-ray-test-{os.getpid()}", include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()
