"""The units of MorphoMass, defined once.

Luminosities are in g-band solar luminosities: the luminosity, in the g band, of a source
of AB absolute magnitude M_sun,g = 5.11 (Willmer 2018), and M/L ratios are in solar masses
per g-band solar luminosity. Files and pages write the unit as ``solLum`` (``solMass /
solLum``), the IVOA VOUnit and FITS name of the solar luminosity, so that every VO, FITS and CDS
reader parses it without a warning; the band is in each column's UCD (``em.opt.B``) and
description, as catalogues of band luminosities give it. A g-band M/L in Msun/Lsun_g is
not a bolometric one: read ``solLum`` here as "solar, in the g band".

Model help texts, exports, the API and pages read the unit strings from here.
"""

from __future__ import annotations

import astropy.units as u

#: The g-band solar luminosity as an astropy unit, for code that converts (files say ``solLum``).
LSUN_G = u.def_unit(
    "Lsun_g",
    doc="g-band solar luminosity: the g-band luminosity of a source of AB absolute magnitude 5.11 (Willmer 2018)",
)
#: Mass-to-light ratio in the g band.
ML_G = u.solMass / LSUN_G

#: Unit strings as they appear in help texts, tables, files and pages: VOUnit, FITS and CDS all parse them.
#: (Without spaces: the CDS syntax, which VOTable readers also use, allows none.)
LUMINOSITY = "solLum"
MASS_TO_LIGHT = "solMass/solLum"
LUMINOSITY_PER_PIXEL = "solLum/pix"
STELLAR_MASS = "solMass"
#: What the unit strings mean, for descriptions.
BAND_NOTE = "L in g-band solar luminosities, AB M_sun,g = 5.11"


def enable() -> None:
    """Make astropy parse ``Lsun_g`` into :data:`LSUN_G`: files exported before the units were
    written as ``solLum`` carry that string."""
    u.add_enabled_units([LSUN_G])
