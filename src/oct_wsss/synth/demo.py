"""The demo phantom: the volume the napari sample data, ``oct-wsss demo`` and the demo student's card all use."""

from __future__ import annotations

from oct_wsss.synth.phantom import SyntheticVolume, make_volume

DEMO_SEED = 7
#: every lesion class present, so the demo shows each colour of the ontology
DEMO_PREVALENCE = {key: 1.0 for key in ("srf", "irf", "ped", "ez", "hrf", "drusen")}
#: no DME clusters yet: the bundled demo checkpoints' cards (test floors) were measured on this volume's lesions
DEMO_DME_SHARE = 0.0


def demo_phantom(n_bscans: int = 49, height: int = 496, width: int = 512) -> SyntheticVolume:
    """The 49 x 496 x 512 demo phantom (seed 7, every lesion class present); smaller sizes for quick tests."""
    return make_volume(seed=DEMO_SEED, n_bscans=n_bscans, height=height, width=width, prevalence=DEMO_PREVALENCE,
                       dme_share=DEMO_DME_SHARE)
