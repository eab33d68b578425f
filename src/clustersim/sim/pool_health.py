"""Lost GPUs under disaggregated prefill / decode pools (docs/faults.md §2).

One ReplicaHealth over both pools' units (index: prefill units, then decode units, as their
global replica ids) gives each unit the states lost → out → reloading → up; what a lost unit
held is undone per stage of the request's life (disagg/runtime.py):
- prefill unit lost: requests queued or prefilling there, and those whose KV was leaving it,
  are recomputed on another prefill unit (a retry) and keep their decode reservation;
- decode unit lost: requests waiting for its blocks, landing on it or decoding there lose
  their KV and are routed anew to a (prefill, decode) pair, both states reset (a retry);
  those prefilling elsewhere for it are recovered when their prefill ends ("orphans");
- `on_failure: fail` fails them instead (a kept decode reservation is given back).
A KV transfer from or to a lost unit lands as a no-op (`DisaggRuntime.attempt`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import simpy

from clustersim.config.schema import FaultsSpec
from clustersim.disagg.runtime import DONE, PREFILL, TRANSFER, WAITING, DisaggRuntime
from clustersim.network.fabric import Fabric
from clustersim.serving.router import Router
from clustersim.sim.replica_health import BUSY, ReplicaHealth, reset_for_retry


class _PoolUnit:
    """A pool unit as health sees it: stopping it undoes what it held (see module doc)."""

    def __init__(self, health: PoolHealth, pool: int, index: int) -> None:
        self.health, self.pool, self.index = health, pool, index
        members = health.disagg.prefill if pool == 0 else health.disagg.decode
        self.member = members[index]

    @property
    def kv_capacity_blocks(self) -> int:
        return self.member.unit.kv_capacity_blocks

    @property
    def kv_used_blocks(self) -> int:
        return self.member.unit.kv_used_blocks

    @property
    def groups(self) -> Sequence[Sequence[str]]:
        return self.member.unit.groups

    def submit(self, rid: int) -> None:
        raise AssertionError("pool units are placed through DisaggRuntime")

    def stop(self) -> list[int]:
        if self.pool == 0:
            return self.health.stop_prefill(self.index)
        return self.health.stop_decode(self.index)


class PoolHealth(ReplicaHealth):
    """ReplicaHealth whose units are both pools' (see module doc); DisaggRuntime's guard."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: FaultsSpec,
        disagg: DisaggRuntime,
        fabric: Fabric,
        end_one: Callable[[], None],
    ) -> None:
        self.disagg = disagg
        self.n_prefill = len(disagg.prefill)
        units = [_PoolUnit(self, 0, i) for i in range(self.n_prefill)]
        units += [_PoolUnit(self, 1, i) for i in range(len(disagg.decode))]
        router: Router = disagg.p_router  # unused: routing is per pool (`route`)
        super().__init__(
            env,
            spec,
            units,
            router,
            [0] * len(units),
            disagg.recorder,
            disagg.decode_state,
            fabric,
            0.0,  # per unit: unit_weights
            end_one,
        )
        pf, dc = disagg.pools  # weight bytes per GPU of each unit's pool (its reload)
        self.unit_weights = [pf.built.memory.weights_per_gpu_bytes] * self.n_prefill
        self.unit_weights += [dc.built.memory.weights_per_gpu_bytes] * len(disagg.decode)
        n = len(disagg.decode_state.prompt)
        self.full = [False] * n  # lost with its decode KV or reservation: route anew
        self.orphans: dict[int, int] = {}  # rid → global index of its lost decode unit
        disagg.guard = self

    # ------------------------------------------------------------------ routing

    def route(self, rid: int) -> tuple[int, int]:
        g = self.disagg
        p = self._choose(g.p_router, rid, g.p_outstanding, g.p_kv, 0)
        d = self._choose(g.d_router, rid, g.d_outstanding, g.d_kv, self.n_prefill)
        return p, d

    def _choose(
        self, router: Router, rid: int, outstanding: list[int], kv: list[float], offset: int
    ) -> int:
        avoid = {r - offset for r in self.avoid if offset <= r < offset + len(outstanding)}
        if not avoid:
            return router.choose_request(rid, outstanding, kv)
        if len(avoid) == len(outstanding):
            return -1
        loads = [BUSY if i in avoid else o for i, o in enumerate(outstanding)]
        fractions = [2.0 if i in avoid else f for i, f in enumerate(kv)]
        for _ in range(4 * len(loads)):
            i = router.choose_request(rid, loads, fractions)
            if i not in avoid:
                return i
        return loads.index(min(loads))

    def absorbs_at_decode(self, rid: int) -> bool:
        g = self.disagg
        r = self.n_prefill + g.decode_of[rid]
        if self.status[r] != "lost":
            return False
        g.p_outstanding[g.prefill_of[rid]] -= 1
        g.d_outstanding[g.decode_of[rid]] -= 1
        self.full[rid] = True
        self.limbo[r].append(rid)
        return True

    def submit_prefill(self, rid: int) -> None:
        """The request's decode blocks are reserved: it joins its prefill unit, another one
        if that one is out, or the lost one's limbo (the router does not know yet)."""
        g = self.disagg
        p = g.prefill_of[rid]
        if self.status[p] == "up":
            g.prefill[p].unit.submit(rid)
            return
        g.p_outstanding[p] -= 1
        if self.status[p] == "lost":
            self.full[rid] = False
            self.limbo[p].append(rid)
            return
        self._resubmit(rid)

    def _resubmit(self, rid: int) -> None:
        """Prefill on a unit that is up, keeping the decode reservation; if none is, the
        reservation is given back and the request waits for any unit."""
        g = self.disagg
        p = self._choose(g.p_router, rid, g.p_outstanding, g.p_kv, 0)
        if p >= 0:
            g.prefill_of[rid] = p
            g.p_outstanding[p] += 1
            g.stage[rid] = PREFILL
            self.recorder.replica[rid] = g.prefill[p].gid
            self.submit_prefill(rid)
            return
        self._cancel_reservation(rid)
        self.full[rid] = True
        reset_for_retry(g.decode_state, rid)
        self.hold(rid)

    def orphaned(self, rid: int) -> bool:
        r = self.orphans.pop(rid, None)
        if r is None:
            return False
        self.disagg.prefill[self.disagg.prefill_of[rid]].release_kept(rid)
        self.full[rid] = True
        self._recover(rid, self.cause[r])
        return True

    def schedule_ended(self) -> None:
        """No fault starts or ends any more: if every unit of a pool is down, none comes
        back, and waiting requests fail."""
        units = len(self.status)
        pools = (range(self.n_prefill), range(self.n_prefill, units))
        if any(all(self.status[r] != "up" and r not in self.reloads for r in p) for p in pools):
            self.doomed = True
            pending, self.pending = self.pending, []
            for rid in pending:
                self._fail(rid, -1)

    # ------------------------------------------------------------------ losses

    def stop_prefill(self, p: int) -> list[int]:
        """Prefill unit p failed: the requests it queued or prefilled, and those whose KV
        was leaving it; the lanes' fresh schedulers keep finished prefills' KV again."""
        g = self.disagg
        member = g.prefill[p]
        held = member.unit.stop()
        for sched in member.schedulers:
            sched.admission.keep_kv_after_finish = True
        g.p_outstanding[p] -= len(held)
        for rid in range(len(g.stage)):
            if g.stage[rid] == TRANSFER and g.prefill_of[rid] == p:
                g.attempt[rid] += 1
                g.stage[rid] = PREFILL
                held.append(rid)
        for rid in held:
            self.full[rid] = False  # its decode reservation holds (unless orphaned)
        return held

    def stop_decode(self, d: int) -> list[int]:
        """Decode unit d failed: every request bound to it loses its KV or reservation."""
        g = self.disagg
        held = g.decode[d].unit.stop()
        decoding = set(held)
        g.pending[d].clear()
        for rid in range(len(g.stage)):
            if g.decode_of[rid] != d or rid in decoding:
                continue
            stage = g.stage[rid]
            if (stage == WAITING and not self.full[rid]) or stage == TRANSFER:
                if stage == WAITING:
                    g.p_outstanding[g.prefill_of[rid]] -= 1
                else:
                    g.attempt[rid] += 1
                    g.prefill[g.prefill_of[rid]].release_kept(rid)
                held.append(rid)
            elif stage == PREFILL:
                self.orphans[rid] = self.n_prefill + d
                g.d_outstanding[d] -= 1
        g.d_outstanding[d] -= len(held)
        for rid in held:
            self.full[rid] = True
        return held

    # ------------------------------------------------------------------ recovery

    def _reload(self, r: int) -> simpy.Event:
        self.weights_per_gpu_bytes = self.unit_weights[r]
        return super()._reload(r)

    def _recover(self, rid: int, cause: int) -> None:
        g = self.disagg
        if self.orphans.pop(rid, None) is not None:  # its decode unit was lost meanwhile
            self.full[rid] = True
        if self.spec.on_failure == "fail":
            if not self.full[rid]:
                self._cancel_reservation(rid)
            g.stage[rid] = DONE
            self._fail(rid, cause)
            return
        self.retries[rid] += 1
        if 0 <= cause < len(self.retried_by):
            self.retried_by[cause] += 1
        g.attempt[rid] += 1
        reset_for_retry(g.prefill_state, rid)
        if not self.full[rid]:
            self._resubmit(rid)
            return
        reset_for_retry(g.decode_state, rid)
        g.stage[rid] = WAITING  # bound to no unit until placed (a later loss skips it)
        self._place(rid)

    def _place(self, rid: int) -> None:
        """Route the request anew to a (prefill, decode) pair, or hold it."""
        p, d = self.route(rid)
        if p < 0 or d < 0:
            self.hold(rid)
            return
        self.full[rid] = False
        self.recorder.replica[rid] = self.disagg.prefill[p].gid
        self.disagg.enter(rid, p, d)

    def _cancel_reservation(self, rid: int) -> None:
        g = self.disagg
        if g.stage[rid] == PREFILL:
            member = g.decode[g.decode_of[rid]]
            member.schedulers[g.decode_lane[rid]].cancel_prefilled(rid)
            member.wake(g.decode_lane[rid])
            g.d_outstanding[g.decode_of[rid]] -= 1
            g._drain(g.decode_of[rid])
        g.stage[rid] = WAITING
