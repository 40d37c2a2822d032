"""
aspiics: calibration and science products for ASPIICS, the coronagraph of ESA's Proba-3.

Importing the package registers `aspiics.map.ASPIICSMap` with `sunpy.map.Map`, so that
``sunpy.map.Map("aspiics_wb_l1_....fits")`` returns an ASPIICS map.
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
from aspiics.map import ASPIICSMap  # noqa: E402

__all__ = ["ASPIICSMap", "__version__", "log"]
