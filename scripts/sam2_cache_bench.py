"""Reopening a volume with SAM 2 embeddings on disk (docs/propagation.md): embed N B-scans of a phantom once into a
cache folder, then time a new session that reads them back. Usage: python scripts/sam2_cache_bench.py
[--checkpoint sam2.1_hiera_tiny.pt] [--bscans 3] [--threads 2] (random weights without a checkpoint: same timings)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from oct_wsss.synth import make_volume


def main() -> None:
    """Print seconds per B-scan to compute an embedding, to read it back, and the bytes it takes on disk."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--bscans", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.modules.setdefault("triton", None)  # as the widgets do: torch without triton
    torch.set_num_threads(args.threads)
    from oct_wsss.propose.sam2_assist import Sam2Assist
    from oct_wsss.propose.sam2_cache import EmbeddingCache, volume_hash

    data = make_volume(5, n_bscans=args.bscans).volume.data
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            torch.manual_seed(0)
            ckpt = Path(tmp) / "random.pt"
            torch.save({"model": Sam2Assist(None, allow_random=True).backend.predictor.model.state_dict()}, ckpt)
        folder = Path(tmp) / "project" / "sam2-embeddings"
        first = Sam2Assist(ckpt, cache_dir=folder)
        t0 = time.perf_counter()
        vh = volume_hash(data)
        for i in range(len(data)):
            first.embed(data[i], key=i, where=(vh, i))
        compute = (time.perf_counter() - t0) / len(data)
        t0 = time.perf_counter()
        reopened = Sam2Assist(ckpt, cache_dir=folder)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        vh = volume_hash(data)
        for i in range(len(data)):
            reopened.embed(data[i], key=i, where=(vh, i))
        read = (time.perf_counter() - t0) / len(data)
        assert reopened.backend.embeddings_computed == 0, "reopening recomputed an embedding"
        size = EmbeddingCache(folder).size() / len(data)
    print(f"{data.shape[1]}x{data.shape[2]} B-scans, {args.threads} threads: compute {compute:.2f} s per B-scan; "
          f"reopen {read:.3f} s per B-scan (volume hash included; model build {build:.1f} s once); "
          f"{size / 2**20:.1f} MiB per B-scan on disk")


if __name__ == "__main__":
    main()
