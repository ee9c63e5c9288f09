"""Time AGM proposals at the paper's size on this machine: random weights, 496 x 512 phantom B-scans, 512 px input.

    python training/agm_speed.py [--encoder light|unet] [--backbone resnet50] [--bscans 4] [--no-smooth]

Prints seconds per B-scan (median of the timed B-scans after one warm-up batch) and the peak resident memory.
A measurement script for docs/results.md; `oct-wsss bench` covers every stage.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from oct_wsss.models.agm import AgmConfig, AgmNet
from oct_wsss.models.ganomaly import GanomalyConfig, Generator
from oct_wsss.propose.agm import AgmProposer
from oct_wsss.synth import make_volume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="light", choices=("light", "unet"))
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--bscans", type=int, default=4)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--no-smooth", action="store_true")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = AgmNet(AgmConfig(n_classes=args.classes, backbone=args.backbone, encoder=args.encoder))
    gen = Generator(GanomalyConfig(image_size=args.size))
    proposer = AgmProposer(net, gen, list(range(1, args.classes + 1)), (args.size, args.size), device=args.device,
                           batch_size=1, smooth=not args.no_smooth)
    vol = make_volume(0, n_bscans=args.bscans + 1).volume
    proposer.scores([vol.data[0]])  # warm-up
    times = []
    for i in range(1, args.bscans + 1):
        t0 = time.perf_counter()
        proposer.scores([vol.data[i]])
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.backbone} + {args.encoder} encoder, {args.size} px, smooth={not args.no_smooth}, "
          f"{torch.get_num_threads()} threads: median {statistics.median(times):.2f} s per B-scan "
          f"(min {min(times):.2f}, max {max(times):.2f}), peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
