"""``oct-wsss train RECIPE.yaml``: a recipe names the method, the data, the split, the models and their schedules;
running it hands the recipe to that method's trainer (:data:`TRAINERS`), which writes checkpoints, metrics and
reports into the run folder.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oct_wsss.classes import ONTOLOGY, by_key
from oct_wsss.training.data import LabelledSet, Sample, patient_split
from oct_wsss.training.datasets import load_dataset
from oct_wsss.training.distributed import distributed
from oct_wsss.training.errors import TrainingError
from oct_wsss.training.soup import run_soup

COMMON_KEYS = {"method", "seed", "out", "device", "data", "val_data", "test_data", "classes", "split", "input_size",
               "description"}

#: method -> (module:function that runs its recipe, the recipe keys only that method reads)
TRAINERS: dict[str, tuple[str, set[str]]] = {
    "agm": ("oct_wsss.training.agm_recipe:run_agm", {"ganomaly", "agm", "threshold", "variants"}),
    "student": ("oct_wsss.training.student_recipe:run_student",
                {"student", "pseudo", "corrections", "target", "init", "flip", "soup"}),
    "dfp": ("oct_wsss.training.dfp_recipe:run_dfp", {"target", "dfp", "propagation", "threshold"}),
    "hrf": ("oct_wsss.training.hrf_recipe:run_hrf", {"hrf"}),
    "real-wsss": ("oct_wsss.training.real_wsss:run_real_wsss",
                  {"init", "real", "rounds", "confidence", "real_weight", "student", "retina", "cam", "flip", "soup"}),
}


@dataclass
class Recipe:
    """A parsed recipe; ``base`` is the folder relative paths in it resolve against (the current directory)."""

    raw: dict[str, Any]
    path: Path | None = None
    base: Path = field(default_factory=Path.cwd)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read and check a YAML recipe."""
        path = Path(path)
        if not path.is_file():
            raise TrainingError(f"{path}: no such recipe file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise TrainingError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Any, path: Path | None = None) -> Recipe:
        """Check keys and required fields; errors name the recipe and the key."""
        where = path or "recipe"
        if not isinstance(raw, dict):
            raise TrainingError(f"{where}: a recipe is a YAML mapping")
        if raw.get("method") not in TRAINERS:
            raise TrainingError(f"{where}: method {raw.get('method')!r} has no trainer "
                                f"(available: {', '.join(sorted(TRAINERS))})")
        known = COMMON_KEYS | TRAINERS[raw["method"]][1]
        unknown = set(raw) - known
        if unknown:
            raise TrainingError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key in ("data", "classes", "input_size"):
            if key not in raw:
                raise TrainingError(f"{where}: missing required key {key!r}")
        return cls(raw, path)

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def classes(self) -> tuple[int, ...]:
        """Ontology ids of the recipe's class keys, in recipe order."""
        try:
            return tuple(by_key(k).id for k in self.raw["classes"])
        except KeyError as err:
            raise TrainingError(f"{self.path or 'recipe'}: {err.args[0]}") from err

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.raw["input_size"]
        size = [size, size] if isinstance(size, int) else list(size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 32 for s in size):
            raise TrainingError(f"{self.path or 'recipe'}: input_size must be [height, width], each >= 32")
        return size[0], size[1]

    @property
    def flip(self) -> bool:
        """``flip: true``: the written student proposes with flip averaging (its softmax averaged with the mirrored
        B-scan's), chosen on the phantom (docs/results-real.md §10.8)."""
        flip = self.raw.get("flip", False)
        if not isinstance(flip, bool):
            raise TrainingError(f"{self.path or 'recipe'}: flip must be true or false; got {flip!r}")
        return flip

    @property
    def soup(self) -> int:
        """``soup: N``: how many seeds (``seed`` onwards) to train and average into one network (``training.soup``)."""
        soup = self.raw.get("soup", 1)
        if isinstance(soup, bool) or not isinstance(soup, int) or soup < 1:
            raise TrainingError(f"{self.path or 'recipe'}: soup must be a whole number of runs >= 1; got {soup!r}")
        return soup

    def layouts(self) -> list[str]:
        """The dataset layouts the recipe learns and selects from (``synth`` is the phantom), which its checkpoints
        record so that proposing on a real scan can tell a phantom-only model (``propose.domain``)."""
        blocks = [self.raw.get(k) for k in ("data", "val_data", "test_data")]
        blocks.append((self.raw.get("ganomaly") or {}).get("data"))  # AGM's normal-only GANomaly set
        return sorted({str(b["layout"]) for b in blocks if isinstance(b, dict) and "layout" in b})

    def out_dir(self, override: str | Path | None = None) -> Path:
        out = Path(override or self.raw.get("out") or f"runs/{Path(self.path or 'recipe').stem}")
        return out if out.is_absolute() else self.base / out

    def dataset(self, key: str) -> LabelledSet | None:
        """Load the ``data`` / ``val_data`` / ``test_data`` block, generating a synthetic set when asked to."""
        spec = self.raw.get(key)
        if spec is None:
            return None
        spec = dict(spec)
        generate = spec.pop("generate", None)
        if generate is not None:
            _generate(spec, generate, self.base)
        return load_dataset(spec, self.base).restrict(self.classes)

    def generate(self) -> None:
        """Write the synthetic sets the recipe's ``generate`` blocks ask for that are not on disk yet."""
        for key in ("data", "val_data", "test_data"):
            spec = dict(self.raw.get(key) or {})
            if "generate" in spec:
                _generate(spec, spec.pop("generate"), self.base)

    def splits(self) -> tuple[list[Sample], list[Sample], list[Sample]]:
        """(train, val, test), patient-level: explicit val/test sets win, else fractions of ``data``."""
        data = self.dataset("data")
        assert data is not None
        split = self.raw.get("split", {}) or {}
        seed = int(split.get("seed", self.seed))
        rest = data.samples
        test_set = self.dataset("test_data")
        if test_set is not None:
            test = test_set.samples
        else:
            frac = float(split.get("test_fraction", 0.0))
            rest, test = patient_split(rest, frac / 1.0, seed + 1) if frac > 0 else (rest, [])
        val_set = self.dataset("val_data")
        if val_set is not None:
            train, val = rest, val_set.samples
        else:
            frac = float(split.get("val_fraction", 0.2))
            # the val fraction is of all patients, so rescale it to what is left after the test split
            left = len({s.patient for s in rest}) / max(1, len({s.patient for s in data.samples}))
            train, val = patient_split(rest, min(0.95, frac / max(left, 1e-9)), seed) if frac > 0 else (rest, [])
        if not train:
            raise TrainingError("the split left no training B-scans; lower val_fraction / test_fraction")
        return train, val, test


def _generate(spec: dict[str, Any], generate: dict[str, Any], base: Path) -> None:
    """Write the synthetic dataset a recipe asks for, unless its folder already holds one."""
    from oct_wsss.synth import write_dataset

    if spec.get("layout") != "synth":
        raise TrainingError("'generate' works only with layout: synth")
    root = Path(spec["root"])
    root = root if root.is_absolute() else base / root
    if (root / "labels.csv").is_file():
        _check_generator(root)
        return
    opts = dict(generate)
    write_dataset(root, int(opts.pop("volumes")), healthy_fraction=float(opts.pop("healthy_fraction", 0.2)),
                  seed=int(opts.pop("seed", 0)), **opts)


def _check_generator(root: Path) -> None:
    """Refuse a phantom folder written by another generator version: training on it would silently mix phantoms."""
    from oct_wsss.synth.phantom import GENERATOR_VERSION

    record = root / "generation.json"
    written = json.loads(record.read_text()).get("generator_version") if record.is_file() else None
    if written is not None and written != GENERATOR_VERSION:
        raise TrainingError(f"{root} holds phantom generator v{written}, this code generates v{GENERATOR_VERSION}; "
                            "delete the folder to regenerate it, or point the recipe's root elsewhere")


def split_summary(train: list[Sample], val: list[Sample], test: list[Sample]) -> dict[str, Any]:
    """Counts and hashed patient ids per split (no raw ids: they may be identifying)."""
    def part(samples: list[Sample]) -> dict[str, Any]:
        patients = sorted({hashlib.sha256(s.patient.encode()).hexdigest()[:12] for s in samples})
        per_class = {ONTOLOGY[c].key: sum(c in s.labels for s in samples) for c in range(1, len(ONTOLOGY))}
        return {"bscans": len(samples), "healthy": sum(s.healthy for s in samples), "patients": len(patients),
                "patient_hashes": patients, "positives": {k: v for k, v in per_class.items() if v}}

    return {"train": part(train), "val": part(val), "test": part(test)}


def train_recipe(path: str | Path, *, out: str | Path | None = None, device: str | None = None,
                 log: Callable[[str], None] = print, cancel: Callable[[], bool] | None = None) -> Path:
    """Run a recipe; returns the path of the main checkpoint written into the run folder.

    Under ``torchrun`` every process runs it: rank 0 writes the synthetic data and the run folder's files first, the
    trainers split each epoch across the processes, and rank 0 alone evaluates and writes the checkpoint.
    """
    recipe = Recipe.load(path)
    module, _, func = TRAINERS[recipe.raw["method"]][0].partition(":")
    run = getattr(importlib.import_module(module), func)
    run_dir = recipe.out_dir(out)
    device = device or recipe.raw.get("device", "auto")
    with distributed(device) as dist:
        if dist.is_main:
            recipe.generate()
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "recipe.json").write_text(json.dumps(recipe.raw, indent=2, default=str))
        dist.barrier()
        if recipe.soup > 1:
            return run_soup(recipe, run_dir, device, dist.main_log(log), cancel, run, dist.is_main)
        return run(recipe, run_dir, device, dist.main_log(log), cancel)
