"""
The ASPIICS map source for sunpy.

`ASPIICSMap` is registered with `sunpy.map.Map` when ``aspiics`` is imported, so that::

    >>> import aspiics  # doctest: +SKIP
    >>> m = sunpy.map.Map("aspiics_wb_l1_1320404D000212_20250812T181424.fits")  # doctest: +SKIP

returns an `ASPIICSMap` for ASPIICS level-1, level-2 and level-3 files, and only for them.
"""

import logging

import astropy.units as u
import numpy as np
from astropy.nddata import StdDevUncertainty
from sunpy.map import GenericMap
from sunpy.map.mapbase import PixelPair

from aspiics.constants import BLANK_DN, DETECTOR_SHAPE, default_config, filter_info
from aspiics.exceptions import FilenameError, HeaderError
from aspiics.io import L3_PRODUCT_CODES, parse_filename
from aspiics.units import MSB
from aspiics.visualization import CMAP_NAMES, coronal_norm

__all__ = ["ASPIICSMap"]

log = logging.getLogger(__name__)

_OBSERVATORY_NAMES = {"proba-3", "proba3", "proba 3", "proba_3"}
_PROD_CODES = {v: k for k, v in reversed(L3_PRODUCT_CODES.items())}


def _norm_text(value):
    return str(value).strip().lower() if value is not None else ""


class ASPIICSMap(GenericMap):
    """
    Proba-3 ASPIICS coronagraph image.

    ASPIICS (Association of Spacecraft for Polarimetric and Imaging Investigation of the Corona
    of the Sun) is the externally occulted coronagraph of ESA's Proba-3 formation-flying
    mission. The occulter spacecraft flies about 144 m in front of the coronagraph spacecraft,
    so that ASPIICS observes the corona from 1.1 to 3 solar radii with a 2048 × 2048 detector
    (2.8″ per pixel) through a wideband filter (536-566 nm), the Fe XIV 530.4 nm and He I D3
    587.7 nm lines and three polarizers.

    Data conventions (SPEC §2):

    * Level 1: raw detector counts (DN), integers. Missing pixels (tiles not telemetered) are
      marked in `mask` (their value is the FITS ``BLANK``, -32768); the data are never rescaled
      behind the user's back.
    * Levels 2 and 3: float brightness in mean solar brightness (MSB, `aspiics.units.MSB`);
      missing pixels are NaN, saturated pixels +Inf, and both are marked in `mask`.

    The non-standard ``CROTA`` keyword of ASPIICS headers is understood (the ``PCi_j`` matrix takes
    precedence when present), and the observer location comes from ``HGLN_OBS``, ``HGLT_OBS``
    and ``DSUN_OBS``: Proba-3 flies in a highly elliptical Earth orbit.

    References
    ----------
    * `ASPIICS data at the SIDC <https://www.sidc.be/proba-3/aspiics-data>`__
    * Zhukov, A. N., et al. 2025, "ASPIICS: the coronagraph of Proba-3", arXiv:2509.00253
    * Shestov, S. V., et al. 2021, A&A 652, A4
    """

    def __init__(self, data, header, **kwargs):
        data, mask = self._prepare_data(data, header, need_mask=kwargs.get("mask") is None)
        if mask is not None and kwargs.get("mask") is None:
            kwargs["mask"] = mask
        super().__init__(data, header, **kwargs)
        if self.processing_level == 1 and np.issubdtype(self.data.dtype, np.integer):
            # The data are the raw integers now: scaling keywords no longer apply to them.
            for key in ("bzero", "bscale"):
                self.meta.pop(key, None)
        self._nickname = "ASPIICS"
        code = self._plot_code()
        self.plot_settings["cmap"] = CMAP_NAMES.get(code, "aspiics_wb")
        if code == "pa":
            self.plot_settings["norm"] = None
            self.plot_settings["vmin"], self.plot_settings["vmax"] = -90, 90
        else:
            self.plot_settings["norm"] = coronal_norm(self.data)

    # ---------------------------------------------------------------------------------------
    # Data preparation

    @staticmethod
    def _prepare_data(data, header, need_mask=True):
        """
        Return (data, mask) following the ASPIICS conventions of each level.

        Level 1 holds raw detector integers (SPEC §2-3): when a file carries a non-trivial
        ``BZERO``/``BSCALE`` and astropy has applied it, the scaling is undone so the data are
        the raw integers again; ``BLANK`` pixels are masked.
        """
        data = np.asanyarray(data)
        level = _norm_text(header.get("level"))
        if not (np.issubdtype(data.dtype, np.integer) or level == "l1"):
            # Levels 2 and 3: NaN missing, +Inf saturated.
            return data, (~np.isfinite(data) if need_mask else None)
        blank = header.get("blank", BLANK_DN)
        bzero = header.get("bzero", 0) or 0
        bscale = header.get("bscale", 1) or 1
        floating = np.issubdtype(data.dtype, np.floating)
        nan = np.isnan(data) if floating else None
        if (bzero, bscale) != (0, 1) and (floating or np.issubdtype(data.dtype, np.unsignedinteger)):
            # astropy applied BZERO/BSCALE: go back to the raw integers.
            raw = np.rint((np.asarray(data, dtype=np.float64) - bzero) / bscale)
            if nan is not None:
                raw[nan] = blank
            dtype = np.int16 if raw.min() >= -32768 and raw.max() <= 32767 else np.int32
            data = raw.astype(dtype)
            log.info("ASPIICS L1: undid BZERO=%s, BSCALE=%s: the data are the raw integers", bzero, bscale)
        elif floating and np.all(data[~nan] == np.rint(data[~nan])):
            data = np.where(nan, blank, data).astype(np.int32)
        missing = data == blank
        if nan is not None and np.issubdtype(data.dtype, np.floating):
            missing |= nan
        return data, missing

    # ---------------------------------------------------------------------------------------
    # Registration

    @classmethod
    def is_datasource_for(cls, data, header, **kwargs):
        """
        Determine if the data-header pair is an ASPIICS image.

        True when ``INSTRUME`` (or ``DETECTOR``) is ASPIICS and, if the header names an
        observatory (``TELESCOP`` or ``OBSRVTRY``), that observatory is Proba-3. Case and
        spelling variants (``PROBA-3``, ``Proba3``) are accepted.
        """
        instrument = _norm_text(header.get("instrume")) or _norm_text(header.get("detector"))
        if instrument != "aspiics":
            return False
        observatories = {_norm_text(header.get(key)) for key in ("telescop", "obsrvtry")} - {""}
        return not observatories or bool(observatories & _OBSERVATORY_NAMES)

    # ---------------------------------------------------------------------------------------
    # sunpy metadata overrides

    @property
    def observatory(self):
        """Observatory name, ``'Proba-3'``."""
        return "Proba-3"

    @property
    def instrument(self):
        """Instrument name, ``'ASPIICS'``."""
        return "ASPIICS"

    @property
    def detector(self):
        """Detector name, ``'ASPIICS'``."""
        return "ASPIICS"

    @property
    def measurement(self):
        """The filter name (``FILTER``) or, for level-3 products, the product (``PROD_ID``)."""
        return self.meta.get("prod_id") or self.meta.get("filter", "")

    @property
    def wavelength(self):
        """Central wavelength of the filter, None if the filter is unknown."""
        info = self.filter
        return info.wavelength.to(u.nm) if info is not None else None

    @property
    def unit(self):
        """
        Unit of the data: DN for level 1, `~aspiics.units.MSB` for brightness, degrees for angles.
        """
        raw = self.meta.get("bunit")
        bunit = _norm_text(raw)
        if not bunit:
            return u.DN if self.processing_level == 1 else None
        known = {"msb": MSB, "dn": u.DN, "adu": u.DN, "counts": u.DN, "electron": u.electron,
                 "electrons": u.electron, "e-": u.electron, "deg": u.deg, "degree": u.deg}  # fmt: skip
        if bunit in known:
            return known[bunit]
        try:  # intermediate products such as 'DN / s' or 'W / (m2 sr)'
            return u.Unit(raw, parse_strict="raise")
        except ValueError:
            return super().unit

    @property
    def rsun_obs(self):
        """
        Angular radius of the Sun seen from the observer.

        From ``RSUN_ARC`` (the ASPIICS keyword) or ``RSUN_OBS``; otherwise computed from the
        observer distance.
        """
        value = self.meta.get("rsun_arc")
        if value is not None:
            return float(value) * u.arcsec
        return super().rsun_obs

    def _rotation_matrix_from_crota(self, crota_key="CROTA2"):
        # ASPIICS writes the roll as CROTA (no axis number); used only when there is no PC matrix.
        key = crota_key if crota_key in self.meta else "CROTA"
        return super()._rotation_matrix_from_crota(crota_key=key)

    @property
    def fits_header(self):
        """
        A `~astropy.io.fits.Header` of the metadata, without the non-standard ``CROTA``.

        ``CROTA`` makes `astropy.wcs.WCS` warn; the ``PCi_j`` matrix carries the same rotation. When
        the header has no PC matrix, the roll is written as the standard ``CROTA2``.
        """
        header = super().fits_header
        if "CROTA" in header:
            crota = header.pop("CROTA")
            if not any(key in header for key in ("PC1_1", "CD1_1", "CROTA2")):
                header["CROTA2"] = crota
        return header

    @property
    def processing_level(self):
        """Processing level as an integer (1, 2 or 3), from ``LEVEL`` ('L1', 'L2', 'L3')."""
        level = self.meta.get("level", self.meta.get("lvl_num"))
        if level is None:
            return None
        text = str(level).strip().upper().lstrip("L")
        try:
            return int(float(text))
        except ValueError:
            return None

    # ---------------------------------------------------------------------------------------
    # ASPIICS properties

    @property
    def filter(self):
        """
        The filter, as an `aspiics.constants.FilterInfo`.

        None when ``FILTER`` is absent or ``'Unknown'`` (``aspiics`` never guesses a filter).
        """
        name = self.meta.get("filter")
        if name is None or _norm_text(name) in ("", "unknown"):
            return None
        try:
            return filter_info(name)
        except HeaderError:
            return None

    @property
    def aps_temperature(self):
        """Detector (APS) temperature from ``APS_TEMP``, None when the header lacks it."""
        value = self.meta.get("aps_temp")
        return None if value is None else float(value) * u.deg_C

    def _parsed_filename(self):
        try:
            return parse_filename(self.meta.get("filename", ""))
        except FilenameError:
            return None

    @property
    def exposure_id(self):
        """The 14-character exposure ID from the file name (``FILENAME``), None for level 3."""
        parsed = self._parsed_filename()
        return parsed.identifier if parsed is not None and parsed.level != 3 else None

    @property
    def acquisition_id(self):
        """The acquisition ID shared by the exposures of one acquisition (see `aspiics.io`)."""
        parsed = self._parsed_filename()
        return parsed.acquisition_id if parsed is not None else None

    @property
    def is_polarizer(self):
        """True for frames taken through one of the three polarizers."""
        info = self.filter
        return bool(info is not None and info.is_polarizer)

    @property
    def polarizer_angle(self):
        """Nominal polarizer angle (``POLAR``, else from the filter); None for other filters."""
        if not self.is_polarizer:
            return None
        value = self.meta.get("polar")
        try:
            return float(value) * u.deg
        except (TypeError, ValueError):
            return self.filter.polarizer_angle

    @property
    def io_center(self):
        """
        Centre of the internal-occulter shadow on the detector, in 0-based pixels.

        From ``X_IO``/``Y_IO`` (1-based, written at level 2) when present, otherwise the
        calibration default of the filter (release 1.0), scaled to the frame size.
        """
        if "x_io" in self.meta and "y_io" in self.meta:
            return PixelPair((float(self.meta["x_io"]) - 1) * u.pix, (float(self.meta["y_io"]) - 1) * u.pix)
        info = self.filter
        calib = default_config()["calib_data"]
        entry = calib.get(info.name if info is not None else "Wideband")
        ny, nx = self.data.shape
        return PixelPair(
            entry["x_IO"] * nx / DETECTOR_SHAPE[1] * u.pix,
            entry["y_IO"] * ny / DETECTOR_SHAPE[0] * u.pix,
        )

    # ---------------------------------------------------------------------------------------
    # Files

    @classmethod
    def read(cls, path):
        """
        Read an ASPIICS FITS file, restoring the uncertainty and the mask (see `aspiics.io.read_map`).

        Parameters
        ----------
        path : str or path-like
            The file.

        Returns
        -------
        `ASPIICSMap`
        """
        from aspiics.io import read_map

        return read_map(path)

    def save(self, filepath, filetype="auto", hdu_type=None, overwrite=False, **kwargs):
        """
        Save the map; FITS files keep the uncertainty and the mask (see `aspiics.io.write_map`).

        FITS files are written atomically and never overwrite an existing file unless
        ``overwrite=True``. Other formats are handed to `sunpy.map.GenericMap.save`.

        Parameters
        ----------
        filepath : str or path-like
            Destination.
        filetype : str, optional
            ``'auto'`` (from the extension) or ``'fits'``.
        hdu_type : optional
            Passed to `sunpy.map.GenericMap.save` for non-default HDU types.
        overwrite : bool, optional
            Replace an existing file.
        **kwargs
            Passed to `sunpy.map.GenericMap.save` for other formats.
        """
        from aspiics.io import write_map

        name = str(filepath).lower()
        is_fits = filetype == "fits" or (filetype == "auto" and name.endswith((".fits", ".fit", ".fts")))
        if is_fits and hdu_type is None and not kwargs:
            return write_map(self, filepath, overwrite=overwrite)
        return super().save(filepath, filetype=filetype, hdu_type=hdu_type, overwrite=overwrite, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Resampling

    def reproject_to(self, target="sun", *, shape_out=None, order=3, **kwargs):
        """
        Resample the map onto another grid, keeping its class, mask, uncertainty and metadata.

        Unlike `sunpy.map.GenericMap.reproject_to`, which drops them, this keeps everything and
        uses `aspiics.resample.reproject_affine` (a NaN/Inf-safe prefiltered cubic spline). See
        `aspiics.composite.reproject_map`.

        Parameters
        ----------
        target : {'sun', 'longest'}, `~astropy.wcs.WCS`, header or `sunpy.map.GenericMap`, optional
            ``'sun'`` (default): the official level-3 grid, Sun centre at the image centre and solar
            north up; ``'longest'``: the map's own grid; or any WCS / sunpy map.
        shape_out : tuple of int, optional
            Output shape (needed for a bare WCS without ``array_shape``).
        order : int, optional
            Spline order (3: cubic).
        **kwargs
            Passed to `aspiics.resample.reproject_affine`.

        Returns
        -------
        `ASPIICSMap`
        """
        from aspiics.composite import reproject_map

        return reproject_map(self, target, shape_out=shape_out, order=order, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Level-2 calibration (thin wrappers over aspiics.calibrate)

    def calibrate(self, calibration=None, *, steps=None, filter=None, **options):
        """
        Calibrate a level-1 frame to level 2 (mean solar brightness).

        See `aspiics.calibrate.calibrate_map` for the steps, the options and the errors.

        Parameters
        ----------
        calibration : `~aspiics.calibration.CalibrationSet`, path-like or None, optional
            The calibration data (None: ``ASPIICS_CALIBRATION_DIR``).
        steps : sequence of str, optional
            The steps to run, in order (default `aspiics.calibrate.DEFAULT_STEPS`).
        filter : str, optional
            Use this filter when the header's ``FILTER`` is ``'Unknown'`` or absent.
        **options
            Step options, passed on to `aspiics.calibrate.calibrate_map`.

        Returns
        -------
        `ASPIICSMap`
            The level-2 map with uncertainty and mask.
        """
        from aspiics.calibrate import DEFAULT_STEPS, calibrate_map

        steps = DEFAULT_STEPS if steps is None else steps
        return calibrate_map(self, calibration, steps=steps, filter=filter, **options)

    def to_physical_units(self, unit, **kwargs):
        """
        Convert a brightness map from MSB to ``unit`` (DN/s, photon or energy radiance).

        See `aspiics.calibrate.to_physical_units`.
        """
        from aspiics.calibrate import to_physical_units

        return to_physical_units(self, unit, **kwargs)

    # ---------------------------------------------------------------------------------------
    # Helpers

    def _plot_code(self):
        prod = self.meta.get("prod_id")
        if prod:
            if prod == "Polarized brightness":
                return "pb"
            if prod == "Polarization angle":
                return "pa"
            if prod in _PROD_CODES and _PROD_CODES[prod] in ("fe", "he"):
                return _PROD_CODES[prod]
        info = self.filter
        return info.code if info is not None else "wb"

    @property
    def valid_mask(self):
        """Boolean array, True where the pixel holds a usable finite value."""
        data = np.asanyarray(self.data)
        valid = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.ones(data.shape, bool)
        if self.mask is not None:
            valid &= ~np.asarray(self.mask, dtype=bool)
        return valid

    @property
    def sigma(self):
        """The 1σ uncertainty as an array in the data's unit, None without uncertainty."""
        if isinstance(self.uncertainty, StdDevUncertainty):
            return np.asarray(self.uncertainty.array)
        if self.uncertainty is not None:
            return np.asarray(self.uncertainty.represent_as(StdDevUncertainty).array)
        return None


def _step_method(name, function_name):
    def method(self, calibration=None, *, filter=None, **options):
        from aspiics import calibrate

        return getattr(calibrate, function_name)(self, calibration, filter=filter, **options)

    method.__name__ = name
    method.__doc__ = f"""
        Run the calibration step ``{name}`` (see `aspiics.calibrate.{function_name}`).

        Parameters
        ----------
        calibration : `~aspiics.calibration.CalibrationSet`, path-like or None, optional
            The calibration data (None: ``ASPIICS_CALIBRATION_DIR``).
        filter : str, optional
            Use this filter when the header's ``FILTER`` is ``'Unknown'`` or absent.
        **options
            Options of the step.

        Returns
        -------
        `ASPIICSMap`
            A new map; the step is recorded in ``CALSTEPS`` and HISTORY, so running it twice or
            out of order raises `~aspiics.exceptions.ProcessingError`.
        """
    return method


for _name, _function in (
    ("subtract_bias", "subtract_bias_map"),
    ("correct_nonlinearity", "correct_nonlinearity_map"),
    ("estimate_variance", "estimate_variance_map"),
    ("subtract_dark", "subtract_dark_map"),
    ("flat_field", "flat_field_map"),
    ("to_msb", "to_msb_map"),
    ("correct_banding", "apply_banding_map"),
    ("replace_bad_pixels", "replace_bad_pixels_map"),
    ("correct_vignetting", "correct_vignetting_map"),
    ("finalize_l2", "finalize_map"),
):
    setattr(ASPIICSMap, _name, _step_method(_name, _function))
del _name, _function
