"""The SAM 2 propagation engine: the B-scans of the range are the frames of a video, the grader's mask on B-scan k is
each class's prompt, and SAM 2's video predictor carries it frame by frame (METHODS.md section 4 builds SAM 2).

Nothing is downloaded: the packaged config is built with ``build_sam2_video_predictor(config, ckpt_path=None)`` and
the user's checkpoint is read with ``torch.load(weights_only=True)`` as in ``sam2_backend``. A class's confidence on a
B-scan is SAM 2's object score (sigmoid of its logit): below 0.5 SAM 2 itself says the object is gone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from oct_wsss.propose.propagate import Engine
from oct_wsss.propose.proposal import ProposalError
from oct_wsss.propose.sam2_backend import DEFAULT_CONFIG, _read_checkpoint, config_file, sam2_available, to_rgb8
from oct_wsss.propose.sam2_cache import file_sha256


def build_video_predictor(checkpoint: str | Path | None, config: str = DEFAULT_CONFIG, device: str = "cpu",
                          allow_random: bool = False) -> torch.nn.Module:
    """SAM 2's video predictor from a packaged config and the user's checkpoint (random weights: tests only)."""
    if not sam2_available():
        raise ProposalError("the sam2 package is not installed; install it with SAM2_BUILD_CUDA=0 pip install "
                            "--no-build-isolation sam2 (after torch), or use --engine flow")
    if checkpoint is None and not allow_random:
        raise ProposalError("the sam2 engine needs a SAM 2 checkpoint file (e.g. sam2.1_hiera_tiny.pt from the SAM 2 "
                            "release); give its path with --sam2-checkpoint, or use --engine flow")
    from sam2.build_sam import build_sam2_video_predictor

    model = build_sam2_video_predictor(config_file(config), ckpt_path=None, device=device, mode="eval")
    if checkpoint is not None:
        model.load_state_dict(_read_checkpoint(Path(checkpoint)), strict=True)
    return model


def sam2_provenance(checkpoint: str | Path, config: str = DEFAULT_CONFIG) -> dict[str, str]:
    """What a propagation records of its SAM 2 model: config, checkpoint file name (no path) and the file's SHA-256."""
    return {"config": config, "checkpoint": Path(checkpoint).name, "sha256": file_sha256(checkpoint)}


def sam2_engine(predictor: torch.nn.Module) -> Engine:
    """An :data:`~oct_wsss.propose.propagate.Engine` that runs ``predictor`` over the B-scans of each direction."""

    def run(data: np.ndarray, source: int, seeds: dict[int, np.ndarray], order: Sequence[int],
            alive: set[int]) -> Iterator[tuple[int, dict[int, np.ndarray], dict[int, float]]]:
        frames = [source, *order]  # frame 0 is the grader's B-scan, then outward
        with tempfile.TemporaryDirectory(prefix="oct-wsss-sam2-") as folder, torch.inference_mode():
            _write_frames(data, frames, Path(folder))
            state = predictor.init_state(folder, offload_video_to_cpu=True, offload_state_to_cpu=True)
            for c, mask in seeds.items():
                predictor.add_new_mask(state, frame_idx=0, obj_id=int(c), mask=np.asarray(mask, bool))
            for frame, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=0):
                if frame == 0:
                    continue
                masks, conf = {}, {}
                for k, c in enumerate(obj_ids):
                    if c in alive:
                        masks[c] = (logits[k, 0] > 0).cpu().numpy()
                        conf[c] = _object_score(state, k, frame)
                yield frames[frame], masks, conf
                if not alive:
                    return
            predictor.reset_state(state)

    return run


def _write_frames(data: np.ndarray, frames: Sequence[int], folder: Path) -> None:
    """B-scans as ``<frame>.jpg`` (the one frame source SAM 2's video loader takes), quality 95."""
    from PIL import Image

    for k, i in enumerate(frames):
        Image.fromarray(to_rgb8(np.asarray(data[i]))).save(folder / f"{k}.jpg", quality=95)


def _object_score(state: dict, obj_idx: int, frame: int) -> float:
    """SAM 2's probability that object ``obj_idx`` is present on ``frame`` (sigmoid of its object-score logit)."""
    out = state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].get(frame)
    if out is None or out.get("object_score_logits") is None:
        return 1.0
    return float(torch.sigmoid(out["object_score_logits"].float()).max())
