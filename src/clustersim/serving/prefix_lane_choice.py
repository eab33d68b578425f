"""Which pipeline lane of a replica takes a request when every lane has its own prefix cache.

A replica with PP = p runs p scheduler lanes (vLLM V0's virtual engines), each with its own KV
pool and therefore its own prefix cache (serving/prefix_lane.py). Without prefix caching a
request goes to the lane with the fewest outstanding requests (vLLM V0's
`_get_least_loaded_virtual_engine`). With it, a turn sent to another lane than the one holding
its conversation would prefill it again, so the lane is chosen as the `kv_aware` router
chooses a replica (Dynamo's KV router, overlap weight 1): the lowest

    cost = prompt blocks still to prefill on that lane + its active blocks

where active blocks are the KV its running requests hold plus the prompts waiting there, all
in prefix blocks; ties go to fewer outstanding requests, then the lowest index. The active
term is what keeps the lanes balanced: a lane holding the prefix wins only while the prefill
it saves exceeds the extra load it carries.

(vLLM V1 and SGLang run PP with one scheduler and one KV pool per replica, so every
micro-batch sees the whole cache; the simulator keeps V0's lane-per-pool structure and
routes by the cache instead.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clustersim.serving.scheduler import Scheduler

if TYPE_CHECKING:  # (prefix caching's modules load for runs that use it)
    from clustersim.serving.prefix_lane import LanePrefix


def prefix_lane(rid: int, lanes: Sequence[LanePrefix], outstanding: Sequence[int]) -> int:
    """Index of the lane that takes request `rid` (module docstring); `outstanding`: each
    lane's outstanding requests."""
    best, best_key = 0, (0.0, 0)
    for i, lane in enumerate(lanes):
        prompt_blocks = lane.st.prompt[rid] / lane.bt
        active = lane.cache.used / lane.node_blocks + lane.queued_tokens / lane.bt
        key = (prompt_blocks - lane.matched_blocks(rid) + active, outstanding[i])
        if i == 0 or key < best_key:
            best, best_key = i, key
    return best


def lane_for(rid: int, schedulers: Sequence[Scheduler]) -> int:
    """The lane of a replica (its lane schedulers) that takes request `rid`: `prefix_lane`
    when there are several lanes and all have a prefix cache, else the least loaded one
    (fewest outstanding requests, lowest index)."""
    outstanding = [s.outstanding for s in schedulers]
    lanes = [s.prefix for s in schedulers if s.prefix is not None]
    if len(lanes) < 2 or len(lanes) < len(schedulers):
        return outstanding.index(min(outstanding))
    return prefix_lane(rid, lanes, outstanding)
