"""AGM proposer: GANomaly x̂ → anomaly map → AGM classifier → smoothed GradCAM → pseudo labels (METHODS.md §1).

``AgmProposer.from_checkpoint(path)`` loads one ``agm`` checkpoint (AGM weights with the GANomaly generator bundled
under ``generator.``); ``run`` streams one :class:`BscanResult` per B-scan. Trainers reuse ``network_inputs`` and
``scores`` so that training, threshold sweeps and proposals preprocess identically.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oct_wsss.checkpoint import Checkpoint, CheckpointError
from oct_wsss.explain.augment import IDENTITY, SMOOTHING
from oct_wsss.explain.gradcam import GradCam
from oct_wsss.models.agm import AgmConfig, AgmNet, anomaly_input
from oct_wsss.models.ganomaly import GanomalyConfig, Generator, HealthyModel, Reconstructor, healthy_counterpart
from oct_wsss.preprocess.device import resolve_device
from oct_wsss.preprocess.inputs import resize_nearest, retina_masks, soft_mask
from oct_wsss.preprocess.intensity import check_intensity, intensity_of, unit_inputs
from oct_wsss.propose.batching import default_batch_size
from oct_wsss.propose.layers import retina_mask
from oct_wsss.propose.proposal import BscanResult, Cancel
from oct_wsss.propose.pseudo import class_scores, run_scored
from oct_wsss.propose.retina import LayerModelUser, check_retina, unit_inputs_for
from oct_wsss.volume import OctVolume

DEFAULT_CAM_LAYERS: tuple[str, ...] = ("backbone", "asam")  # layer4 + ASAM output (paper)
DEFAULT_THRESHOLD = 0.5
#: CPU GradCAM forwards hold at most this many input pixels (2 paper-size images: ~0.4 GB less peak than 12;
#: a CPU gains nothing from bigger batches); GPUs batch up to 12 augmented images
CPU_CAM_PIXELS = 2 * 512 * 512
#: GANomaly's second encoder (ẑ) is a training term only; a proposal never reads its weights (about a third of them)
UNUSED_GENERATOR = "encoder2."


def network_inputs(generator: HealthyModel | None, x: Tensor, retina: Tensor, channels: int) -> list[Tensor]:
    """[x, x̂, anomaly] for AgmNet from grey images x (B, 1, h, w) in [0, 1] and retina masks (B, 1, h, w).

    x̂ comes from the frozen generator (no gradient); images are replicated to ``channels``.
    """
    if generator is None:
        x_hat = torch.zeros_like(x)
    else:
        with torch.no_grad():
            x_hat = healthy_counterpart(generator, x)
    anomaly = anomaly_input(x, x_hat, retina)
    return [t.expand(-1, channels, -1, -1) for t in (x, x_hat, anomaly)]


def agm_gradcam(net: AgmNet, layers: Sequence[str] = DEFAULT_CAM_LAYERS, max_batch: int = 12,
                autocast: bool = True) -> GradCam:
    """GradCAM over the named ``AgmNet.cam_layers()`` (those the config has); intensity factors hit x and x̂ only."""
    available = net.cam_layers()
    chosen = {name: available[name] for name in layers if name in available}
    if not chosen:
        raise ValueError(f"none of the CAM layers {list(layers)} exist in this network ({list(available)})")
    return GradCam(net, chosen, forward_fn=lambda xs: net(*xs), intensity_inputs=(0, 1), max_batch=max_batch,
                   autocast=autocast)


class AgmProposer(LayerModelUser):
    """A loaded AGM model that turns B-scans into class scores and ontology-id pseudo labels."""

    method = "agm"

    def __init__(self, net: AgmNet, generator: HealthyModel | None, classes: Sequence[int], input_size: tuple[int, int],
                 *, threshold: float = DEFAULT_THRESHOLD, cam_layers: Sequence[str] = DEFAULT_CAM_LAYERS,
                 smooth: bool = True, present_threshold: float = 0.5, device: str | torch.device = "auto",
                 batch_size: int | None = None, checkpoint: Checkpoint | None = None,
                 intensity: str | None = None, retina: str | None = None,
                 layers_checkpoint: str | Path | None = None) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.net = net.to(self.device).eval()
        self.generator = None if generator is None else generator.to(self.device).eval()
        self.classes = tuple(int(c) for c in classes)
        if net.config.n_classes != len(self.classes):
            raise ValueError(f"the network predicts {net.config.n_classes} classes, {len(self.classes)} declared")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.threshold, self.smooth, self.present_threshold = float(threshold), smooth, float(present_threshold)
        self.cam_layers = tuple(cam_layers)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.gradcam = self._gradcam()
        self.checkpoint = checkpoint
        #: input intensity option: the argument, else the checkpoint's ``normalisation`` meta ("unit" when absent)
        self.intensity = check_intensity(intensity if intensity is not None or checkpoint is None
                                         else intensity_of(checkpoint.meta.get("normalisation")))
        #: where the retina is, for the anomaly input and the CAM damping: None = the intensity heuristic at the input
        #: size (``retina_masks``), "layers" = ILM to BM of the layer model at native size (``layers_checkpoint``, else
        #: the bundled one); a checkpoint records the choice it was trained with
        self.retina = check_retina(retina)
        self.layers_checkpoint = layers_checkpoint
        #: logit columns of the lesion classes (after the background logit, when the network has one)
        self.lesion_outputs = list(range(int(net.config.background_logit), net.config.n_outputs))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Checkpoint, **options: Any) -> AgmProposer:
        """Build from an ``agm`` checkpoint; options override its stored threshold, CAM layers, device, batch."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(
            checkpoint, expect_method="agm", skip=(f"generator.{UNUSED_GENERATOR}",))
        arch = ckpt.meta["architecture"]
        try:
            net_config = AgmConfig.from_dict(arch["agm"])
            gen_config = GanomalyConfig.from_dict(arch["ganomaly"]) if arch.get("ganomaly") else None
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(None, f"checkpoint {ckpt.id}: invalid AGM architecture ({err})") from err
        split = _split_state(ckpt.state_dict, ("agm.", "generator."))
        net = Checkpoint(split["agm."], ckpt.meta).build(lambda: AgmNet(net_config))
        used = {k: v for k, v in split["generator."].items() if not k.startswith(UNUSED_GENERATOR)}
        generator = None if gen_config is None else \
            Checkpoint(used, ckpt.meta).build(lambda: Reconstructor(gen_config))
        params = ckpt.meta.get("params", {})
        settings = {"threshold": params.get("threshold", DEFAULT_THRESHOLD),
                    "cam_layers": params.get("cam_layers", DEFAULT_CAM_LAYERS),
                    "present_threshold": params.get("present_threshold", 0.5), "retina": params.get("retina")}
        settings.update({k: v for k, v in options.items() if v is not None})
        proposer = cls(net, generator, ckpt.meta["classes"], tuple(ckpt.meta["input_size"]), checkpoint=ckpt,
                       **settings)
        proposer.check_layer_model(params.get("layers_sha256"))
        return proposer

    def check_layer_model(self, trained_with: str | None) -> None:
        """Warn when the layer model differs from the one the checkpoint was trained with (its masks shift a little)."""
        if self.retina == "layers" and trained_with and self.layer_model().checkpoint.sha256 != trained_with:
            warnings.warn(f"this AGM checkpoint was trained with the retina of layer model {trained_with[:12]}; "
                          f"{self.layer_model().checkpoint.id} gives it now, so its masks differ a little",
                          stacklevel=2)

    def provenance(self) -> dict[str, Any]:
        """What produced the result: checkpoint id and hash, every parameter that changes it, the device."""
        ckpt = self.checkpoint
        return {"method": self.method, "checkpoint": None if ckpt is None else {"id": ckpt.id, "sha256": ckpt.sha256},
                "classes": list(self.classes), "input_size": list(self.input_size),
                "params": {"threshold": self.threshold, "smooth": self.smooth, "cam_layers": list(self.cam_layers),
                           "present_threshold": self.present_threshold, "batch_size": self.batch_size,
                           "intensity": self.intensity, "retina": self.retina,
                           "layers_checkpoint": self.layer_model().checkpoint.id if self.uses_layers else None},
                "device": str(self.device)}

    def scores(self, bscans: Sequence[np.ndarray], present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class scores (n, K, H, W) at native size and probabilities (n, K) for same-sized B-scans.

        Classes are zeroed where ``present`` (n, K) is False; by default where the classifier's probability is
        below ``present_threshold`` (at training time the trainer passes the image-level labels instead).
        """
        native = tuple(bscans[0].shape)
        layer_masks = retina_mask(np.stack(bscans), model=self.layer_model()) if self.retina == "layers" else None
        unit = unit_inputs_for(bscans, self.intensity, self.harmonising_model()) if layer_masks is None else \
            unit_inputs(bscans, self.intensity, list(layer_masks))  # "harmonised-layers" reuses the layer masks
        x = torch.from_numpy(unit)[:, None].to(self.device)
        x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        if layer_masks is not None:
            at_native = torch.from_numpy(layer_masks).to(self.device)
            retina = resize_nearest(at_native, self.input_size)
        else:
            retina = torch.from_numpy(retina_masks(x)).to(self.device)
            at_native = resize_nearest(retina, native)
        inputs = network_inputs(self.generator, x, retina[:, None].float(), self.net.config.image_channels)
        cams, logits = self.gradcam(inputs, self.lesion_outputs, augmentations=SMOOTHING if self.smooth else IDENTITY,
                                    output_size=native, return_logits=True)
        probs = torch.sigmoid(logits[:, self.lesion_outputs]).cpu().numpy()
        soft = soft_mask(at_native)
        keep = probs >= self.present_threshold if present is None else np.asarray(present, bool)
        return class_scores(cams, soft, keep).cpu().numpy(), probs

    def run(self, volume: OctVolume, bscans: Sequence[int], *, cancel: Cancel | None = None,
            keep_scores: bool = False) -> Iterator[BscanResult]:
        """Stream results per B-scan, batched; on GPU out of memory the batch halves, then the CPU takes over."""
        yield from run_scored(self, volume, bscans, cancel, keep_scores)

    def to_cpu(self) -> None:
        """Go on on the CPU: the last step of the GPU out-of-memory fallback (the provenance then says ``cpu``)."""
        self.device = torch.device("cpu")
        self.net = self.net.to(self.device)
        self._layer_model = None
        self.generator = None if self.generator is None else self.generator.to(self.device)
        self.gradcam = self._gradcam()

    def _gradcam(self) -> GradCam:
        """GradCAM for this device: bf16 autocast and chunks of 12 images on CUDA; on the CPU, chunks small enough
        that a paper-size forward stays within memory (``CPU_CAM_PIXELS``)."""
        cuda = self.device.type == "cuda"
        return agm_gradcam(self.net, self.cam_layers, autocast=cuda, max_batch=12 if cuda else
                           max(1, min(12, CPU_CAM_PIXELS // (self.input_size[0] * self.input_size[1]))))


def _split_state(state: dict[str, Tensor], prefixes: Sequence[str]) -> dict[str, dict[str, Tensor]]:
    """Partition a bundled state dict by key prefix (prefix stripped); unknown prefixes are an error."""
    parts: dict[str, dict[str, Tensor]] = {p: {} for p in prefixes}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(None, f"unexpected tensor {key!r} in an AGM checkpoint")
        parts[prefix][key[len(prefix):]] = value
    return parts


def bundle_state(net: AgmNet, generator: Generator | None) -> dict[str, Tensor]:
    """The state dict an ``agm`` checkpoint stores: ``agm.*`` and, when given, ``generator.*``."""
    state = {f"agm.{k}": v for k, v in net.state_dict().items()}
    if generator is not None:
        state.update({f"generator.{k}": v for k, v in generator.state_dict().items()})
    return state
