"""The units of MorphoMass, defined once.

Luminosities are in g-band solar luminosities: the luminosity, in the g band, of a source
of AB absolute magnitude M_sun,g = 5.11 (Willmer 2018). That is not astropy's ``solLum``
(the bolometric solar luminosity, 3.828e26 W), and a g-band M/L in Msun/Lsun is a
different number from one in Msun/Lsun,g, so the unit gets its own name: ``Lsun_g``.
Model help texts, exports, the API and pages read the unit strings from here.

Readers that want astropy to parse ``Lsun_g`` back into this unit call
:func:`enable` (``astropy.units.add_enabled_units``); without it astropy keeps the
string as an ``UnrecognizedUnit`` with the same name, so nothing is lost.
"""

from __future__ import annotations

import astropy.units as u

LSUN_G = u.def_unit(
    "Lsun_g",
    doc="g-band solar luminosity: the g-band luminosity of a source of AB absolute magnitude 5.11 (Willmer 2018)",
)
#: Mass-to-light ratio in the g band.
ML_G = u.solMass / LSUN_G
#: Luminosity per pixel of an image.
LSUN_G_PER_PIXEL = LSUN_G / u.pix

#: Unit strings as they appear in help texts, tables, files and pages.
LUMINOSITY = LSUN_G.to_string()
MASS_TO_LIGHT = ML_G.to_string()
LUMINOSITY_PER_PIXEL = LSUN_G_PER_PIXEL.to_string()
STELLAR_MASS = u.solMass.to_string()


def enable() -> None:
    """Make astropy parse ``Lsun_g`` (e.g. reading back an exported table) into :data:`LSUN_G`."""
    u.add_enabled_units([LSUN_G])
