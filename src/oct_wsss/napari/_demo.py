"""What `oct-wsss demo` shows: the synthetic lesion volume, its ground truth and the plugin's widget."""

from __future__ import annotations

import napari

from oct_wsss.napari._sample_data import synthetic_lesions

PLUGIN = "napari-oct-wsss"


def populate_demo(viewer: napari.Viewer) -> None:
    """Fill ``viewer`` with the demo: sample volume + ground truth, scale bar, the phantom widget."""
    viewer.scale_bar.visible = True
    for data, kwargs, layer_type in synthetic_lesions():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic OCT phantom")
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
