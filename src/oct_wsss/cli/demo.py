"""The ``demo`` subcommand: napari with the plugin on a synthetic volume."""

from __future__ import annotations

import argparse
from typing import Any

from oct_wsss.cli._common import CliError

PLUGIN = "napari-oct-wsss"


def _demo(args: argparse.Namespace) -> None:
    try:
        import napari
    except ImportError as err:  # the GUI is an extra
        raise CliError("the demo needs napari and a Qt binding: pip install 'napari-oct-wsss[gui]'") from err
    populate_demo(napari.Viewer(title="napari-oct-wsss demo"))
    napari.run()


def populate_demo(viewer: Any) -> None:
    """Fill a napari viewer with the demo through the plugin's manifest (sample data, widget), as a user would."""
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9 moved the scale bar to the canvas overlays
    (canvas.overlays.scale_bar if canvas is not None else viewer.scale_bar).visible = True
    viewer.open_sample(PLUGIN, "synthetic_lesions")
    viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic OCT phantom")
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the ``oct-wsss`` parser."""
    p = sub.add_parser("demo", help="open napari with the plugin and a synthetic OCT volume with lesions")
    p.set_defaults(func=_demo)
