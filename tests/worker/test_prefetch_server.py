"""Short tasks queued on a busy worker thread, on a real cluster (worker.prefetch-short-tasks)."""

from __future__ import annotations

import pytest

from shoal import Client, config
from shoal.testing.cluster import cluster
from shoal.worker.execute import get_worker


def handed_to_threads(i: int) -> int:
    """How many tasks this one-thread worker had given its thread when this one ran."""
    return len(get_worker().state.executing)


@pytest.mark.parametrize("prefetch", [16, 0])
async def test_a_thread_gets_short_tasks_queued_behind_the_running_one(
    fresh_config: pytest.MonkeyPatch, prefetch: int
) -> None:
    fresh_config.setenv("SHOAL_WORKER__PREFETCH_SHORT_TASKS", str(prefetch))
    config.refresh()
    async with (
        cluster(n_workers=1, nthreads=1) as (s, _),
        Client(s.address, asynchronous=True) as c,
    ):
        # the first ones teach the scheduler that these tasks are short
        assert len(await c.gather(c.map(handed_to_threads, range(50)))) == 50
        seen = await c.gather(c.map(handed_to_threads, range(50, 550)))
        assert len(seen) == 500
        if prefetch:
            assert 1 < max(seen) <= 1 + prefetch
        else:
            assert max(seen) == 1
