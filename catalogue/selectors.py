"""Selectors: read-only queries shared by views, the API and commands."""

from __future__ import annotations

from functools import reduce
from operator import or_

import numpy as np
from django.db.models import Q, QuerySet

from catalogue.models import Galaxy
from pipeline.sky import angular_distance_deg, cone_index_ranges


def galaxies_in_cone(
    ra: float, dec: float, radius_deg: float, queryset: QuerySet[Galaxy] | None = None
) -> QuerySet[Galaxy]:
    """Galaxies within ``radius_deg`` of (ra, dec), all in degrees.

    The HEALPix index narrows the candidates to a few index ranges; the exact
    great-circle distance then decides, so the result is correct across RA = 0/360 and at
    the poles on every database backend.
    """
    queryset = Galaxy.objects.all() if queryset is None else queryset
    ranges = cone_index_ranges(float(ra) % 360.0, float(dec), float(radius_deg))
    covering = reduce(or_, (Q(healpix__gte=lo, healpix__lt=hi) for lo, hi in ranges))
    candidates = list(queryset.filter(covering).values_list("id", "ra", "dec"))
    if not candidates:
        return queryset.none()
    ids, ras, decs = (np.asarray(c) for c in zip(*candidates, strict=True))
    inside = angular_distance_deg(float(ra), float(dec), ras.astype(float), decs.astype(float)) <= radius_deg
    return queryset.filter(id__in=ids[inside].tolist())
