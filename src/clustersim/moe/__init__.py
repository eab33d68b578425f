"""Mixture of experts: expert routing, EP groups and their layout, EPLB.

Owns routing popularity and per-step sampling (experts.py), expert placement and rebalancing
(eplb.py), EP layout rules (ep_layout.py), one EP group's MoE state (moe_group.py),
DP-attention ranks stepping in lock-step (ep_group.py), and the wiring of MoE into a run with
its experts / eplb tables (moe_runtime.py). Builds on serving/ and network/.

Import from the modules: the package loads none of them, so that a run of a dense model
loads no more of it than the layout check (ep_layout.py).
"""
