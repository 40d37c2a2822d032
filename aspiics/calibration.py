"""
Calibration data of ASPIICS: constants and arrays needed by the L2 calibration.

A `CalibrationSet` stands for one calibration release of the Royal Observatory of Belgium
(SPEC §4): a folder ``calibration_data_<validfrom>_<validto>/`` holding FITS files (bias, dark,
non-linearity, flat fields, hot pixels, vignetting fit, polarizer angle maps) and optionally an
``l2_config.json`` with the scalar constants, in the format of the reference processor.

Arrays are read lazily, converted to float32 once and cached on the instance, so that a batch
of frames calibrated with one `CalibrationSet` reads every calibration file exactly once.
"""

import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.time import Time
from scipy.interpolate import PchipInterpolator

from aspiics.constants import FILTERS, default_config, filter_info
from aspiics.exceptions import AspiicsUserWarning, CalibrationError

__all__ = [
    "DEFAULT_FLAT_MAP",
    "ENV_VAR",
    "CalibrationArchive",
    "CalibrationSet",
    "NonlinearityTable",
    "Release",
    "find_releases",
    "open_calibration",
]

log = logging.getLogger(__name__)

#: Environment variable naming a calibration release, a folder of releases or a JSON config.
ENV_VAR = "ASPIICS_CALIBRATION_DIR"

#: Flat-field file suffix per filter (in-flight naming: P1 = Polarizer 60, P2 = Polarizer 0,
#: P3 = Polarizer 120; SPEC §4). Override with ``CalibrationSet(..., flat_map={...})``.
DEFAULT_FLAT_MAP = {f.name: f.flat_suffix for f in FILTERS.values()}

_RELEASE_RE = re.compile(r"^calibration_data_(\d{14})_(\d{14})$")
_CONFIG_NAME = "l2_config.json"
_FILES = {
    "bias_A": "bias_A.fits",
    "bias_B": "bias_B.fits",
    "dark_A2": "dark_A2.fits",
    "dark_B2": "dark_B2.fits",
    "dark_C2": "dark_C2.fits",
    "nonlin": "detector_nonlin.fits",
    "hotpixel": "hotpixels_list.fits",
    "vign_polar_fit": "vign_polar_fit.fits",
    "unusual": "unusual_list.fits",
}
# Which folder key of the reference config holds which file.
_FOLDER_OF = {
    "bias_A": "bias",
    "bias_B": "bias",
    "dark_A2": "dark_current",
    "dark_B2": "dark_current",
    "dark_C2": "dark_current",
    "vign_polar_fit": "vign",
    "unusual": "hotpixel",
}
_UNITS_DN = {"dn", "adu", "count", "counts"}
_UNITS_E = {"electron", "electrons", "e", "e-", "el", "el."}
_CONV_TOLERANCE = 0.10

# Physical units of the scalar constants (the reference config gives them as strings).
APHOT_UNIT = u.DN / u.s  # per MSB
MSB_PHOTON_UNIT = u.ph / (u.s * u.cm**2 * u.sr)  # per MSB
CONV_PHO_UNIT = u.DN * u.cm**2 * u.sr / u.ph
CONV_WAT_UNIT = u.DN * u.m**2 * u.sr / u.J
CONV_ERG_UNIT = u.DN * u.cm**2 * u.sr / u.erg


def _read_fits(path):
    """Read HDU 0 of a calibration FITS file; return ``(data, header)`` (module level so tests can count)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            data = hdul[0].data
            header = hdul[0].header.copy()
            if data is None:
                raise ValueError("HDU 0 holds no data")
            if data.dtype.byteorder not in ("=", "|") and data.dtype.kind == "f":
                # FITS is big-endian: swap the bytes in place instead of keeping two copies.
                data = data.byteswap(inplace=True).view(data.dtype.newbyteorder("="))
            else:
                data = np.array(data)
    except CalibrationError:
        raise
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError... on corrupt files
        raise CalibrationError(
            f"calibration file {path} is unreadable or corrupt ({exc}); replace it with a fresh copy "
            "of the calibration release"
        ) from exc
    return data, header


def _parse_date(date):
    if date is None:
        return None
    if isinstance(date, datetime):
        return date.replace(tzinfo=None)
    if isinstance(date, str):
        try:
            return datetime.fromisoformat(date.strip().rstrip("Z")).replace(tzinfo=None)
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ERFA 'dubious year' for dates beyond the leap-second table
            return Time(date).to_datetime().replace(tzinfo=None)
    except Exception as exc:
        raise CalibrationError(f"cannot interpret the observation date {date!r} ({exc})") from exc


@dataclass(frozen=True)
class Release:
    """
    One calibration release folder and its validity interval.

    Attributes
    ----------
    path : `pathlib.Path`
        The folder ``calibration_data_<from>_<to>``.
    valid_from, valid_to : `datetime.datetime`
        Validity interval, ``valid_from <= DATE-OBS < valid_to``.
    """

    path: Path
    valid_from: datetime
    valid_to: datetime

    @classmethod
    def from_path(cls, path):
        """Parse the validity interval from a release folder name; None if the name does not match."""
        path = Path(path)
        match = _RELEASE_RE.match(path.name)
        if match is None:
            return None
        try:
            start, stop = (datetime.strptime(g, "%Y%m%d%H%M%S") for g in match.groups())
        except ValueError:
            return None
        return cls(path, start, stop)

    def covers(self, date):
        """True if ``date`` lies in ``[valid_from, valid_to)``."""
        date = _parse_date(date)
        return self.valid_from <= date < self.valid_to


def find_releases(parent):
    """
    List the calibration releases found directly in a folder.

    Parameters
    ----------
    parent : path-like
        A folder holding ``calibration_data_<from>_<to>`` sub-folders.

    Returns
    -------
    list of `Release`
        Sorted by ``valid_from``.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    found = [Release.from_path(p) for p in parent.iterdir() if p.is_dir()]
    return sorted((r for r in found if r is not None), key=lambda r: r.valid_from)


def _select_release(parent, date):
    releases = find_releases(parent)
    if not releases:
        raise CalibrationError(
            f"no calibration_data_<from>_<to> release folder in {parent}; point calibration= (or "
            f"{ENV_VAR}) to a calibration release or to the folder holding the releases"
        )
    if date is None:
        if len(releases) == 1:
            return releases[0]
        raise CalibrationError(
            f"{parent} holds {len(releases)} calibration releases; pass the observation date "
            "(date=DATE-OBS) to choose one, or point calibration= to one release folder"
        )
    when = _parse_date(date)
    matching = [r for r in releases if r.covers(when)]
    if not matching:
        spans = ", ".join(r.path.name for r in releases)
        raise CalibrationError(
            f"no calibration release in {parent} is valid at {when.isoformat()} (found: {spans}); "
            "download the release covering this date"
        )
    # Several overlapping releases: take the most recent one.
    return matching[-1]


def _is_release_folder(path):
    names = {p.name.lower() for p in path.iterdir()}
    return "bias_a.fits" in names or _CONFIG_NAME in names or Release.from_path(path) is not None


class NonlinearityTable:
    """
    The detector response table and its inverse.

    Parameters
    ----------
    linear, measured : array-like
        The linear (true) signal and the measured signal, in electrons, one value per table point.
    source : str, optional
        Where the table came from (for messages).

    Notes
    -----
    The inverse (measured → linear) is a monotone cubic interpolant (`scipy.interpolate.PchipInterpolator`)
    through the table after sorting it by measured signal and dropping points that do not increase
    strictly in both columns (a monotone spline cannot overshoot, unlike the reference's
    ``splrep``; on the release tables both agree to < 0.01 e⁻ inside the range). Below the table's
    first point the inverse is extended linearly with the end slope; above the last measured point
    the pixel is saturated. For speed, `linearize` evaluates the spline once on a uniform grid of
    ``grid_size`` points over the measured range and interpolates linearly in that grid (error
    < 1e-4 e⁻ on the release table); ``exact=True`` evaluates the spline itself.
    """

    def __init__(self, linear, measured, *, source="<array>", grid_size=65537):
        linear = np.asarray(linear, dtype=np.float64).ravel()
        measured = np.asarray(measured, dtype=np.float64).ravel()
        if linear.shape != measured.shape or linear.size < 4:
            raise CalibrationError(
                f"non-linearity table {source} must have two rows of equal length >= 4, got "
                f"{linear.shape} and {measured.shape}; use the detector_nonlin.fits of a calibration release"
            )
        good = np.isfinite(linear) & np.isfinite(measured)
        linear, measured = linear[good], measured[good]
        order = np.argsort(measured, kind="stable")
        linear, measured = linear[order], measured[order]
        # keep a strictly increasing subsequence in both columns
        keep = np.ones(measured.size, dtype=bool)
        last_m, last_l = measured[0], linear[0]
        for i in range(1, measured.size):  # 1000 points: a loop over the table, not over pixels
            if measured[i] > last_m and linear[i] > last_l:
                last_m, last_l = measured[i], linear[i]
            else:
                keep[i] = False
        if keep.sum() < 4:
            raise CalibrationError(
                f"non-linearity table {source} is not monotonic enough to be inverted; check the file"
            )
        if not keep.all():
            log.info("non-linearity table %s: dropped %d non-increasing points", source, (~keep).sum())
        self.linear = linear[keep]
        self.measured = measured[keep]
        self.source = source
        self._spline = PchipInterpolator(self.measured, self.linear, extrapolate=False)
        self._slope0 = float(self._spline.derivative()(self.measured[0]))
        grid = np.linspace(self.measured[0], self.measured[-1], grid_size)
        lut = self._spline(grid)
        lut[0], lut[-1] = self.linear[0], self.linear[-1]
        self._lut = lut.astype(np.float32)
        self._dlut = np.append(np.diff(lut), 0.0).astype(np.float32)
        self._scale = (grid_size - 1) / (self.measured[-1] - self.measured[0])

    @property
    def max_measured(self):
        """Largest measured signal of the table (electrons): above it a pixel is saturated."""
        return float(self.measured[-1])

    def linearize(self, measured, *, exact=False):
        """
        Map measured signal to linear signal.

        Parameters
        ----------
        measured : `numpy.ndarray`
            Measured signal, electrons (NaN allowed).
        exact : bool, optional
            Evaluate the spline itself instead of the fine look-up grid.

        Returns
        -------
        linear : `numpy.ndarray` (float32)
            Linear signal; values above the table are clipped to the table's last linear value.
        beyond : `numpy.ndarray` (bool)
            True where the measured signal exceeds the table's measured range (saturated).
        """
        x = np.asarray(measured, dtype=np.float32)
        out = np.empty(x.shape, dtype=np.float32)
        beyond = np.empty(x.shape, dtype=bool)
        flat_x, flat_out, flat_beyond = x.reshape(-1), out.reshape(-1), beyond.reshape(-1)
        chunk = 1 << 18  # bounded temporaries on 2048² frames
        for i0 in range(0, flat_x.size, chunk):
            sl = slice(i0, i0 + chunk)
            flat_out[sl], flat_beyond[sl] = self._linearize_1d(flat_x[sl], exact)
        return out, beyond

    def _linearize_1d(self, x, exact):
        m0, m1 = self.measured[0], self.measured[-1]
        nan = np.isnan(x)
        beyond = x > np.float32(m1)
        if exact:
            out = self._spline(np.clip(x, m0, m1)).astype(np.float32)
        else:
            pos = x - np.float32(m0)
            pos *= np.float32(self._scale)
            np.clip(pos, 0, self._lut.size - 1, out=pos)
            pos[nan] = 0
            idx = pos.astype(np.int32)
            pos -= idx
            out = np.take(self._dlut, idx)
            out *= pos
            out += np.take(self._lut, idx)
        below = x < np.float32(m0)
        if below.any():
            out[below] = self.linear[0] + self._slope0 * (x[below] - m0)
        out[beyond] = self.linear[-1]
        out[nan] = np.nan
        return out, beyond


class CalibrationSet:
    """
    Constants and arrays of one ASPIICS calibration release.

    Parameters
    ----------
    source : path-like, optional
        One of: a release folder ``calibration_data_<from>_<to>`` (scalars from its
        ``l2_config.json`` when present, else the release-1.0 defaults); a parent folder holding
        several releases (the one valid at ``date`` is used); a JSON file in the reference
        ``l2_config.json`` format (file paths relative to the JSON's folder, or absolute). If None,
        the environment variable ``ASPIICS_CALIBRATION_DIR`` is read (at call time).
    date : str, `~datetime.datetime` or `~astropy.time.Time`, optional
        Observation date (DATE-OBS) used to choose among several releases.
    flat_map : dict, optional
        Override of the flat-field file suffix per filter, e.g. ``{'Polarizer 0': 'P1'}``
        (keys: filter names or codes; values: suffixes or full file names). Default: in-flight
        naming `DEFAULT_FLAT_MAP`.
    config : dict, optional
        Scalar constants in the reference format (``{'calib_data': {...}}``) that override those
        read from the source (and the release-1.0 defaults).

    Raises
    ------
    aspiics.exceptions.CalibrationError
        If no source is given and the environment variable is unset, if the source does not exist,
        or if no release matches ``date``.

    Notes
    -----
    Arrays are loaded on first use as float32 and cached on the instance (`files_read` lists the
    files read, once each). The instance is not thread-safe while it is filling its cache: call
    `preload` before sharing it between threads.
    """

    def __init__(self, source=None, *, date=None, flat_map=None, config=None):
        if source is None:
            source = os.environ.get(ENV_VAR)
            if not source:
                raise CalibrationError(
                    "no calibration data given: pass calibration=PATH (a calibration release folder, a "
                    "folder "
                    f"of releases or an l2_config.json) or set the environment variable {ENV_VAR}"
                )
            log.info("calibration from %s=%s", ENV_VAR, source)
        path = Path(source).expanduser()
        if not path.exists():
            raise CalibrationError(
                f"calibration path {path} does not exist; pass an existing calibration release folder or "
                "l2_config.json"
            )
        self.release = None
        self.config_path = None
        loaded = {}
        if path.is_file():
            self.config_path = path
            loaded = self._load_json(path)
            base = path.parent
            self.folders = self._folders_from_config(loaded, base, default=base)
        else:
            if not _is_release_folder(path) and find_releases(path):
                path = _select_release(path, date).path
            self.release = Release.from_path(path)
            cfg = path / _CONFIG_NAME
            if cfg.is_file():
                self.config_path = cfg
                loaded = self._load_json(cfg)
            # in a release folder, the files are those of the folder
            self.folders = {
                key: path for key in ("bias", "dark_current", "flat", "vign", "angle", "hotpixel")
            }
            self.folders.update(
                {"nonlin": path / _FILES["nonlin"], "hotpixel_file": path / _FILES["hotpixel"]}
            )
        self.path = path
        if self.release is not None and date is not None and not self.release.covers(date):
            warnings.warn(
                f"calibration release {path.name} is not valid at {date}; use the release covering the "
                "observation date",
                AspiicsUserWarning,
                stacklevel=2,
            )
        calib = default_config()["calib_data"]
        for extra in (loaded.get("calib_data", {}), (config or {}).get("calib_data", {})):
            for key, value in extra.items():
                if isinstance(value, dict) and isinstance(calib.get(key), dict):
                    calib[key] = {**calib[key], **value}
                else:
                    calib[key] = value
        self.constants = calib
        self.flat_map = dict(DEFAULT_FLAT_MAP)
        for key, value in (flat_map or {}).items():
            self.flat_map[filter_info(key).name] = value
        self._cache = {}
        self._listing = {}
        self._conv_warned = set()
        self.shape = None
        #: Paths of the calibration files read so far (each once).
        self.files_read = []

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_date(cls, parent, date, **kwargs):
        """
        The release in ``parent`` valid at ``date``.

        Parameters
        ----------
        parent : path-like
            Folder holding ``calibration_data_<from>_<to>`` releases.
        date : str, `~datetime.datetime` or `~astropy.time.Time`
            Observation date (DATE-OBS).
        **kwargs
            Passed to `CalibrationSet`.

        Returns
        -------
        `CalibrationSet`

        Raises
        ------
        aspiics.exceptions.CalibrationError
            If no release covers ``date``.
        """
        return cls(_select_release(Path(parent), date).path, **kwargs)

    @staticmethod
    def _load_json(path):
        try:
            with Path(path).open(encoding="utf-8") as fh:
                content = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CalibrationError(
                f"calibration config {path} is unreadable ({exc}); fix or replace it"
            ) from exc
        if not isinstance(content, dict) or not isinstance(content.get("calib_data"), dict):
            raise CalibrationError(
                f"calibration config {path} has no 'calib_data' object; "
                "use the reference l2_config.json format"
            )
        return content

    @staticmethod
    def _folders_from_config(content, base, default):
        calib = content["calib_data"]

        def resolve(key, fallback):
            value = calib.get(key)
            if value is None:
                return fallback
            p = Path(value).expanduser()
            return p if p.is_absolute() else (base / p)

        folders = {key: resolve(key, default) for key in ("bias", "dark_current", "flat", "vign")}
        folders["angle"] = resolve("angle", folders["flat"])
        folders["nonlin"] = resolve("nonlin", default / _FILES["nonlin"])
        folders["hotpixel_file"] = resolve("hotpixel", default / _FILES["hotpixel"])
        folders["hotpixel"] = folders["hotpixel_file"].parent
        return folders

    def __repr__(self):
        return f"<CalibrationSet {self.path} VERS_CAL={self.version!r}>"

    # ------------------------------------------------------------------ scalar constants
    @property
    def version(self):
        """Version string of the calibration (``VERS_CAL``)."""
        return str(self.constants.get("VERS_CAL", "unknown"))

    @property
    def gain(self):
        """Detector gain, DN per electron (float)."""
        return float(self.constants["gain"])

    @property
    def read_noise(self):
        """Read noise, DN (float)."""
        return float(self.constants["readout_noise"])

    @property
    def plate_scale(self):
        """Calibrated plate scale, arcsec per pixel (float)."""
        return float(self.constants["pixscale"])

    @property
    def r_io(self):
        """Internal occulter radius, mm (float)."""
        return float(self.constants["R_IO"])

    @property
    def eta1(self):
        """Threshold (in σ) of the first bad-pixel pass (reference: 15)."""
        return float(self.constants.get("eta1", 15.0))

    @property
    def eta2(self):
        """Threshold (in σ) of the second bad-pixel pass (reference: 20)."""
        return float(self.constants.get("eta2", 20.0))

    def _filter_constants(self, filter):
        name = filter_info(filter).name
        values = self.constants.get(name)
        if not isinstance(values, dict):
            raise CalibrationError(
                f"calibration {self.config_path or self.path} has no constants for filter {name!r}; "
                "add them to the l2_config.json"
            )
        return name, values

    def _filter_value(self, filter, key):
        name, values = self._filter_constants(filter)
        if key not in values:
            raise CalibrationError(
                f"calibration {self.config_path or self.path} lacks {key!r} for filter {name!r}; "
                "add it to the l2_config.json"
            )
        return float(values[key])

    def aphot(self, filter):
        """
        Radiometric sensitivity ``Aphot`` of a filter.

        Parameters
        ----------
        filter : str or `~aspiics.constants.FilterInfo`

        Returns
        -------
        float
            DN s⁻¹ per MSB.
        """
        return self._filter_value(filter, "Aphot")

    def msb(self, filter):
        """Photon radiance of 1 MSB in the passband of ``filter`` (photon s⁻¹ cm⁻² sr⁻¹, float)."""
        return self._filter_value(filter, "MSB")

    def photon_energy(self, filter):
        """Mean photon energy in the passband of ``filter`` (J, float)."""
        return self._filter_value(filter, "Photon_energy")

    def io_center(self, filter):
        """
        Centre of the internal occulter shadow for ``filter``.

        Returns
        -------
        tuple of float
            ``(x, y)`` in 0-based pixels (add 1 for the FITS keywords ``X_IO``/``Y_IO``).
        """
        return self._filter_value(filter, "x_IO"), self._filter_value(filter, "y_IO")

    def conversion_factors(self, filter):
        """
        Conversion factors from DN s⁻¹ to physical radiance for ``filter``.

        Parameters
        ----------
        filter : str or `~aspiics.constants.FilterInfo`

        Returns
        -------
        dict
            ``{'CONV_PHO': Quantity [DN cm2 sr / ph], 'CONV_WAT': Quantity [DN m2 sr / J],
            'CONV_ERG': Quantity [DN cm2 sr / erg]}``.

        Warns
        -----
        aspiics.exceptions.AspiicsUserWarning
            Once per filter and instance, if the configured ``CONV_PHO`` differs from ``Aphot/MSB``
            by more than 10 % (release 1.0: Polarizer 0 and 60 are 10× off); the consistent value
            ``Aphot/MSB`` is used.

        Notes
        -----
        Direction, checked dimensionally: ``Aphot`` [DN s⁻¹ MSB⁻¹] / ``MSB`` [ph s⁻¹ cm⁻² sr⁻¹ MSB⁻¹]
        = DN cm² sr ph⁻¹, so a signal ``S`` in DN s⁻¹ is a photon radiance ``S / CONV_PHO``
        (ph s⁻¹ cm⁻² sr⁻¹). ``CONV_WAT = CONV_PHO / E_ph / 1e4`` has units DN m² sr J⁻¹ and
        ``CONV_ERG = CONV_PHO / (E_ph · 1e7)`` DN cm² sr erg⁻¹: again radiance = (DN s⁻¹) / CONV
        (in W m⁻² sr⁻¹ and erg s⁻¹ cm⁻² sr⁻¹). The reference's unit labels for CONV_WAT and
        CONV_ERG ("W s m⁻² sr⁻¹ DN⁻¹") describe the inverse factor; the numbers are as here.
        """
        name, values = self._filter_constants(filter)
        derived = self.aphot(name) / self.msb(name)
        configured = values.get("CONV_PHO")
        if configured is not None and abs(float(configured) / derived - 1) > _CONV_TOLERANCE:
            if name not in self._conv_warned:
                self._conv_warned.add(name)
                warnings.warn(
                    f"calibration {self.config_path or self.path}: CONV_PHO={float(configured):.3g} "
                    f"for {name!r} is inconsistent with Aphot/MSB={derived:.3g} "
                    f"(off by {float(configured) / derived:.2g}x); "
                    "using Aphot/MSB. Fix CONV_PHO in the l2_config.json to silence this warning.",
                    AspiicsUserWarning,
                    stacklevel=2,
                )
        conv_pho = derived * CONV_PHO_UNIT
        e_ph = self.photon_energy(name) * u.J / u.ph
        conv_wat = (conv_pho / e_ph).to(CONV_WAT_UNIT)
        conv_erg = (conv_pho / e_ph).to(CONV_ERG_UNIT)
        return {"CONV_PHO": conv_pho, "CONV_WAT": conv_wat, "CONV_ERG": conv_erg}

    # ------------------------------------------------------------------ files
    def _find(self, folder, name):
        """Find ``name`` in ``folder``, case-insensitively."""
        folder = Path(folder)
        if folder not in self._listing:
            try:
                self._listing[folder] = {p.name.lower(): p for p in folder.iterdir()}
            except OSError:
                self._listing[folder] = {}
        found = self._listing[folder].get(name.lower())
        if found is None:
            raise CalibrationError(
                f"calibration file {name} not found in {folder}: the calibration release is incomplete; "
                "download the complete release (or fix the path in the l2_config.json)"
            )
        return found

    def _file(self, key):
        if key == "nonlin":
            return self._find(self.folders["nonlin"].parent, self.folders["nonlin"].name)
        if key == "hotpixel":
            return self._find(self.folders["hotpixel_file"].parent, self.folders["hotpixel_file"].name)
        if key.startswith("flat_"):
            return self._find(self.folders["flat"], key[len("flat_") :])
        if key.startswith("angle_"):
            return self._find(self.folders["angle"], key[len("angle_") :])
        return self._find(self.folders[_FOLDER_OF[key]], _FILES[key])

    def _load(self, key, *, image=True):
        if key in self._cache:
            return self._cache[key]
        path = self._file(key)
        data, header = _read_fits(path)
        self.files_read.append(str(path))
        if image:
            if data.ndim != 2:
                raise CalibrationError(
                    f"calibration file {path} holds a {data.ndim}-D array, expected a 2-D image; replace it"
                )
            if self.shape is None:
                self.shape = data.shape
            elif data.shape != self.shape:
                raise CalibrationError(
                    f"calibration file {path} has shape {data.shape}, other files of the release have "
                    f"{self.shape}; the release is inconsistent: replace the file"
                )
            data = np.ascontiguousarray(data, dtype=np.float32)
        log.debug("read calibration file %s", path)
        self._cache[key] = (data, header)
        return self._cache[key]

    def file_path(self, key):
        """
        Path of a calibration file.

        Parameters
        ----------
        key : str
            ``'bias_A'``, ``'bias_B'``, ``'dark_A2'``, ``'dark_B2'``, ``'dark_C2'``, ``'nonlin'``,
            ``'hotpixel'``, ``'vign_polar_fit'``, ``'unusual'``, ``'flat:<filter>'`` or ``'angle:<filter>'``.

        Returns
        -------
        `pathlib.Path`
        """
        if key.startswith("flat:"):
            return self._file(self._flat_key(key[5:]))
        if key.startswith("angle:"):
            return self._file(self._angle_key(key[6:]))
        return self._file(key)

    def check_shape(self, shape, frame="the frame"):
        """
        Check that a frame matches the calibration arrays.

        Parameters
        ----------
        shape : tuple of int
        frame : str
            Name of the frame (for the message).

        Raises
        ------
        aspiics.exceptions.CalibrationError
            If the shapes differ.
        """
        if self.shape is None:
            self._load("bias_A")
        if tuple(shape) != tuple(self.shape):
            raise CalibrationError(
                f"{frame} has shape {tuple(shape)} but the calibration arrays in {self.path} have "
                f"{tuple(self.shape)} (e.g. {self.file_path('bias_A').name}); use the calibration release "
                "made for this detector format"
            )

    # ------------------------------------------------------------------ arrays
    def bias(self, temperature, rows=None):
        """
        Bias at a detector temperature: ``A + B·T``.

        Parameters
        ----------
        temperature : float
            APS_TEMP, °C.
        rows : slice, optional
            Evaluate only these rows (the pipeline works in strips to keep its memory small).

        Returns
        -------
        `numpy.ndarray` (float32)
            DN (a new array).
        """
        rows = slice(None) if rows is None else rows
        a, b = self._load("bias_A")[0][rows], self._load("bias_B")[0][rows]
        out = b * np.float32(temperature)
        out += a
        return out

    def dark(self, temperature, rows=None):
        """
        Dark current at a detector temperature: ``A + B·T + C·T²``.

        Parameters
        ----------
        temperature : float
            APS_TEMP, °C.
        rows : slice, optional
            Evaluate only these rows.

        Returns
        -------
        `numpy.ndarray` (float32)
            DN s⁻¹ (a new array).
        """
        rows = slice(None) if rows is None else rows
        a, b, c = (self._load(key)[0][rows] for key in ("dark_A2", "dark_B2", "dark_C2"))
        t = np.float32(temperature)
        out = c * t
        out += b
        out *= t
        out += a
        return out

    @property
    def nonlinearity(self):
        """
        The non-linearity table converted to electrons.

        Returns
        -------
        `NonlinearityTable`

        Raises
        ------
        aspiics.exceptions.CalibrationError
            If the file is not a (2, N) table or its UNITS is neither 'DN' nor 'electron'.
        """
        if "nonlin_table" not in self._cache:
            data, header = self._load("nonlin", image=False)
            path = self._file("nonlin")
            if data.ndim != 2 or data.shape[0] != 2:
                raise CalibrationError(
                    f"non-linearity file {path} holds shape {data.shape}, expected (2, N) "
                    "(row 0 linear, row 1 measured); replace it"
                )
            units = str(header.get("UNITS", "")).strip().lower()
            if units in _UNITS_DN:
                factor = 1.0 / self.gain
            elif units in _UNITS_E:
                factor = 1.0
            else:
                raise CalibrationError(
                    f"non-linearity file {path} has UNITS={header.get('UNITS')!r}; expected 'DN' or "
                    "'electron': fix the header"
                )
            log.info("non-linearity table %s in %s, converted to electrons", path.name, units)
            table = NonlinearityTable(
                data[0].astype(np.float64) * factor, data[1].astype(np.float64) * factor, source=str(path)
            )
            self._cache["nonlin_table"] = table
        return self._cache["nonlin_table"]

    def _flat_key(self, filter):
        name = filter_info(filter).name
        value = str(self.flat_map[name])
        fname = value if value.lower().endswith(".fits") else f"flatfield_{value}.fits"
        return "flat_" + fname

    def flat(self, filter):
        """
        Flat field of a filter (dimensionless, float32, cached).

        The file is ``flatfield_<suffix>.fits`` matched case-insensitively, with the suffix from
        `flat_map` (in flight: P1 = Polarizer 60, P2 = Polarizer 0, P3 = Polarizer 120); the file
        used is logged.

        Parameters
        ----------
        filter : str or `~aspiics.constants.FilterInfo`

        Returns
        -------
        `numpy.ndarray` (float32)
            Read-only view of the cached array.

        Raises
        ------
        aspiics.exceptions.CalibrationError
            If the file is missing or corrupt, or holds non-positive values everywhere.
        """
        key = self._flat_key(filter)
        first = key not in self._cache
        data, _ = self._load(key)
        if first:
            log.info("flat field for %s: %s", filter_info(filter).name, self._file(key))
            data.flags.writeable = False
            if not np.any(data > 0):
                raise CalibrationError(f"flat field {self._file(key)} has no positive value; replace it")
        return data

    def _angle_key(self, filter):
        info = filter_info(filter)
        if not info.is_polarizer:
            raise CalibrationError(f"filter {info.name!r} is not a polarizer: it has no angle map")
        return f"angle_aspiics_{info.code}_angle.fits"

    def angle_map(self, filter):
        """
        Per-pixel polarizer orientation (degrees, detector frame, float32, cached).

        Parameters
        ----------
        filter : str or `~aspiics.constants.FilterInfo`
            A polarizer (file ``aspiics_<p1|p2|p3>_angle.fits`` by in-flight code).

        Returns
        -------
        `numpy.ndarray` (float32)
        """
        data, _ = self._load(self._angle_key(filter))
        return data

    @property
    def hot_pixels(self):
        """
        Listed hot pixels.

        Returns
        -------
        tuple of `numpy.ndarray`
            ``(rows, cols)`` 0-based integer indices (usable as ``image[rows, cols]``).
        """
        if "hot_idx" not in self._cache:
            data, _ = self._load("hotpixel", image=False)
            path = self._file("hotpixel")
            data = np.asarray(data)
            if data.ndim != 2 or data.shape[0] != 2:
                raise CalibrationError(
                    f"hot-pixel list {path} has shape {data.shape}, expected (2, N); replace it"
                )
            x = data[0].astype(np.intp)
            y = data[1].astype(np.intp)
            self._cache["hot_idx"] = (y, x)
        return self._cache["hot_idx"]

    @property
    def vign_polar_fit(self):
        """``(angle_deg, io_radius_factor)`` from ``vign_polar_fit.fits`` (float64 arrays)."""
        data, _ = self._load("vign_polar_fit", image=False)
        if data.ndim != 2 or data.shape[0] != 2:
            raise CalibrationError(
                f"vignetting fit {self._file('vign_polar_fit')} has shape {data.shape}, "
                "expected (2, N); replace it"
            )
        return np.asarray(data[0], dtype=np.float64), np.asarray(data[1], dtype=np.float64)

    def vignetting(self, filter, shape=None):
        """
        Vignetting model for ``filter`` (float32, cached per filter and shape).

        Computed by `aspiics.optics.vignetting` from the IO centre of the filter, the plate scale,
        ``R_IO`` and the polar fit of the IO radius.

        Parameters
        ----------
        filter : str or `~aspiics.constants.FilterInfo`
        shape : tuple of int, optional
            Default: the shape of the calibration arrays.

        Returns
        -------
        `numpy.ndarray` (float32)
            Transmission relative to the unvignetted field, 0–1.
        """
        from aspiics import optics

        if shape is None:
            if self.shape is None:
                self._load("bias_A")
            shape = self.shape
        name = filter_info(filter).name
        key = ("vignetting", name, tuple(shape))
        if key not in self._cache:
            x_io, y_io = self.io_center(name)
            vign = optics.vignetting(
                tuple(shape),
                x_io,
                y_io,
                plate_scale_arcsec=self.plate_scale,
                r_io_mm=self.r_io,
                polar_fit=self.vign_polar_fit,
            )
            vign = np.ascontiguousarray(vign, dtype=np.float32)
            vign.flags.writeable = False
            self._cache[key] = vign
        return self._cache[key]

    @property
    def unusual_pixels(self):
        """``(rows, cols)`` of the pixels with occasional +20–40 DN (``unusual_list.fits``; unused)."""
        data, _ = self._load("unusual", image=False)
        return np.asarray(data[1], dtype=np.intp), np.asarray(data[0], dtype=np.intp)

    def preload(self, filters=None):
        """
        Read every array needed to calibrate ``filters`` now (e.g. before sharing between threads).

        Parameters
        ----------
        filters : iterable of str, optional
            Default: all six filters.

        Returns
        -------
        `CalibrationSet`
            ``self``.
        """
        for key in ("bias_A", "bias_B", "dark_A2", "dark_B2", "dark_C2"):
            self._load(key)
        _ = self.nonlinearity
        _ = self.hot_pixels
        for name in filters if filters is not None else FILTERS:
            self.flat(name)
        return self


class CalibrationArchive:
    """
    A folder of calibration releases, each loaded once and cached.

    Use one archive for a batch spanning several releases: each release is a `CalibrationSet`
    created on first use and kept.

    Parameters
    ----------
    parent : path-like, optional
        Folder holding ``calibration_data_<from>_<to>`` releases. Default: ``ASPIICS_CALIBRATION_DIR``.
    **kwargs
        Passed to every `CalibrationSet` (``flat_map``, ``config``).
    """

    def __init__(self, parent=None, **kwargs):
        if parent is None:
            parent = os.environ.get(ENV_VAR)
            if not parent:
                raise CalibrationError(f"no calibration folder given: pass one or set {ENV_VAR}")
        self.parent = Path(parent).expanduser()
        self.kwargs = kwargs
        self._sets = {}

    def for_date(self, date):
        """
        The calibration set valid at ``date``.

        Parameters
        ----------
        date : str, `~datetime.datetime` or `~astropy.time.Time`

        Returns
        -------
        `CalibrationSet`
        """
        release = _select_release(self.parent, date)
        if release.path not in self._sets:
            self._sets[release.path] = CalibrationSet(release.path, **self.kwargs)
        return self._sets[release.path]


def open_calibration(source=None, **kwargs):
    """
    Open calibration data for a batch of frames.

    Parameters
    ----------
    source : path-like or None, optional
        A release folder or an ``l2_config.json`` (one `CalibrationSet`), or a folder holding
        several ``calibration_data_<from>_<to>`` releases (a `CalibrationArchive` that picks the
        release valid at each frame's DATE-OBS). Default: ``ASPIICS_CALIBRATION_DIR``.
    **kwargs
        Passed to `CalibrationSet` (``flat_map``, ``config``).

    Returns
    -------
    `CalibrationSet` or `CalibrationArchive`

    Raises
    ------
    aspiics.exceptions.CalibrationError
        If the source is missing.
    """
    if source is None:
        source = os.environ.get(ENV_VAR)
        if not source:
            raise CalibrationError(f"no calibration data given: pass --calibration PATH or set {ENV_VAR}")
    path = Path(source).expanduser()
    if not path.exists():
        raise CalibrationError(
            f"calibration path {path} does not exist; pass a release folder or l2_config.json"
        )
    if path.is_dir() and not _is_release_folder(path) and find_releases(path):
        return CalibrationArchive(path, **kwargs)
    return CalibrationSet(path, **kwargs)
