"""Model-card helpers the weight tests share."""

from __future__ import annotations

import json
import re


def card_floor(text: str) -> dict:
    """The JSON after "**Test floor**" in a model card."""
    match = re.search(r"\*\*Test floor\*\*.*?: `(\{.*\})`", text)
    assert match, "the model card states no test floor"
    return json.loads(match.group(1))
