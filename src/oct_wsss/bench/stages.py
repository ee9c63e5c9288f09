"""Student, layers and AGM stages of ``oct-wsss bench``: the student on one B-scan and a volume; the layer model on the
volume; AGM's GANomaly, classification, GradCAM with and without smoothing, refinement, post-processing, full
proposal, and the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oct_wsss.bench.baseline import BaselineCam, grad_cam_available
from oct_wsss.bench.timing import Stage, timed
from oct_wsss.volume import OctVolume


def student_stages(volume: OctVolume, device: torch.device, repeats: int, checkpoint: str | Path | None = None,
                   input_size: tuple[int, int] = (256, 256)) -> list[Stage]:
    """Student proposal of one B-scan and of the whole volume (default batch); without a checkpoint a U-Net
    (width 16, depth 4) at 256 x 256, the size a student recipe for 496 x 512 B-scans uses."""
    from oct_wsss.models.student import StudentConfig, StudentNet
    from oct_wsss.propose.student import StudentProposer

    if checkpoint is not None:
        proposer = StudentProposer.from_checkpoint(checkpoint, device=device)
    else:
        torch.manual_seed(0)
        net = StudentNet(StudentConfig(n_outputs=4, arch="unet", width=16, depth=4))
        proposer = StudentProposer(net, (1, 2, 3), input_size, device=device)
    everything = list(range(volume.n_bscans))
    one = Stage("student", "propose 1 B-scan", 1,
                timed(lambda: list(proposer.run(volume, [0])), repeats, device=device))
    flip = ", flip averaging" if proposer.flip else ""
    vol = Stage("student", f"propose volume ({volume.n_bscans} B-scans, batch {proposer.batch_size}{flip})",
                volume.n_bscans, timed(lambda: list(proposer.run(volume, everything)), max(1, repeats // 2),
                                       device=device))
    return [one, vol]


def layers_stages(volume: OctVolume, device: torch.device, repeats: int,
                  checkpoint: str | Path | None = None) -> list[Stage]:
    """The layer model (bundled checkpoint by default) on the whole volume: the network's band probabilities alone,
    then what ``oct-wsss layers`` computes (network and the ordering step)."""
    from oct_wsss.propose.layers import LayerModel

    model = LayerModel(checkpoint, device=str(device))
    n = volume.n_bscans
    return [Stage("layers", f"band probabilities ({n} B-scans)", n,
                  timed(lambda: sum(1 for _ in model.probs(volume.data)), max(1, repeats // 2), device=device)),
            Stage("layers", f"bands and boundaries ({n} B-scans, network + ordering)", n,
                  timed(lambda: model.segment(volume.data, require_retina=False), max(1, repeats // 2),
                        device=device))]


#: AGM built with random weights when no checkpoint is given: the paper's size, or (quick) the demo checkpoint's
AGM_SIZES = {"paper": ({"backbone": "resnet50"}, 512), "small": ({"backbone": "resnet18", "width": 16,
                                                                 "encoder_width": 8, "output_stride": 16}, 128)}


def agm_stages(volume: OctVolume, device: torch.device, repeats: int, checkpoint: str | Path | None = None,
               size: str = "paper", baseline: bool = True) -> list[Stage]:
    """GANomaly x̂, AGM classification, GradCAM with/without smoothing, refinement, post-processing, full proposal;
    with ``baseline`` (and the grad-cam package installed) the same CAMs the straightforward way, for the speed-up."""
    from oct_wsss.explain.augment import IDENTITY, SMOOTHING
    from oct_wsss.explain.refine import enhance
    from oct_wsss.models.agm import AgmConfig, AgmNet
    from oct_wsss.models.ganomaly import GanomalyConfig, Generator
    from oct_wsss.preprocess.inputs import retina_mask, soft_mask, to_unit
    from oct_wsss.propose.agm import AgmProposer, network_inputs
    from oct_wsss.propose.pseudo import class_scores, pseudo_labels

    if checkpoint is not None:
        p = AgmProposer.from_checkpoint(checkpoint, device=device)
    else:
        torch.manual_seed(0)
        arch, side = AGM_SIZES[size]
        net = AgmNet(AgmConfig(n_classes=3, image_channels=1, **arch))
        gen = Generator(GanomalyConfig(image_size=side, nc=1, **({"nz": 64, "ngf": 16} if size == "small" else {})))
        p = AgmProposer(net, gen, (1, 2, 3), (side, side), device=device)
    b = min(p.batch_size, volume.n_bscans)
    batch = [volume.data[i] for i in range(b)]
    x = torch.nn.functional.interpolate(torch.from_numpy(np.stack([to_unit(i) for i in batch]))[:, None],
                                        size=p.input_size, mode="bilinear", antialias=True).to(device)
    retina = torch.from_numpy(np.stack([retina_mask(xi[0]) for xi in x.cpu().numpy()]))[:, None].float().to(device)
    inputs = network_inputs(p.generator, x, retina, p.net.config.image_channels)
    outputs = p.lesion_outputs
    native = volume.shape[1:]

    def classify() -> None:
        with torch.inference_mode():
            p.net(*inputs)

    cams, logits = p.gradcam(inputs, outputs, augmentations=IDENTITY, output_size=native, return_logits=True)
    weights = torch.sigmoid(logits[:, outputs])
    small = torch.nn.functional.interpolate(cams, size=p.input_size, mode="bilinear")
    soft = soft_mask(np.stack([retina_mask(i) for i in batch]))
    cams_np = cams.cpu().numpy()
    stages = [
        ("GANomaly x̂", lambda: network_inputs(p.generator, x, retina, p.net.config.image_channels)),
        ("AGM classification", classify),
        ("GradCAM, no smoothing", lambda: p.gradcam(inputs, outputs, augmentations=IDENTITY, output_size=native)),
        (f"GradCAM, smoothing ({len(SMOOTHING)} augmentations, one pass)",
         lambda: p.gradcam(inputs, outputs, augmentations=SMOOTHING, output_size=native)),
        ("refinement (SM ⊙ x)", lambda: enhance(x, small, weights)),
        ("pseudo-label post-processing", lambda: pseudo_labels(class_scores(cams_np, soft), p.classes, 0.5)),
        ("full proposal", lambda: p.scores(batch)),
    ]
    keys = {"GradCAM, no smoothing": "gradcam"}
    out = [Stage("agm", name, b, timed(fn, repeats, device=device),
                 keys.get(name, "gradcam_smoothing" if name.startswith("GradCAM, smoothing") else None))
           for name, fn in stages]
    if baseline and grad_cam_available():
        base = BaselineCam(p)
        for smooth in (False, True):
            out.append(Stage("agm-baseline", f"GradCAM {'aug_smooth' if smooth else 'no smoothing'} "
                             "(grad-cam package, per image and class, fp32)", b,
                             timed(lambda s=smooth: base(inputs, outputs, native, smooth=s), max(1, repeats // 2),
                                   device=device), "gradcam_smoothing" if smooth else "gradcam"))
    return out
