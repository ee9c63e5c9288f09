"""Synthetic Spectralis-like macular OCT phantom with pixel ground truth (tests, demo, benchmarks).

``make_volume(seed)`` returns a :class:`SyntheticVolume`; ``write_dataset(out_dir, n)`` writes a
folder dataset with PNG B-scans, masks, ``labels.csv`` and ``generation.json``. See docs/synthetic.md.
"""

from oct_wsss.synth.dataset import write_dataset
from oct_wsss.synth.demo import demo_phantom
from oct_wsss.synth.lesions import DEFAULT_PREVALENCE
from oct_wsss.synth.phantom import SyntheticVolume, make_volume

__all__ = ["DEFAULT_PREVALENCE", "SyntheticVolume", "demo_phantom", "make_volume", "write_dataset"]
