"""What the napari widget tests share: in-memory QSettings (no user settings touched) and a tiny student."""

from __future__ import annotations

from pathlib import Path

import torch

from oct_wsss.models.student import StudentConfig, StudentNet
from oct_wsss.training.student import student_checkpoint


class MemorySettings(dict):
    """Stands in for QSettings: value/setValue on a dict."""

    def value(self, key, default=None):
        return self.get(key, default)

    def setValue(self, key, value):
        self[key] = value


def tiny_student_checkpoint(folder: Path) -> Path:
    """A random-weight 4-output U-Net student (SRF, IRF, PED) at 64 x 64, saved in ``folder``."""
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(n_outputs=4, width=4, depth=3))
    return student_checkpoint(net, (1, 2, 3), (64, 64), training={}).save(folder / "student.safetensors")
