"""Student proposer: one forward pass of a segmentation network per B-scan, batched — the fast default path.

``StudentProposer.from_checkpoint(path)`` loads a ``student`` checkpoint; ``run`` streams a :class:`BscanResult`
per B-scan with the argmax labels at native size. The trainer calls ``probabilities`` for validation, so training
and proposing preprocess identically.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.preprocess.intensity import UNIT, check_intensity, intensity_of
from oct_wsss.propose.batching import default_batch_size, run_in_batches
from oct_wsss.propose.layers import LayerModel
from oct_wsss.propose.proposal import BscanResult, Cancel
from oct_wsss.propose.retina import LayerModelUser, check_retina, unit_inputs_for
from oct_wsss.volume import OctVolume


def network_input(bscans: Sequence[np.ndarray], size: tuple[int, int], intensity: str = UNIT,
                  layers: LayerModel | None = None) -> torch.Tensor:
    """(n, 1, h, w) float32 in [0, 1] at the network's input size from same-sized B-scans of any dtype
    (``intensity="harmonised"``: through ``preprocess.intensity.harmonise`` first; "harmonised-layers" takes its
    retina from ``layers``, the bundled layer model by default)."""
    x = torch.from_numpy(unit_inputs_for(bscans, intensity, layers))[:, None]
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class StudentProposer(LayerModelUser):
    """A loaded student network; labels are the per-pixel argmax, optionally with a lesion threshold τ."""

    method = "student"

    def __init__(self, net: StudentNet, classes: Sequence[int], input_size: tuple[int, int], *,
                 threshold: float | None = None, device: str | torch.device = "auto", batch_size: int | None = None,
                 checkpoint: Checkpoint | None = None, intensity: str | None = None,
                 retina: str | None = None, layers_checkpoint: str | Path | None = None, flip: bool = False) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.classes = tuple(int(c) for c in classes)
        if net.config.n_outputs != len(self.classes) + 1:
            raise ValueError(f"the network has {net.config.n_outputs} outputs; background + {len(self.classes)} "
                             "declared classes needs one more than the classes")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
        self.net = net.to(self.device).eval()
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold = threshold
        self.batch_size = batch_size or default_batch_size(self.device)
        self.checkpoint = checkpoint
        #: input intensity option: the argument, else the checkpoint's ``normalisation`` meta ("unit" when absent)
        self.intensity = check_intensity(intensity if intensity is not None or checkpoint is None
                                         else intensity_of(checkpoint.meta.get("normalisation")))
        self._ids = np.array((0, *self.classes), np.uint8)
        #: "layers": lesions are kept only between ILM and BM of the layer model (``propose.layers.retina_mask``)
        self.retina = check_retina(retina)
        #: the layer model behind ``retina`` and "harmonised-layers" inputs (None: the bundled one)
        self.layers_checkpoint = layers_checkpoint
        #: test-time augmentation: softmax averaged with the left-right mirrored B-scan's (twice the compute)
        self.flip = bool(flip)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Checkpoint, **options: Any) -> StudentProposer:
        """Build from a ``student`` checkpoint; options override its threshold, device and batch size."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint,
                                                                                     expect_method="student")
        try:
            config = StudentConfig.from_dict(ckpt.meta["architecture"]["student"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(None, f"checkpoint {ckpt.id}: invalid student architecture ({err})") from err
        net = ckpt.build(lambda: StudentNet(config))
        params = ckpt.meta.get("params", {})
        settings = {"threshold": params.get("threshold"), "retina": params.get("retina"), "flip": params.get("flip")}
        settings.update({k: v for k, v in options.items() if v is not None})
        return cls(net, ckpt.meta["classes"], tuple(ckpt.meta["input_size"]), checkpoint=ckpt, **settings)

    def provenance(self) -> dict[str, Any]:
        """Checkpoint id and hash (and its parent, for fine-tuned students), parameters, device."""
        ckpt = self.checkpoint
        info = None if ckpt is None else {"id": ckpt.id, "sha256": ckpt.sha256,
                                          "parent": ckpt.meta.get("lineage", {}).get("parent")}
        return {"method": self.method, "checkpoint": info, "classes": list(self.classes),
                "input_size": list(self.input_size), "architecture": self.net.config.arch,
                "params": {"threshold": self.threshold, "batch_size": self.batch_size, "flip": self.flip,
                           "intensity": self.intensity, "retina": self.retina,
                           "layers_checkpoint": self.layer_model().checkpoint.id if self.uses_layers else None},
                "device": str(self.device)}

    def probabilities(self, bscans: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax (n, 1 + K, H, W) float32 at the B-scans' native size; channel 0 is background."""
        native = tuple(bscans[0].shape)
        x = network_input(bscans, self.input_size, self.intensity, self.harmonising_model()).to(self.device)
        n = len(x)
        if self.flip:  # the mirrored B-scans ride in the same batch
            x = torch.cat([x, x.flip(-1)])
        cuda = self.device.type == "cuda"
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        with torch.inference_mode(), amp:
            logits = F.interpolate(self.net(x).float(), size=native, mode="bilinear", align_corners=False)
            probs = torch.softmax(logits, 1)
            if self.flip:
                probs = (probs[:n] + probs[n:].flip(-1)) / 2
            return probs.cpu().numpy()

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Ontology ids (n, H, W): argmax over classes; with τ, lesions only where their probability reaches τ."""
        best = probs.argmax(1)
        if self.threshold is not None:
            lesion = probs[:, 1:].max(1)
            best = np.where(lesion >= self.threshold, probs[:, 1:].argmax(1) + 1, 0)
        return self._ids[best]

    def predict(self, bscan: np.ndarray) -> np.ndarray:
        """Ontology ids (H, W) of one B-scan (what ``run`` yields as labels, without the streaming)."""
        return self.inside_retina([bscan], self.labels(self.probabilities([bscan])))[0]

    def inside_retina(self, bscans: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
        """``labels`` with lesions outside the layer model's retina cleared when ``retina`` is "layers"."""
        if self.retina is None:
            return labels
        from oct_wsss.propose.layers import retina_mask

        inside = retina_mask(np.stack(bscans), model=self.layer_model())
        return np.where(inside, labels, 0).astype(labels.dtype)

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        """Stream results per B-scan in batches; image-level probability = the class's highest pixel probability."""
        def work(batch: Sequence[int]) -> list[BscanResult]:
            images = [volume.data[i] for i in batch]
            probs = self.probabilities(images)
            labels = self.inside_retina(images, self.labels(probs))
            present = probs[:, 1:].reshape(len(batch), len(self.classes), -1).max(-1)
            return [BscanResult(i, labels[j], present[j], probs[j, 1:] if keep_scores else None)
                    for j, i in enumerate(batch)]

        def halved(size: int) -> None:
            self.batch_size = size

        yield from run_in_batches(list(bscans), self.batch_size, work, cancel, on_retry=halved,
                                  to_cpu=None if self.device.type == "cpu" else self.to_cpu)

    def to_cpu(self) -> None:
        """Go on on the CPU: the last step of the GPU out-of-memory fallback (the provenance then says ``cpu``)."""
        self.device = torch.device("cpu")
        self.net = self.net.to(self.device, memory_format=torch.contiguous_format)
