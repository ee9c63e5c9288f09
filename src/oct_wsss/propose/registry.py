"""Which proposer serves which method, and the one ``propose`` loop every entry point uses."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss import __version__
from oct_wsss.checkpoint import CheckpointError
from oct_wsss.propose.proposal import (
    BscanResult,
    Cancel,
    Progress,
    Proposal,
    ProposalCancelled,
    ProposalError,
    Proposer,
)
from oct_wsss.volume import OctVolume

#: method name -> "module:Proposer class"; imported on first use, so torch loads only when a method is used
METHODS: dict[str, str] = {
    "agm": "oct_wsss.propose.agm:AgmProposer",
    "student": "oct_wsss.propose.student:StudentProposer",
    "dfp": "oct_wsss.propose.dfp:DfpProposer",
    "hrf": "oct_wsss.propose.hrf:HrfProposer",
    "layers": "oct_wsss.propose.layer_lesions:LayersProposer",
}
#: methods whose proposers may run the retinal layer model (``propose.retina.LayerModelUser``: a retina filter or
#: "harmonised-layers" inputs), so a layer checkpoint of the user's own (``layers_checkpoint``) means something to them
LAYER_USERS: tuple[str, ...] = ("agm", "student")


def proposer_class(method: str) -> type:
    """The Proposer class of ``method`` (its module imported now)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    module, _, name = METHODS[method].partition(":")
    return getattr(importlib.import_module(module), name)


def preload(method: str) -> None:
    """Import ``method``'s proposer and torchvision on the calling thread, before a worker thread runs it.

    A first import of torchvision (torch._dynamo, then triton) from a Qt worker thread crashed the process in a
    test; GUIs call this on their main thread.
    """
    import torchvision  # noqa: F401

    proposer_class(method)


def load_proposer(method: str, checkpoint: str | Path, **options: Any) -> Proposer:
    """Load the proposer for ``method`` from ``checkpoint``; options (device, threshold, batch_size,
    layers_checkpoint, ...) pass on."""
    cls = proposer_class(method)
    from oct_wsss.preprocess.device import resolve_device

    try:
        options["device"] = resolve_device(options.get("device") or "auto")
    except ValueError as err:
        raise ProposalError(str(err)) from err
    try:
        proposer = cls.from_checkpoint(checkpoint, **options)
        if options.get("layers_checkpoint") is not None:
            _check_layer_model(proposer, checkpoint)
        return proposer
    except CheckpointError:
        raise
    except ValueError as err:  # options or classes that do not fit the checkpoint: a user error, said in one line
        raise ProposalError(f"{checkpoint}: {err}") from err


def _check_layer_model(proposer: Proposer, checkpoint: str | Path) -> None:
    """A layer checkpoint given for ``proposer``: refused when its checkpoint never runs the layer model (it would
    change nothing), else loaded now, so a bad file fails before any volume is read."""
    if not getattr(proposer, "uses_layers", False):
        raise ProposalError(f"{checkpoint} proposes without the layer model (no retina filter, no 'harmonised-layers' "
                            "inputs), so a layer checkpoint would change nothing; leave it out")
    proposer.layer_model()


def _check_volume(volume: OctVolume) -> None:
    if volume.n_bscans == 0 or volume.data.shape[1] == 0 or volume.data.shape[2] == 0:
        raise ValueError(f"the volume is empty (shape {volume.shape}); nothing to propose")


def stream(proposer: Proposer, volume: OctVolume, bscans: Sequence[int] | None = None, *,
           cancel: Cancel | None = None, keep_scores: bool = False) -> Iterator[BscanResult]:
    """Results per B-scan as they are ready (the widget's path); ``bscans`` default to all, checked in range."""
    _check_volume(volume)
    todo = list(range(volume.n_bscans)) if bscans is None else [int(i) for i in bscans]
    bad = [i for i in todo if not 0 <= i < volume.n_bscans]
    if bad:
        raise IndexError(f"B-scans {bad[:5]} out of range 0..{volume.n_bscans - 1}")
    yield from proposer.run(volume, todo, cancel=cancel, keep_scores=keep_scores)


def propose(volume: OctVolume, method: str = "agm", checkpoint: str | Path | None = None, *,
            proposer: Proposer | None = None, bscans: Sequence[int] | None = None, device: str = "auto",
            progress: Progress | None = None, cancel: Cancel | None = None, keep_scores: bool = False,
            labels: np.ndarray | None = None, accepted: Mapping[int, np.ndarray] | None = None,
            **options: Any) -> Proposal:
    """Propose lesions for ``volume`` (all B-scans or ``bscans``) with a method and checkpoint, or a loaded proposer.

    ``labels``: a zeroed uint8 (n, H, W) array to write into, e.g. a ``np.memmap`` for volumes too large to hold.
    ``accepted``: B-scan -> the grader's accepted mask; those B-scans are never proposed over, their masks are kept.

    Raises :class:`ProposalCancelled` (with the finished B-scans) when ``cancel()`` turns true.
    """
    if proposer is None:
        if checkpoint is None:
            raise ValueError(f"method {method!r} needs a checkpoint file")
        proposer = load_proposer(method, checkpoint, device=device, **options)
    accepted = accepted or {}
    todo = to_propose(volume.n_bscans if bscans is None else bscans, accepted)
    result = Proposal.empty(volume, proposer.classes, keep_scores, labels)
    for i, mask in accepted.items():
        result.labels[int(i)] = _checked_mask(mask, volume.shape[1:], int(i))
    t0 = time.perf_counter()
    for n, item in enumerate(stream(proposer, volume, todo, cancel=cancel, keep_scores=keep_scores), start=1):
        result.add(item)
        if progress is not None:
            progress(n, len(todo))
    result.provenance = proposal_provenance(proposer, volume, todo, time.perf_counter() - t0, sorted(accepted))
    if int(result.done.sum()) < len(todo):
        raise ProposalCancelled(result)
    return result


def to_propose(bscans: int | Sequence[int], accepted: Iterable[int]) -> list[int]:
    """The B-scans to propose: ``bscans`` (a count means all of them) minus the accepted ones, which a proposal
    never overwrites (the grader's work; the widget and ``oct-wsss propose --project`` both keep this rule)."""
    keep = {int(i) for i in accepted}
    todo = range(bscans) if isinstance(bscans, int) else bscans
    return [int(i) for i in todo if int(i) not in keep]


def proposal_provenance(proposer: Proposer, volume: OctVolume, bscans: Sequence[int], seconds: float | None,
                        accepted: Sequence[int] = ()) -> dict[str, Any]:
    """What every proposal records, from the CLI, the API or napari alike: the proposer's provenance (method,
    checkpoint id and SHA-256, parameters, device), the software, the volume's shape, B-scans and timings."""
    prov = {**proposer.provenance(), "software": f"oct-wsss {__version__}",
            "volume": {"shape": list(volume.shape), "spacing_mm": list(volume.spacing_mm),
                       "format": volume.source.get("format")},
            "bscans": [int(i) for i in bscans]}
    if accepted:
        prov["accepted_kept"] = [int(i) for i in accepted]
    if seconds is not None:
        prov["timings"] = timings(seconds, len(bscans))
    return prov


def timings(seconds: float, n_bscans: int) -> dict[str, float]:
    """A proposal's timings: the seconds its B-scans took in all and per B-scan (model loading not included)."""
    return {"total_s": round(seconds, 3), "per_bscan_s": round(seconds / max(1, n_bscans), 4)}


def _checked_mask(mask: np.ndarray, shape: tuple[int, ...], index: int) -> np.ndarray:
    """An accepted mask as uint8 ontology ids, refused when its shape is not the B-scan's."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"accepted mask of B-scan {index} is {mask.shape}; the volume's B-scans are {tuple(shape)}")
    return mask.astype(np.uint8)


def write_proposal(proposal: Proposal, out: str | Path) -> dict[str, Path]:
    """``out/labels.tif``, ``out/provenance.json`` (PHI-free), ``out/scores.npy`` when scores were kept, and
    ``out/instances.csv`` when the provenance holds instance records (HRF).

    ``scores.npy`` is float16 (n_bscans, K, H, W), columns in ``provenance.json``'s ``image_level.classes``: the
    soft labels a student can train on. Each file is written atomically.
    """
    import json

    from oct_wsss.io import atomic_write, write_labels

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spacing = proposal.provenance.get("volume", {}).get("spacing_mm")
    labels = write_labels(out / "labels.tif", proposal.labels, tuple(spacing) if spacing else None)
    prov = {**proposal.provenance,
            "image_level": {"classes": list(proposal.classes),
                            "probabilities": [[None if np.isnan(v) else round(float(v), 4) for v in row]
                                              for row in proposal.probabilities]}}
    path = out / "provenance.json"
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(prov, indent=2, allow_nan=False)))
    files = {"labels": labels, "provenance": path}
    if proposal.scores is not None:
        files["scores"] = out / "scores.npy"
        scores = proposal.scores.astype(np.float16, copy=False)
        atomic_write(files["scores"], lambda tmp: np.save(tmp, scores, allow_pickle=False), ".npy")
    if "instance_fields" in proposal.provenance:
        files["instances"] = out / "instances.csv"
        write_instances(files["instances"], proposal.provenance["instances"], proposal.provenance["instance_fields"])
    return files


def write_instances(path: Path, records: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    """One CSV row per instance record (empty cells for None), written atomically."""
    import csv
    import io

    from oct_wsss.io import atomic_write

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()), ".csv")
    return path
