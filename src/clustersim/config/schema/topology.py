"""The cluster: nodes, NVLink domains, the scale-out network and PCIe (`topology:`)."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from clustersim.config.schema.base import (
    BandwidthGBps,
    Micros,
    PosInt,
    Strict,
    keyed_error,
)


class NVLinkSpec(Strict):
    domain: str = "node"  # "node" or "rack(N)": N GPUs share one NVSwitch fabric
    bandwidth_GBps: BandwidthGBps = 450.0  # per direction per GPU
    latency_us: Micros = 2.0

    @model_validator(mode="after")
    def _check_domain(self) -> "NVLinkSpec":
        d = self.domain
        ok = d == "node" or (
            d.startswith("rack(") and d.endswith(")") and d[5:-1].isdigit() and int(d[5:-1]) > 0
        )
        if not ok:
            raise ValueError(f"domain must be 'node' or 'rack(N)', got {d!r}")
        return self

    @property
    def rack_size(self) -> int | None:
        return int(self.domain[5:-1]) if self.domain.startswith("rack(") else None


class NetworkSpec(Strict):
    kind: Literal["infiniband", "roce", "ethernet"] = "infiniband"
    nics_per_node: PosInt = 8
    bandwidth_GBps: BandwidthGBps = 50.0  # per NIC per direction
    latency_us: Micros = 5.0
    fabric: Literal["fat_tree"] = "fat_tree"
    oversubscription: Annotated[float, Field(ge=1.0)] = 1.0  # leaf down : up bandwidth
    nodes_per_leaf: PosInt = 4


class PCIeSpec(Strict):
    bandwidth_GBps: BandwidthGBps = 32.0  # per direction per GPU to the host switch
    latency_us: Micros = 5.0


class TopologySpec(Strict):
    name: str
    nodes: PosInt
    gpus_per_node: PosInt
    gpu: str  # hardware profile name
    nvlink: NVLinkSpec | None = None  # None = PCIe-only hosts
    network: NetworkSpec | None = None  # None allowed only for nodes == 1
    pcie: PCIeSpec = PCIeSpec()

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @model_validator(mode="after")
    def _check_network(self) -> "TopologySpec":
        if self.nodes > 1 and self.network is None:
            raise ValueError(f"{self.nodes} nodes need a network: block")
        rack = self.nvlink.rack_size if self.nvlink else None
        if rack is not None and rack % self.gpus_per_node != 0:
            raise ValueError(
                f"nvlink rack({rack}) must be a multiple of gpus_per_node ({self.gpus_per_node})"
            )
        nics = self.network.nics_per_node if self.network is not None else 0
        if nics > self.gpus_per_node and nics % self.gpus_per_node != 0:
            # more NICs than GPUs are merged, k per GPU rail: k must be a whole number
            raise keyed_error(
                "network.nics_per_node",
                f"expected at most gpus_per_node ({self.gpus_per_node}) or a multiple of it "
                f"(got {nics})",
            )
        return self
