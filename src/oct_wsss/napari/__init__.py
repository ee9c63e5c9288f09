"""The napari plugin layer: reader, writer and sample-data hooks, dock widgets, layer helpers.

Thin on purpose: every hook calls the library (``oct_wsss.io``, ``oct_wsss.synth``) and only turns
its results into napari layer data. Nothing outside this package imports it except the manifest.
"""
