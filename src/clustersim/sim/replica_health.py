"""What the serving layer does when a replica's GPUs fail, and how it comes back.

States of a replica: `up`; `lost` (its GPUs failed; the router does not know yet and keeps
sending to it: those requests wait, as the ones it held do); `out` (the health check noticed
after `faults.detect_s`: the router routes around it, and every request it held or received
is retried on another replica, prefill recomputed, or failed, per `faults.on_failure`);
`reloading` (GPUs repaired: weights come back from storage or over the fabric, then `up`).
A generation counter per replica makes timers of a superseded loss no-ops.

Invariant (checked): every request finishes once, or is counted dropped or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import nan
from typing import Protocol

import numpy as np
import simpy

from clustersim.config.schema import FaultsSpec
from clustersim.metrics.recorder import Recorder
from clustersim.network.fabric import Fabric
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import Router

BUSY = 1 << 40  # outstanding count shown to the router for a replica it must avoid


class FaultUnit(Protocol):
    """A router unit faults can stop: a Replica, or a DP rank of a DP-attention EP group."""

    @property
    def kv_capacity_blocks(self) -> int: ...

    @property
    def kv_used_blocks(self) -> int: ...

    @property
    def groups(self) -> Sequence[Sequence[str]]:
        """GPU groups whose failure stops the unit."""
        ...

    def stop(self) -> list[int]: ...

    def submit(self, rid: int) -> None: ...


def reset_for_retry(state: RequestState, rid: int) -> None:
    """Forget a lost request's progress: its prefill is recomputed from scratch (a first
    token already streamed stays streamed: TTFT keeps the client's first token)."""
    state.computed[rid] = 0
    state.generated[rid] = 0
    state.effective_prompt[rid] = state.prompt[rid]
    state.d0[rid] = 0
    state.version[rid] += 1
    state.finish_s[rid] = nan


def cut_leap(replica: object, now: float) -> None:
    """Cut a decode leap in flight at its next step boundary (serving/replica.py: a replica
    may commit to many decode steps at once; `Replica.interrupt(now)` ends that commitment),
    so steps after a fault change point are priced — or dropped — with the new state.
    Without leaps every step is priced when it starts and there is nothing to cut."""
    interrupt = getattr(replica, "interrupt", None)
    if interrupt is not None:
        interrupt(now)


class ReplicaHealth:
    """Replica states, the router's view of them, and retries / failures of lost requests."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: FaultsSpec,
        replicas: Sequence[FaultUnit],
        router: Router,
        outstanding: list[int],
        recorder: Recorder,
        state: RequestState,
        fabric: Fabric,
        weights_per_gpu_bytes: float,
        end_one: Callable[[], None],
        units: int | None = None,
    ) -> None:
        """`replicas`: the units faults can stop (empty when only links fail); `units`: the
        router's units (default: len(replicas))."""
        self.env = env
        self.spec = spec
        self.replicas = replicas
        self.router = router
        self.outstanding = outstanding
        self.recorder = recorder
        self.state = state
        self.fabric = fabric
        self.weights_per_gpu_bytes = weights_per_gpu_bytes
        self.end_one = end_one
        n = len(state.prompt)
        self.retries = [0] * n
        self.failed = [False] * n
        self.finished = [False] * n
        count = len(replicas) if units is None else units
        self.status = ["up"] * count
        self.avoid: set[int] = set()
        self.limbo: list[list[int]] = [[] for _ in range(count)]
        self.pending: list[int] = []  # waiting for any replica to come back
        self.doomed = False  # every replica is down for good: waiting requests fail
        self.reloads: set[int] = set()  # replicas loading their weights back
        self.gen = [0] * count
        self.cause = [-1] * count  # fault index that took the replica down
        self.retried_by = np.zeros(0, dtype=np.int64)  # per fault index (sized by the injector)
        self.failed_by = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ router side

    def choose(self, kv_fraction: Sequence[float]) -> int:
        """A replica the router may use (-1: every replica is out), given its policy."""
        avoid = self.avoid
        if not avoid:
            return self.router.choose(self.outstanding, kv_fraction)
        if len(avoid) == len(self.status):
            return -1
        loads = [BUSY if r in avoid else o for r, o in enumerate(self.outstanding)]
        kv = [2.0 if r in avoid else f for r, f in enumerate(kv_fraction)]
        for _ in range(4 * len(loads)):
            r = self.router.choose(loads, kv)
            if r not in avoid:
                return r
        return loads.index(min(loads))

    def absorbs(self, r: int, rid: int) -> bool:
        """True when replica r is lost but not yet detected: the request waits there."""
        if self.status[r] != "lost":
            return False
        self.limbo[r].append(rid)
        self.outstanding[r] += 1
        return True

    def hold(self, rid: int) -> None:
        """No replica can take the request now: it waits for one to come back (and fails
        when none ever will)."""
        if self.doomed:
            self._fail(rid, -1)
        else:
            self.pending.append(rid)

    def schedule_ended(self) -> None:
        """No fault starts or ends any more: if every replica is down, none comes back."""
        if self.status and not self.reloads and all(s != "up" for s in self.status):
            self.doomed = True
            pending, self.pending = self.pending, []
            for rid in pending:
                self._fail(rid, -1)

    def on_finish(self, rid: int) -> None:
        if self.finished[rid] or self.failed[rid]:
            raise RuntimeError(f"request {rid} finished twice (or after failing)")
        self.finished[rid] = True

    # ------------------------------------------------------------------ fault side

    def lose(self, r: int, cause: int) -> None:
        """Replica r's GPUs failed now: its work in flight is lost."""
        status = self.status[r]
        if status in ("lost", "out"):
            return
        self.gen[r] += 1
        self.cause[r] = cause
        self.reloads.discard(r)
        cut_leap(self.replicas[r], self.env.now)
        held = self.replicas[r].stop()
        if status == "reloading":  # already routed around: nothing new to detect
            self.status[r] = "out"
            return
        self.status[r] = "lost"
        self.limbo[r] += held  # still outstanding in the router's view
        gen = self.gen[r]
        timer = self.env.timeout(self.spec.detect_s)
        timer.callbacks.append(lambda _ev: self._detect(r, gen))

    def repair(self, r: int) -> None:
        """Replica r's GPUs are back: it reloads its weights, then serves again."""
        if self.status[r] not in ("lost", "out"):
            return
        if self.status[r] == "out":
            self.status[r] = "reloading"
        gen = self.gen[r]
        self.reloads.add(r)
        loaded = self._reload(r)
        loaded.callbacks.append(lambda _ev: self._back(r, gen))

    # ------------------------------------------------------------------ transitions

    def _detect(self, r: int, gen: int) -> None:
        if gen != self.gen[r] or self.status[r] != "lost":
            return
        self.status[r] = "out"
        self.avoid.add(r)
        self._flush_limbo(r)

    def _back(self, r: int, gen: int) -> None:
        if gen != self.gen[r]:
            return
        self._flush_limbo(r)  # repaired before the health check noticed
        self.reloads.discard(r)
        self.status[r] = "up"
        self.avoid.discard(r)
        pending, self.pending = self.pending, []
        for rid in pending:
            self._place(rid)

    def _flush_limbo(self, r: int) -> None:
        lost, self.limbo[r] = self.limbo[r], []
        self.outstanding[r] -= len(lost)
        self.avoid.add(r)
        for rid in lost:
            self._recover(rid, self.cause[r])

    def _recover(self, rid: int, cause: int) -> None:
        if self.spec.on_failure == "fail":
            self._fail(rid, cause)
            return
        self.retries[rid] += 1
        if 0 <= cause < len(self.retried_by):
            self.retried_by[cause] += 1
        reset_for_retry(self.state, rid)
        self._place(rid)

    def _fail(self, rid: int, cause: int) -> None:
        self.failed[rid] = True
        if 0 <= cause < len(self.failed_by):
            self.failed_by[cause] += 1
        self.end_one()

    def _place(self, rid: int) -> None:
        r = self.choose([rep.kv_used_blocks / rep.kv_capacity_blocks for rep in self.replicas])
        if r < 0:
            self.hold(rid)
            return
        self.recorder.replica[rid] = r
        if self.absorbs(r, rid):  # the router does not know yet that r is lost too
            return
        self.outstanding[r] += 1
        self.replicas[r].submit(rid)

    def _reload(self, r: int) -> simpy.Event:
        """Weights back on replica r's GPUs: from storage at the stated bandwidth per GPU, or
        copied over the fabric from a healthy replica of the same shape (GPU i → GPU i)."""
        nbytes = self.weights_per_gpu_bytes
        target = [g for group in self.replicas[r].groups for g in group]
        if self.spec.reload.source == "fabric":
            for d, donor in enumerate(self.replicas):
                if self.status[d] != "up" or d == r:
                    continue
                source = [g for group in donor.groups for g in group]
                if len(source) == len(target):
                    flows = [(s, t, nbytes) for s, t in zip(source, target, strict=True)]
                    return self.fabric.transfer(flows, independent_flows=True)
        return self.env.timeout(nbytes / (self.spec.reload.bandwidth_GBps * 1e9))
