"""
Instrument constants and the filter table of ASPIICS.

The numbers are those of the ROB calibration release 1.0 and of the instrument papers
(Zhukov et al. 2025; Shestov et al. 2020, 2021). Calibration-dependent values that a
calibration release can override (``Aphot``, the internal-occulter centre, ...) live in the
release-1.0 configuration shipped as ``aspiics/data/l2_config_release1.json``; this module
loads it once, read-only.
"""

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

import astropy.units as u

from aspiics.exceptions import HeaderError

__all__ = [
    "APERTURE_RADIUS",
    "BLANK_DN",
    "DETECTOR_SHAPE",
    "FILTERS",
    "GAIN",
    "IO_CONJUGATE_DISTANCE",
    "ISD_NOMINAL",
    "PLATE_SCALE",
    "READ_NOISE",
    "R_IO",
    "SATURATION_DN",
    "TILE_SIZE",
    "FilterInfo",
    "default_config",
    "filter_info",
]

#: Shape of a full ASPIICS frame (rows, columns).
DETECTOR_SHAPE = (2048, 2048)
#: Raw value of a saturated pixel (14-bit ADC).
SATURATION_DN = 16383
#: Raw value of a missing pixel in L1 files (FITS ``BLANK``).
BLANK_DN = -32768
#: Detector gain.
GAIN = 0.1 * u.DN / u.electron
#: Read noise.
READ_NOISE = 7.0 * u.DN
#: Plate scale of the calibrated optics.
PLATE_SCALE = 2.8172 * u.arcsec / u.pix
#: Physical radius of the internal occulter.
R_IO = 1.758 * u.mm
#: Nominal inter-satellite distance (occulter to coronagraph entrance pupil).
ISD_NOMINAL = 144348.0 * u.mm
#: Radius of the coronagraph entrance aperture.
APERTURE_RADIUS = 25.0 * u.mm
#: Distance that projects the internal occulter onto the plane of the external occulter.
IO_CONJUGATE_DISTANCE = 331.108 * u.mm
#: Side of the square tiles in which frames are telemetered (missing tiles are BLANK).
TILE_SIZE = 64


@dataclass(frozen=True)
class FilterInfo:
    """
    Static description of one ASPIICS filter.

    Attributes
    ----------
    name : str
        The value of the FITS keyword ``FILTER``, e.g. ``'Polarizer 60'``.
    code : str
        The two-letter code used in file names (``wb``, ``fe``, ``he``, ``p1``, ``p2``, ``p3``).
    flat_suffix : str
        Suffix of the flat-field file of a calibration release (``flatfield_<suffix>.fits``).
    polarizer_angle : `~astropy.units.Quantity` or None
        Nominal orientation of the polarizer, None for the other filters.
    wavelength : `~astropy.units.Quantity`
        Central wavelength of the passband.
    label : str
        Human-readable label for plots.
    """

    name: str
    code: str
    flat_suffix: str
    polarizer_angle: u.Quantity | None
    wavelength: u.Quantity
    label: str

    @property
    def is_polarizer(self):
        """True for the three polarizers."""
        return self.polarizer_angle is not None


_FILTER_LIST = (
    FilterInfo("Wideband", "wb", "WB", None, 551.0 * u.nm, "Wideband 536–566 nm"),
    FilterInfo("Fe XIV", "fe", "Fe", None, 530.4 * u.nm, "Fe XIV 530.4 nm"),
    FilterInfo("He I", "he", "He", None, 587.7 * u.nm, "He I D3 587.7 nm"),
    # In flight p1 = Polarizer 60, p2 = Polarizer 0, p3 = Polarizer 120 (SPEC §2).
    FilterInfo("Polarizer 60", "p1", "P1", 60 * u.deg, 551.0 * u.nm, "Polarizer 60°"),
    FilterInfo("Polarizer 0", "p2", "P2", 0 * u.deg, 551.0 * u.nm, "Polarizer 0°"),
    FilterInfo("Polarizer 120", "p3", "P3", 120 * u.deg, 551.0 * u.nm, "Polarizer 120°"),
)

#: The filters of ASPIICS keyed by their FITS ``FILTER`` name (read-only).
FILTERS = MappingProxyType({f.name: f for f in _FILTER_LIST})
_BY_KEY = {key: f for f in _FILTER_LIST for key in (f.name.lower(), f.code, f.name.lower().replace(" ", ""))}
_BY_KEY.update({"wb": FILTERS["Wideband"], "wide": FILTERS["Wideband"], "fexiv": FILTERS["Fe XIV"]})


def filter_info(name):
    """
    Look up a filter by its FITS name, its file-name code or a forgiving spelling.

    Parameters
    ----------
    name : str
        ``'Wideband'``, ``'wb'``, ``'Fe XIV'``, ``'fe'``, ``'polarizer 60'``, ``'p1'``, ...
        Case and inner spaces do not matter.

    Returns
    -------
    `FilterInfo`

    Raises
    ------
    aspiics.exceptions.HeaderError
        If the name is not an ASPIICS filter (``'Unknown'`` included: ``aspiics`` never guesses
        a filter; pass the right one explicitly).
    """
    if isinstance(name, FilterInfo):
        return name
    key = str(name).strip().lower()
    info = _BY_KEY.get(key) or _BY_KEY.get(key.replace(" ", ""))
    if info is None:
        known = ", ".join(repr(f.name) for f in _FILTER_LIST)
        raise HeaderError(
            f"unknown ASPIICS filter {name!r}; expected one of {known} "
            "(or the codes wb, fe, he, p1, p2, p3). If the header says 'Unknown', pass filter=... explicitly."
        )
    return info


@cache
def _default_config_text():
    return resources.files("aspiics.data").joinpath("l2_config_release1.json").read_text(encoding="utf-8")


def default_config():
    """
    Return the release-1.0 calibration constants in the reference ``l2_config.json`` format.

    The result is a fresh dictionary on every call, so callers may modify it freely.

    Returns
    -------
    dict
        ``{"calib_data": {"gain": ..., "readout_noise": ..., "Wideband": {"Aphot": ...}, ...}}``
    """
    return json.loads(_default_config_text())
