"""What the exported graph computes beyond the trained weights: how many proposals the second stage
pools, and how the RoI pooling's levels are merged in ONNX. Chosen for serving speed on validation
images only (docs/decisions.md, "The serving graph"); training never sees these settings.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torchvision.ops import poolers


@dataclasses.dataclass(frozen=True)
class ServingGraph:
    """proposals: RoIs the box head pools per image (None: the trained model's own test setting); the
    RPN keeps 2 x proposals per level before its NMS, torchvision's ratio. gather_merge: merge the
    per-level RoIAlign results with one Gather instead of torchvision's ScatterElements."""

    proposals: int | None = 75
    gather_merge: bool = True

    def describe(self) -> str:
        proposals = "the model's own proposal count" if self.proposals is None else f"{self.proposals} proposals"
        merge = "RoI levels merged by Gather" if self.gather_merge else "torchvision's ScatterElements merge"
        return f"{proposals}, {merge}"


#: What `make run` exports and ships.
SERVING_GRAPH = ServingGraph()
#: torchvision's graph as it comes (150 proposals for the Lite0 detector): the benchmark's baseline.
TORCHVISION_GRAPH = ServingGraph(proposals=None, gather_merge=False)


def apply_proposals(detector: torch.nn.Module, graph: ServingGraph) -> None:
    """Set the test-time proposal counts in place (a Faster R-CNN; RetinaNet has no second stage), so
    that eager parity runs see the graph that is exported."""
    if graph.proposals is None or not hasattr(detector, "rpn"):
        return
    detector.rpn._pre_nms_top_n["testing"] = 2 * graph.proposals
    detector.rpn._post_nms_top_n["testing"] = graph.proposals


def gather_merge_levels(levels: torch.Tensor, unmerged_results: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's _onnx_merge_levels with the same result: each RoI's pooled features, from the level
    it was assigned to, in RoI order. torchvision scatters every level into a zero tensor through an
    index expanded to N x C x 7 x 7 (ScatterElements, slow on CPU: docs/decisions.md); here the levels
    are concatenated and one Gather of N rows puts them back in order."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged_results))])
    position = torch.zeros_like(order).scatter(0, order, torch.arange(order.numel(), dtype=order.dtype))
    return torch.cat(unmerged_results)[position]


@contextlib.contextmanager
def tracing_merge(graph: ServingGraph):
    """torchvision's tracing-time merge replaced by gather_merge_levels while the graph is traced."""
    if not graph.gather_merge:
        yield
        return
    original = poolers._onnx_merge_levels  # private, used only while tracing; torchvision is pinned
    poolers._onnx_merge_levels = gather_merge_levels
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original
