"""napari-oct-wsss: weakly supervised lesion proposals for retinal OCT.

Library first: ``oct_wsss.io.read_volume``, ``oct_wsss.synth.make_volume`` and the proposers work
without napari; ``oct_wsss.napari`` holds the thin plugin layer on top.
"""

from oct_wsss.volume import OctVolume

__version__ = "0.1.0"
__all__ = ["OctVolume", "__version__"]
