"""Lesion proposals: ``propose(volume, method=..., checkpoint=...) -> Proposal``, streamed per B-scan.

Each method is a :class:`~oct_wsss.propose.proposal.Proposer` loaded from its checkpoint through the registry; the
CLI, the napari widget and the Python API all go through ``load_proposer`` and ``propose``.
"""

from __future__ import annotations

from oct_wsss.propose.proposal import (
    BscanResult,
    Cancel,
    Progress,
    Proposal,
    ProposalCancelled,
    ProposalError,
    Proposer,
)
from oct_wsss.propose.registry import METHODS, load_proposer, propose, stream

__all__ = [
    "METHODS", "BscanResult", "Cancel", "Progress", "Proposal", "ProposalCancelled", "ProposalError", "Proposer",
    "load_proposer", "propose", "stream",
]
