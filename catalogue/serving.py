"""What a web process does once at start, before it serves: load every view, warm the ADQL parser, freeze the heap.

The web process imports much of the science stack (astropy, scipy, LightGBM through the
selectors): about 275,000 objects that never die. Python's full garbage collections walk
them all, and one landing inside a request added 150-200 ms to a 60 ms catalogue page.
``gc.freeze()`` moves what exists after start-up out of the collector's sight (as CPython's
documentation suggests for pre-forked servers), so later collections only walk what
requests create.
"""

from __future__ import annotations

import gc


def prepare_for_requests() -> None:
    """Import every URL's view now rather than on the first request, then freeze what start-up made."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - resolving imports every view module
    warm_adql_parser()
    gc.collect()
    gc.freeze()


def warm_adql_parser() -> None:
    """Parse one ADQL query: ANTLR builds its automaton on the first parse (0.9 s), not on a user's TAP request."""
    from catalogue.tap.adql import parse

    parse("SELECT TOP 1 g.objid FROM t AS g WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', 1, 2, 3))")
