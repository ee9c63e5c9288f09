"""``oct-wsss bench``: ``run`` times the proposers' stages (``stages``: student, AGM; ``hrf``: SAM 2, HRF; ``baseline``:
grad-cam) with ``timing``; its own room so timing code never sits on the proposal path."""
