"""
Units of ASPIICS data.

Calibrated ASPIICS images are in units of the mean solar brightness (MSB): the brightness of the
corona divided by the mean brightness of the solar disc in the same passband. `MSB` is an astropy
unit that is dimensionless in value but kept distinct, so that ``BUNIT = 'MSB'`` survives
round-trips through FITS headers and sunpy maps.
"""

import astropy.units as u

__all__ = ["MSB"]

#: Mean solar brightness, the unit of ASPIICS level-2 and level-3 brightness images.
MSB = u.def_unit(
    "MSB",
    doc="Mean solar brightness: brightness relative to the mean brightness of the solar disc",
)
