"""``oct-wsss train`` under ``torchrun`` on two CPU ranks (gloo) for the AGM, student, DFP and HRF (CCT, MIL) recipes:
the ranks end with the same trained weights and rank 0 alone writes the run folder's results."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import run_torchrun, tiny_agm_checkpoint, tiny_agm_recipe, write_recipe
from safetensors.torch import load_file

#: Runs ``oct-wsss train RECIPE`` on this rank; the recipe's trainer is wrapped to save the rank's trained weights
#: next to the weights the trainer started from (the same seed, the same constructor).
SCRIPT = """
import importlib, os, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from oct_wsss.cli import main
from oct_wsss.training.runlog import seed_everything

torch.set_num_threads(1)
recipe, module, name = sys.argv[1:4]
mod = importlib.import_module(module)
trainer = getattr(mod, name)

def keep(*args, **kwargs):
    result = trainer(*args, **kwargs)
    net = result[0] if isinstance(result, tuple) else result.net
    seed_everything(kwargs["seed"])
    initial = type(net)(net.config).state_dict()
    tensors = {f"final.{k}": v for k, v in net.state_dict().items()} | {f"initial.{k}": v for k, v in initial.items()}
    save_file({k: v.detach().contiguous() for k, v in tensors.items()},
              str(Path(recipe).parent / f"rank{os.environ['RANK']}.safetensors"))
    return result

setattr(mod, name, keep)
sys.exit(main(["train", recipe]))
"""

SYNTH = {"volumes": 4, "n_bscans": 3, "height": 64, "width": 64, "healthy_fraction": 0.25, "seed": 0}


def _raw(tmp: Path, method: str, classes: list[str], prevalence: dict[str, float], **method_keys: object) -> dict:
    """A tiny recipe: 4 phantom volumes of 3 B-scans of 64 x 64, one volume each for validation and test."""
    return {"method": method, "seed": 0, "out": str(tmp / "run"), "device": "cpu",
            "data": {"layout": "synth", "root": str(tmp / "synth"), "generate": {**SYNTH, "prevalence": prevalence}},
            "classes": classes, "split": {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 2},
            "input_size": [64, 64], **method_keys}


def _student(tmp: Path) -> dict:
    teacher = tiny_agm_checkpoint(tmp / "agm.safetensors", (1, 2), gan_size=32, threshold=0.3)
    return _raw(tmp, "student", ["srf", "irf"], {"srf": 0.9, "irf": 0.9},
                pseudo={"teacher": str(teacher), "method": "agm"},
                student={"config": {"arch": "unet", "width": 4, "depth": 3}, "epochs": 2, "batch_size": 2})


def _dfp(tmp: Path) -> dict:
    return _raw(tmp, "dfp", ["srf", "irf"], {"srf": 0.9, "irf": 0.9}, target="fluid",
                dfp={"config": {"backbone": "resnet18", "width": 8}, "epochs": 2, "batch_size": 2, "augment": False,
                     "optimizer": {"name": "adam", "lr": 1e-3}},
                propagation={"kernel": 3, "threshold": 0.5, "delta": 0.1})


def _hrf(model: str, config: dict) -> object:
    def raw(tmp: Path) -> dict:
        return _raw(tmp, "hrf", ["hrf"], {"hrf": 1.0},
                    hrf={"model": model, "variant": "cct_2", "config": config, "epochs": 2, "batch_size": 2,
                         "proposer": {"iterations": 1, "crop_size": 32}})
    return raw


CASES = {  # recipe, the module whose trainer it calls and that trainer's name, the checkpoint and metrics files
    "agm": (tiny_agm_recipe, "oct_wsss.training.agm_recipe", "train_agm", "agm.safetensors", "agm-metrics.csv"),
    "student": (_student, "oct_wsss.training.student_recipe", "train_student", "student.safetensors",
                "student-metrics.csv"),
    "dfp": (_dfp, "oct_wsss.training.dfp_recipe", "train_dfp", "dfp.safetensors", "dfp-metrics.csv"),
    "hrf-cct": (_hrf("cct", {"dim": 16, "heads": 2, "conv_channels": 8}), "oct_wsss.training.hrf_recipe",
                "train_hrf", "hrf-cct.safetensors", "hrf-metrics.csv"),
    "hrf-mil": (_hrf("mil", {"width": 4, "features": 16, "attention": 8, "rows": 1}),
                "oct_wsss.training.hrf_recipe", "train_hrf", "hrf-mil.safetensors", "hrf-metrics.csv"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recipe_under_torchrun_keeps_ranks_identical(tmp_path: Path, case: str) -> None:
    raw, module, trainer, checkpoint, metrics = CASES[case]
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = run_torchrun(script, str(write_recipe(tmp_path, raw(tmp_path))), module, trainer, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    final = [k for k in r0 if k.startswith("final.")]
    assert final and all(torch.equal(r0[k], r1[k]) for k in final), [k for k in final if not torch.equal(r0[k], r1[k])]
    trained = [k for k in final if r0[k].is_floating_point() and not torch.equal(r0[k], r0["initial" + k[5:]])]
    assert trained, "no weight changed: nothing was trained"
    run = tmp_path / "run"
    first = result.stdout.splitlines()[0]
    assert (run / checkpoint).is_file() and result.stdout.count(first) == 1  # rank 0 alone wrote and logged
    with open(run / metrics) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] in ([0, 1], [1, 2])  # one row per epoch, not per rank
