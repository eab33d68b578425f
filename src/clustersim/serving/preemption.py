"""Preemption by recompute: when a lane's step cannot get the KV blocks it needs, the most
recently admitted running request gives back its blocks and rejoins the head of the queue
with its prompt + output so far as the prompt to recompute."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clustersim.serving.decode_set import DecodeSet
from clustersim.serving.kv_cache import KVPool, blocks_for
from clustersim.serving.prefill_packing import PrefillQueue
from clustersim.serving.request_state import RequestState

if TYPE_CHECKING:  # (prefix caching's and speculative decoding's modules: runs using them)
    from clustersim.serving.prefix_cache import PrefixCache
    from clustersim.serving.prefix_lane import LanePrefix
    from clustersim.serving.speculative_decode import SpeculativeDecodeSet


def preempt_latest(
    prefills: PrefillQueue,
    decodes: DecodeSet | SpeculativeDecodeSet,
    kv: KVPool | PrefixCache,
    state: RequestState,
    prefix: LanePrefix | None = None,
) -> bool:
    """Preempt (recompute) the most recently admitted running request; False if none.

    Partial prefills go first (they are the newest and hold the fewest blocks). With prefix
    caching the request gives back its private blocks and unpins its cached prefix."""
    st = state
    bs = decodes.block_size
    if prefills.prefilling:  # the newest admissions sit at the tail of the running list
        rid = prefills.prefilling.pop()
        held = blocks_for(st.computed[rid], bs)
    elif decodes.members:
        rid = decodes.newest()
        done = decodes.emitted(rid)  # tokens it emitted in decode
        held = decodes.held_blocks(rid)
        decodes.leave(rid)
        st.generated[rid] += done
    else:
        return False
    if prefix is not None:  # its shared prefix stays with the cache
        held -= prefix.shared.get(rid, 0)
        prefix.release(rid)
    kv.release(held)
    st.version[rid] += 1
    st.preemptions[rid] += 1
    st.computed[rid] = 0
    st.effective_prompt[rid] = st.prompt[rid] + st.generated[rid]
    prefills.waiting.appendleft(rid)
    if prefix is not None:
        prefix.queued_tokens += st.effective_prompt[rid]
    return True
