"""The retinal layer network: a small U-Net (the student's) giving per-pixel logits over the 10 Duke/ReLayNet bands.

Bands: 0 above ILM, 1 NFL, 2 GCL+IPL, 3 INL, 4 OPL, 5 ONL+ISM, 6 ISE, 7 OS+RPE, 8 below BM, 9 fluid. The network
sees a B-scan resized by ``scale`` (0.5: half the native rows and columns; ``row_scale`` apart for the rows);
topological order is imposed afterwards (``oct_wsss.propose.layers``), not by the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import Tensor, nn

from oct_wsss.models.config import strict_from_dict
from oct_wsss.models.student import UNet

BANDS = ("above_ILM", "NFL", "GCL_IPL", "INL", "OPL", "ONL_ISM", "ISE", "OS_RPE", "below_BM", "fluid")
N_BANDS = len(BANDS)
FLUID_BAND = 9


@dataclass(frozen=True)
class LayerNetConfig:
    """U-Net size and the resize factor applied to the B-scan before the network."""

    width: int = 16
    depth: int = 4
    scale: float = 0.5
    n_outputs: int = N_BANDS
    #: the rows' own resize factor (None: ``scale``); 1.0 keeps the thin bands' native depth resolution
    row_scale: float | None = None

    def __post_init__(self) -> None:
        if self.n_outputs != N_BANDS:
            raise ValueError(f"a layer network predicts {N_BANDS} bands; got n_outputs {self.n_outputs}")
        rows = self.scale if self.row_scale is None else self.row_scale
        if self.width < 1 or not 1 <= self.depth <= 6 or not 0.1 <= min(self.scale, rows) <= max(self.scale, rows) <= 1:
            raise ValueError(f"invalid layer network: width {self.width}, depth {self.depth}, scale {self.scale}, "
                             f"row_scale {self.row_scale}")

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The (rows, columns) a B-scan of ``height`` x ``width`` is resized to before the network (>= 16 each)."""
        rows = self.scale if self.row_scale is None else self.row_scale
        return max(16, round(height * rows)), max(16, round(width * self.scale))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerNetConfig:
        return strict_from_dict(cls, data, "layer network config")


class LayerNet(nn.Module):
    """(B, 1, h, w) intensities in [0, ~1] -> (B, 10, h, w) band logits."""

    def __init__(self, config: LayerNetConfig) -> None:
        super().__init__()
        self.config = config
        self.net = UNet(1, config.n_outputs, config.width, config.depth)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
