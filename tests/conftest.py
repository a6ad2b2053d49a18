"""Shared fixtures: one local Ray cluster per test session, started only when a test asks."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster (2 CPUs, no dashboard) shared by every test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            namespace="pairstack-test",
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
