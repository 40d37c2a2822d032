"""Small hand-made ASPIICS headers for tests that do not need the simulator."""

import numpy as np
from astropy.io import fits


def l1_header(**changes):
    """A minimal but complete L1 header of a 2048² Wideband frame; keyword=None removes one."""
    roll = np.radians(changes.pop("roll", 10.0))
    cards = {
        "TELESCOP": "PROBA-3",
        "OBSRVTRY": "PROBA-3",
        "INSTRUME": "ASPIICS",
        "DETECTOR": "ASPIICS",
        "LEVEL": "L1",
        "FILENAME": "aspiics_wb_l1_1320404D000212_20250812T181424.fits",
        "DATE-OBS": "2025-08-12T18:14:24.000",
        "EXPTIME": 1.000113,
        "FILTER": "Wideband",
        "APS_TEMP": -15.2,
        "BLANK": -32768,
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CDELT1": 2.8172,
        "CDELT2": 2.8172,
        "CRPIX1": 1024.5,
        "CRPIX2": 1024.5,
        "CRVAL1": 59.3,
        "CRVAL2": -7.9,
        "CROTA": np.degrees(roll),
        "PC1_1": np.cos(roll),
        "PC1_2": -np.sin(roll),
        "PC2_1": np.sin(roll),
        "PC2_2": np.cos(roll),
        "HGLN_OBS": 0.012,
        "HGLT_OBS": 6.43,
        "DSUN_OBS": 1.5135e11,
        "RSUN_ARC": 948.2,
    }
    cards.update(changes)
    header = fits.Header()
    for key, value in cards.items():
        if value is not None:
            header[key] = value
    return header


def l1_data(shape=(2048, 2048), value=500, blank_tile=64):
    """Constant int16 data with a BLANK tile in the corner."""
    data = np.full(shape, value, dtype=np.int16)
    data[:blank_tile, :blank_tile] = -32768
    return data
