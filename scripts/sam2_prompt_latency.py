"""SAM 2 assist latency on CPU: one B-scan embedding, then repeated point prompts on the cached embedding.

Random-weight hiera-tiny from the packaged config (nothing downloaded), a 128 x 160 phantom B-scan, as in
tests/test_sam2_assist.py. Usage: ``python scripts/sam2_prompt_latency.py [--threads N] [--prompts K] [--profile]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from oct_wsss.propose.sam2_assist import Prompt, Sam2Assist
from oct_wsss.synth import make_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's table for one prompt")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    assist = Sam2Assist(None, allow_random=True)
    bscan = make_volume(9, n_bscans=3, height=128, width=160).volume.data[1]
    start = time.perf_counter()
    assist.embed(bscan, 0)
    print(f"embedding {time.perf_counter() - start:.1f} s ({args.threads} threads)")
    prompt = Prompt(((60.0, 80.0),), (1,))
    walls, cpus = [], []
    for _ in range(args.prompts):
        cpu = time.process_time()
        assist.segment(bscan, prompt, 0)
        walls.append(assist.last_prompt_s * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
        print(f"prompt {walls[-1]:.0f} ms (CPU {cpus[-1]:.0f} ms)")
    print(f"median of {args.prompts}: {statistics.median(walls):.1f} ms wall, {statistics.median(cpus):.1f} ms CPU")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            assist.segment(bscan, prompt, 0)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
