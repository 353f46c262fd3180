"""The autoscaler: a control loop that sets each pool's container count.

Every tick (and right away when inputs arrive), for each pool:
  1. required  = ceil((queued + running inputs) / target_inputs per container)
  2. desired   = max(min_containers, required + buffer_containers if required else 0),
                 capped at max_containers; 0 once the app has stopped
  3. start     desired - live containers (unless starts are backing off after init failures)
  4. stop      idle READY containers beyond `desired` once idle for `scaledown_window`
  5. enforce   kill a container whose oldest input is past `timeout` + grace (the container's
               own watchdog normally reports the timeout first)
  6. rebalance take back inputs waiting in a stalled container while another has room
               (Scheduler.rebalance; dispatch also does it whenever something changes)
"""

from __future__ import annotations

import asyncio
import logging

from .. import _config
from .containers import ContainerManager
from .logs import LogHub
from .model import ContainerState, Pool, now
from .scheduler import Scheduler

log = logging.getLogger("ferry.server")

TICK_SECONDS = 0.1
TIMEOUT_GRACE_SECONDS = 5.0


class Autoscaler:
    def __init__(self, scheduler: Scheduler, containers: ContainerManager, logs: LogHub) -> None:
        self.scheduler = scheduler
        self.containers = containers
        self.logs = logs
        self._default_max = int(_config.get("default_max_containers"))
        self._default_scaledown = float(_config.get("default_scaledown_window"))
        self._default_timeout = float(_config.get("default_timeout"))

    def wake(self, pool: Pool) -> None:
        """Re-evaluate one pool now (called when inputs arrive or containers end)."""
        if pool.queue and not any(c.state is ContainerState.STARTING for c in pool.containers.values()):
            self.scale(pool)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self.tick()
            except Exception:
                log.exception("autoscaler tick failed")

    def tick(self) -> None:
        for pool in list(self.scheduler.pools.values()):
            self.scale(pool)
            self.enforce_timeouts(pool)
            self.scheduler.rebalance(pool)
        self.logs.flush()

    def desired(self, pool: Pool) -> int:
        if not pool.app.live:
            return 0
        maximum = pool.setting("max_containers") or self._default_max
        minimum = int(pool.setting("min_containers", 0))
        required = pool.required_containers()
        buffer = int(pool.setting("buffer_containers", 0)) if required else 0
        return min(max(minimum, required + buffer), int(maximum))

    def scale(self, pool: Pool) -> None:
        desired = self.desired(pool)
        live = pool.live_containers()
        if len(live) < desired:
            if now() < pool.next_start_at:
                return
            # after init failures, probe with one container before starting many
            count = 1 if pool.init_failures else desired - len(live)
            for _ in range(count):
                if self.containers.start(pool) is None:
                    # no free GPU of the kind it needs: the inputs wait, and an idle container
                    # of another function that holds such GPUs is asked to give them back
                    self._reclaim_gpus(pool)
                    break
            return
        excess = len(live) - desired
        if excess <= 0:
            return
        window = float(pool.setting("scaledown_window") or self._default_scaledown)
        idle = sorted(
            (c for c in live if c.state is ContainerState.READY and not c.inflight),
            key=lambda c: c.idle_since,
        )
        for container in idle[:excess]:
            if not pool.app.live or now() - container.idle_since >= window:
                self.containers.shutdown(container, "scaled down")

    def _reclaim_gpus(self, needy: Pool) -> None:
        request = needy.gpu_request()
        if request is None or any(c.state is ContainerState.DRAINING and c.gpu for p in self.scheduler.pools.values()
                                  for c in p.containers.values()):
            return  # GPUs are already on their way back
        for pool in self.scheduler.pools.values():
            if pool is needy or len(pool.live_containers()) <= int(pool.setting("min_containers", 0)):
                continue
            for container in pool.live_containers():
                holds = container.gpu is not None and any(o.matches(container.gpu[0]) for o in request.options)
                if holds and container.state is ContainerState.READY and not container.inflight:
                    self.containers.shutdown(container, "gave its GPU to queued work")
                    return

    def enforce_timeouts(self, pool: Pool) -> None:
        timeout = float(pool.setting("timeout") or self._default_timeout)
        limit = timeout + TIMEOUT_GRACE_SECONDS
        for container in list(pool.containers.values()):
            if container.state is ContainerState.STOPPED or not container.inflight:
                continue
            oldest = min(i.dispatched_at for i in container.inflight.values())
            if now() - oldest > limit:
                self.containers.kill(container, f"timeout: the input ran longer than {timeout:g}s")
