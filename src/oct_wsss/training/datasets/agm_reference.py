"""The datasets root the AGM reference code (github.com/YangjiaqiDig/WSSS-AGM) reads, as one layout.

``ROOT/RESC/{train,valid}/{original_images,label_images,gan_healthy}`` + ``ROOT/RESC/mask/{train,valid}`` (retina
masks), ``ROOT/2015_BOE_Chiu/segment_annotation/{images,labels,mask,gan_healthy}`` + ``train.csv``/``valid.csv`` and
``ROOT/oct_kaggle/{train,test}/{0.normal,1.abnormal}`` (METHODS.md §1). ``dataset`` picks resc, duke or kaggle;
samples come from the resc, duke (reference form) and kermany adapters. The code's precomputed GANomaly
counterparts (``gan_healthy``) and retina masks are listed per image stem in ``info`` (this project computes both
itself; they are there for comparison with the reference's own).
"""

from __future__ import annotations

from pathlib import Path

from oct_wsss.training.data import LabelledSet
from oct_wsss.training.datasets._util import by_stem, check_root
from oct_wsss.training.datasets.duke import load_duke
from oct_wsss.training.datasets.kermany import load_kermany
from oct_wsss.training.datasets.resc import load_resc

DATASETS = {"resc": "RESC", "duke": "2015_BOE_Chiu/segment_annotation", "kaggle": "oct_kaggle"}
_KAGGLE_SPLITS = {"train": "train", "valid": "test", "test": "test", "all": "all"}


def load_agm_reference(root: Path, dataset: str = "resc", split: str = "train",
                       trust_pickle: bool = False) -> LabelledSet:
    """The ``dataset`` (resc, duke, kaggle) of an AGM reference datasets root, ``split`` train / valid / all."""
    root = check_root(root, "agm")
    if dataset not in DATASETS:
        raise ValueError(f"agm: dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    folder = root / DATASETS[dataset]
    if not folder.is_dir():
        have = [name for name, sub in DATASETS.items() if (root / sub).is_dir()]
        raise FileNotFoundError(f"agm: {folder} is missing (this root has: {', '.join(have) or 'none of'} "
                                f"{', '.join(DATASETS.values())})")
    if dataset == "resc":
        ds = load_resc(folder, split=split, trust_pickle=trust_pickle)
        splits = ("train", "valid") if split == "all" else (split,)
        gan = {k: str(v) for s in splits for k, v in by_stem(folder / s / "gan_healthy").items()}
        retina = {k: str(v) for s in splits for k, v in by_stem(folder / "mask" / s).items()}
    elif dataset == "duke":
        ds = load_duke(folder, split=split, form="reference")
        gan = {k: str(v) for k, v in by_stem(folder / "gan_healthy").items()}
        retina = {k: str(v) for k, v in by_stem(folder / "mask").items()}
    else:
        if split not in _KAGGLE_SPLITS:
            raise ValueError(f"agm: split must be train, valid or all; got {split!r}")
        ds = load_kermany(folder, split=_KAGGLE_SPLITS[split])
        gan, retina = {}, {}
    ds.name = f"agm:{dataset}:{split}"
    ds.info = {**ds.info, "dataset": dataset, "gan_healthy": gan, "retina_masks": retina}
    return ds
