"""SAM 2 on in-memory crops (package ``sam2``; METHODS.md section 4): build a packaged config, load a user checkpoint,
prompt with boxes, and cache image embeddings so repeated prompts on the same crop pay ``set_image`` once (in memory,
and with ``cache_dir`` on disk per volume, model and B-scan: ``sam2_cache``).

Nothing is downloaded: ``build_sam2(config, ckpt_path=None)`` builds the model and the checkpoint (a pickle with a
``"model"`` state dict) is read with ``torch.load(weights_only=True)``. Without a checkpoint the weights are random,
which only tests use (``allow_random=True``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oct_wsss.checkpoint import CheckpointError, import_torch_weights
from oct_wsss.preprocess.inputs import to_unit
from oct_wsss.propose.proposal import ProposalError
from oct_wsss.propose.sam2_cache import DEFAULT_MAX_BYTES, EmbeddingCache, file_sha256, model_hash

DEFAULT_CONFIG = "sam2.1_hiera_t"
CONFIGS: tuple[str, ...] = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l",
                            "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l")


def sam2_available() -> bool:
    """True when the ``sam2`` package imports (it is optional: ``pip install napari-oct-wsss[sam2]``)."""
    try:
        import sam2.build_sam  # noqa: F401
    except ImportError:
        return False
    return True


def config_file(name: str) -> str:
    """Packaged hydra config path of ``name``: ``sam2.1_hiera_t`` -> ``configs/sam2.1/sam2.1_hiera_t.yaml``."""
    stem = name.removesuffix(".yaml").split("/")[-1]
    if stem not in CONFIGS:
        raise ProposalError(f"unknown SAM 2 config {name!r}; choose one of {', '.join(CONFIGS)}")
    folder = "sam2.1" if stem.startswith("sam2.1") else "sam2"
    return f"configs/{folder}/{stem}.yaml"


def to_rgb8(crop: np.ndarray) -> np.ndarray:
    """Grey (H, W) float in [0, 1] or uint8 (or already H x W x 3 uint8) -> contiguous uint8 RGB, as SAM 2 wants."""
    a = np.asarray(crop)
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.ndim != 2:
        raise ValueError(f"SAM 2 crops are grey (H, W) or RGB uint8 (H, W, 3); got shape {a.shape}")
    grey = a if a.dtype == np.uint8 else np.round(to_unit(a) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


@dataclass
class SamMask:
    """The best of SAM 2's multimask outputs for one prompt: mask at the crop's size, predicted IoU score."""

    mask: np.ndarray
    score: float


class Sam2Backend:
    """A SAM 2 image predictor with an LRU cache of image embeddings keyed by content (or a caller's key), and an
    optional disk cache (``cache_dir``, at most ``cache_bytes``) of whole B-scans' embeddings (needs a checkpoint)."""

    def __init__(self, config: str = DEFAULT_CONFIG, checkpoint: str | Path | None = None,
                 device: str | torch.device = "cpu", cache_size: int = 8, allow_random: bool = False,
                 cache_dir: str | Path | None = None, cache_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not sam2_available():
            raise ProposalError("the sam2 package is not installed; install it with "
                                "SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2 (after torch), "
                                "or run the HRF proposer without --sam2-checkpoint (classical refinement)")
        if checkpoint is None and not allow_random:
            raise ProposalError("SAM 2 needs a checkpoint file (e.g. sam2.1_hiera_tiny.pt from the SAM 2 release); "
                                "give its path with --sam2-checkpoint")
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.config, self.device = config.removesuffix(".yaml").split("/")[-1], torch.device(device)
        model = build_sam2(config_file(config), ckpt_path=None, device=str(self.device), mode="eval")
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        if checkpoint is not None:
            model.load_state_dict(_read_checkpoint(Path(checkpoint)), strict=True)
        model.sam_mask_decoder.output_upscaling = _fast_upscaling(model.sam_mask_decoder.output_upscaling)
        self.predictor = SAM2ImagePredictor(model)
        self.cache: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self.cache_size, self.embeddings_computed, self.embeddings_loaded = int(cache_size), 0, 0
        self.disk = None if cache_dir is None or checkpoint is None else EmbeddingCache(cache_dir, cache_bytes)
        self.model_hash = None if self.disk is None else model_hash(self.config, checkpoint)

    def set_image(self, crop: np.ndarray, key: Hashable | None = None, where: tuple[str, int] | None = None) -> None:
        """Make ``crop`` the predictor's image, from the cache when its key (default: content hash) was seen, else
        from the disk cache when ``where`` (volume hash, B-scan index) names a stored embedding. An embedding computed
        now and stored is used as stored (float16-rounded), so a reopened volume gives the very same masks."""
        rgb = to_rgb8(crop)
        key = key if key is not None else hashlib.sha1(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        p = self.predictor
        if key in self.cache:
            self.cache.move_to_end(key)
            p._features, p._orig_hw = self.cache[key]
            p._is_image_set = True
            return
        disk = self.disk if where is not None else None
        stored = None if disk is None else disk.get(where[0], self.model_hash, where[1])
        if stored is None:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                        enabled=self.device.type == "cuda"):
                p.set_image(rgb)
            self.embeddings_computed += 1
            if disk is not None:
                feats = p._features
                disk.put(where[0], self.model_hash, where[1],
                         {"image_embed": feats["image_embed"], "orig_hw": torch.tensor(p._orig_hw[0]),
                          **{f"high_res_{k}": f for k, f in enumerate(feats["high_res_feats"])}})
                stored = disk.get(where[0], self.model_hash, where[1])
        else:
            self.embeddings_loaded += 1
        if stored is not None:
            p.reset_predictor()
            p._features = {"image_embed": stored["image_embed"].to(self.device),
                           "high_res_feats": [stored[f"high_res_{k}"].to(self.device) for k in range(2)]}
            p._orig_hw, p._is_image_set = [tuple(stored["orig_hw"].tolist())], True
        self.cache[key] = (p._features, p._orig_hw)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def box(self, crop: np.ndarray, box: tuple[float, float, float, float], key: Hashable | None = None,
            where: tuple[str, int] | None = None) -> SamMask:
        """Highest-scoring mask (crop size, bool) for a box ``(x0, y0, x1, y1)`` in crop pixel coordinates (``key``,
        ``where``: as in :meth:`set_image`)."""
        self.set_image(crop, key, where)
        return self.predict(box=box)

    def predict(self, *, points: np.ndarray | None = None, point_labels: np.ndarray | None = None,
                box: tuple[float, float, float, float] | None = None, multimask: bool = True) -> SamMask:
        """SAM 2's highest-scoring mask on the current image for points (x, y; labels 1/0) and/or a box (x0, y0, x1,
        y1); ``multimask`` lets an ambiguous prompt (one point or a box alone) pick the best of three."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.device.type == "cuda"):
            masks, scores, _ = self.predictor.predict(
                point_coords=points, point_labels=point_labels,
                box=None if box is None else np.asarray(box, np.float32), multimask_output=multimask)
        best = int(np.argmax(scores))
        return SamMask(mask=np.asarray(masks[best]) > 0, score=float(scores[best]))

    def provenance(self) -> dict[str, Any]:
        """Config and checkpoint (path and SHA-256) of the model, for the proposal's provenance."""
        sha = None if self.checkpoint is None else file_sha256(self.checkpoint)
        return {"config": self.config, "checkpoint": self.checkpoint, "sha256": sha, "device": str(self.device)}


class StrideDeconv(torch.nn.Module):
    """A ``ConvTranspose2d`` whose kernel equals its stride (no overlap) as one matmul and a pixel shuffle: the same
    sums (to float32 rounding; the order differs by CPU kernel), the same NCHW layout, 2-4x faster on a CPU than the
    deconvolution kernel at SAM 2's decoder sizes."""

    def __init__(self, conv: torch.nn.ConvTranspose2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias  # the same parameters under the same state-dict keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, bias = self.weight, self.bias
        c, o, kh, kw = w.shape
        n, _, h, wd = x.shape
        y = x.permute(0, 2, 3, 1).reshape(n * h * wd, c) @ w.reshape(c, o * kh * kw)
        y = y.view(n, h, wd, o, kh, kw).permute(0, 3, 1, 4, 2, 5).reshape(n, o, h * kh, wd * kw)
        return y if bias is None else y + bias.view(1, o, 1, 1)


def _fast_upscaling(layers: torch.nn.Sequential) -> torch.nn.Sequential:
    """SAM 2's mask-decoder upscaling with each non-overlapping transposed convolution as a :class:`StrideDeconv`."""
    for i, m in enumerate(layers):
        if (isinstance(m, torch.nn.ConvTranspose2d) and m.kernel_size == m.stride and m.groups == 1
                and m.padding == (0, 0) and m.output_padding == (0, 0) and m.dilation == (1, 1)):
            layers[i] = StrideDeconv(m)
    return layers


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a SAM 2 release checkpoint (a pickle): ``torch.load(weights_only=True)``, which
    rebuilds tensors only, with a warning that says so (``import_torch_weights``)."""
    if not path.is_file():
        raise CheckpointError(path, "SAM 2 checkpoint file not found; give the path of a downloaded sam2.1_*.pt")
    try:
        return import_torch_weights(path)
    except CheckpointError as err:
        raise CheckpointError(path, f"not a SAM 2 checkpoint torch can read safely: {err.reason}") from err
    except Exception as err:  # torch raises several types for non-checkpoints
        raise CheckpointError(path, f"not a SAM 2 checkpoint torch can read safely ({type(err).__name__})") from err
