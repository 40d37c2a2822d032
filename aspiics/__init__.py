"""
aspiics: calibration and science products for ASPIICS, the coronagraph of ESA's Proba-3.

Importing the package registers `aspiics.ASPIICSMap` with `sunpy.map.Map`, so that
``sunpy.map.Map("aspiics_wb_l1_....fits")`` returns an ASPIICS map, and registers the ASPIICS
colormaps with matplotlib.

The processing functions live in submodules: `aspiics.calibrate` (level 2),
`aspiics.resample` and `aspiics.merge` (exposure composites), `aspiics.polarization`,
`aspiics.fcorona` and `aspiics.lines` (level-3 products), `aspiics.simulate` (forward model).
The most used ones are also available here.
"""

import logging

try:
    from aspiics._version import __version__
except ImportError:  # pragma: no cover - not installed
    __version__ = "0.0.0"

#: The package logger. Configure it with the standard `logging` module.
log = logging.getLogger("aspiics")
log.addHandler(logging.NullHandler())

from aspiics import visualization  # noqa: E402, F401  (registers the colormaps)
from aspiics.calibrate import calibrate_acquisition, calibrate_map, to_physical_units  # noqa: E402
from aspiics.calibration import CalibrationArchive, CalibrationSet, open_calibration  # noqa: E402
from aspiics.io import read_map, write_map  # noqa: E402
from aspiics.map import ASPIICSMap  # noqa: E402
from aspiics.units import MSB  # noqa: E402

# Level-3 tools pull in reproject, ndcube and gwcs: imported on first use (PEP 562), so that
# level-2 work does not pay for them in start-up time and memory.
_LAZY = {
    "ExposureStack": "aspiics.composite",
    "align": "aspiics.composite",
    "merge_exposures": "aspiics.composite",
    "sun_centered_wcs": "aspiics.composite",
    "demodulate": "aspiics.polarization",
    "f_corona_model": "aspiics.fcorona",
    "subtract_f_corona": "aspiics.fcorona",
    "line_emission": "aspiics.lines",
    "reproject_affine": "aspiics.resample",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aspiics' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MSB",
    "ASPIICSMap",
    "CalibrationArchive",
    "CalibrationSet",
    "ExposureStack",
    "__version__",
    "align",
    "calibrate_acquisition",
    "calibrate_map",
    "demodulate",
    "f_corona_model",
    "line_emission",
    "log",
    "merge_exposures",
    "open_calibration",
    "read_map",
    "reproject_affine",
    "subtract_f_corona",
    "sun_centered_wcs",
    "to_physical_units",
    "write_map",
]
