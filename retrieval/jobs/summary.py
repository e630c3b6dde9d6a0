"""Wording of the jobs' one-line summaries: counts with their plural, speeds in units that read well.

    >>> count(1, "image"), count(40, "image")
    ('1 image', '40 images')
    >>> pace(2, 3.5, "image")
    'in 3.5 s'
    >>> pace(5000, 12.5, "image")
    '400.0 images/s over 12.5 s'
"""

from __future__ import annotations

#: Below this many items a rate mostly measures start-up (loading the model), so only the time is shown.
MIN_ITEMS_FOR_A_RATE = 100


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def pace(n: int, seconds: float, noun: str) -> str:
    """How long ``n`` items took: a rate for a real job, the bare time for a tiny one."""
    took = f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    if n < MIN_ITEMS_FOR_A_RATE or seconds <= 0:
        return f"in {took}"
    return f"{n / seconds:,.1f} {noun}s/s over {took}"
