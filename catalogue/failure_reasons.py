"""Why items failed, counted: what a stage that failed too many, or a refusal, says.

Items fail one by one with their own texts ("FileNotFoundError: ... '/media/surveys/own/1042_g.fits'"),
so the texts are grouped by their kind, the text with its numbers and quoted names blanked, and the
commonest kinds are named with a count and one example each.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_kind(reason: str) -> str:
    """The reason with quoted names and numbers blanked: the failures of one cause share it."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason.strip()))


def count_reasons(reasons: Iterable[str]) -> dict[str, int]:
    """Each reason's count (the texts as given: a chunk's record, grouped later by :func:`commonest`)."""
    return dict(Counter(r for r in reasons if r))


def commonest(counts: Iterable[tuple[str, int]], top: int = 3) -> str:
    """The ``top`` commonest kinds of the (reason, count) pairs, each with its count and first example."""
    kinds: Counter[str] = Counter()
    example: dict[str, str] = {}
    for reason, n in counts:
        kind = reason_kind(reason)
        kinds[kind] += n
        example.setdefault(kind, reason)
    if not kinds:
        return "no reason recorded"
    return "; ".join(f"{n} x {example[kind]}" for kind, n in kinds.most_common(top))
