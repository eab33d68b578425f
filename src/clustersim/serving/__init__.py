"""Serving: one engine's request loop on the GPUs of a replica.

Owns the per-lane scheduler (scheduler.py, with admission.py, prefill_packing.py,
decode_set.py, preemption.py), per-request state (request_state.py), a step's batch
(batch.py), paged KV blocks (kv_cache.py), DP replicas and their pipeline stages
(replica.py), context-parallel replicas (cp_replica.py) and request routers (router.py).
Uses the network (network/); knows nothing of MoE, disaggregation or the engine.
"""

from clustersim.serving.batch import Batch
from clustersim.serving.cp_replica import CPReplica
from clustersim.serving.kv_cache import KVPool
from clustersim.serving.replica import Replica
from clustersim.serving.request_state import RequestState
from clustersim.serving.router import make_router
from clustersim.serving.scheduler import Scheduler

__all__ = [
    "Batch",
    "CPReplica",
    "KVPool",
    "Replica",
    "RequestState",
    "Scheduler",
    "make_router",
]
