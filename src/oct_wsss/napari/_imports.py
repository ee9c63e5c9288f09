"""Loading a method's modules safely from the GUI, before a worker thread uses them.

Two crashes seen under napari: a first torchvision import from a Qt worker thread (see ``registry.preload``), and
``triton`` (imported by ``torch._dynamo`` through torchvision) loading after an OpenGL context exists — its
bundled LLVM collides with the one in Mesa's llvmpipe (Xvfb, VMs, remote desktops) and the process segfaults.
The widgets never use ``torch.compile``, so triton is hidden from torch when it has not been loaded yet.
"""

from __future__ import annotations

import sys


def hide_triton() -> None:
    """Make ``import triton`` raise ImportError unless triton is loaded already (torch then runs without it)."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]


def preload_method(method: str) -> None:
    """Import ``method``'s proposer (and torchvision) on the calling, main thread, with triton hidden."""
    hide_triton()
    from oct_wsss.propose.registry import preload

    preload(method)


def preload_sam2() -> None:
    """Import SAM 2 (and torch) on the main thread, with triton hidden, before a worker builds the model."""
    hide_triton()
    import oct_wsss.propose.sam2_assist  # noqa: F401
    from oct_wsss.propose.sam2_backend import sam2_available

    if sam2_available():
        import sam2.build_sam  # noqa: F401
