"""Disaggregated prefill / decode serving (docs/disaggregation.md).

Owns building the two pools (pools.py), the request flow between them at run time
(runtime.py) and the KV-cache transfer flows from prefill to decode GPUs (kv_transfer.py).
Builds on deployment/, serving/ and network/.
"""

from clustersim.disagg.pools import PoolInfo, build_pools, pool_infos
from clustersim.disagg.runtime import DisaggRuntime

__all__ = ["DisaggRuntime", "PoolInfo", "build_pools", "pool_infos"]
