"""
Level-3 exposure composite: map-level alignment, the aligned exposure stack and the HDR merge.

An ASPIICS acquisition takes 1–3 exposures of one filter with different exposure times (SPEC §1,
§7); the pointing jitters slightly between them. This module brings them onto one grid and merges
them into a level-3 map:

* `sun_centered_wcs` builds the official level-3 grid (Sun centre at the image centre, solar north
  up, ``CRVAL = 0``, the plate scale of the reference frame).
* `reproject_map` resamples one `~aspiics.ASPIICSMap` onto a grid (the Sun-centred one, its own, any
  WCS, FITS header or sunpy map) with `aspiics.resample.reproject_affine`, keeping the class, the
  mask (NaN missing, +Inf saturated), the uncertainty and the metadata.
* `align` builds an `ExposureStack` (an `ndcube.NDCube` with an exposure-time axis) from the
  exposures of one acquisition, after checking that they can be merged.
* `merge_exposures` (and `composite`, which also returns the weights) merges them with
  `aspiics.merge.merge_arrays` into a level-3 map with uncertainty, mask and a complete header.

The numerics live in `aspiics.resample` and `aspiics.merge`; this module handles metadata.
"""

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.nddata import StdDevUncertainty
from astropy.time import Time
from astropy.wcs import WCS
from astropy.wcs.wcsapi import BaseHighLevelWCS, BaseLowLevelWCS
from ndcube import NDCube, NDMeta
from ndcube.extra_coords import QuantityTableCoordinate
from ndcube.wcs.wrappers import CompoundLowLevelWCS
from scipy import ndimage

from aspiics.calibrate import valid_statistics
from aspiics.exceptions import AspiicsUserWarning, FilenameError, HeaderError, ProcessingError
from aspiics.merge import merge_arrays
from aspiics.resample import _ORDER_NAMES, find_pixel_mapping, frames_match, reproject_affine

__all__ = [
    "Composite",
    "ExposureStack",
    "align",
    "composite",
    "merge_exposures",
    "reproject_map",
    "sun_centered_wcs",
]

log = logging.getLogger(__name__)

#: Prefix of the HISTORY lines written by this module.
_HISTORY_PREFIX = "aspiics L3"
#: Each exposure's frame must cover at least this fraction of the longest exposure's frame.
_MIN_OVERLAP = 0.5
#: Observer keywords that sunpy reads (the HGS ones are written when the observer changes).
_OBSERVER_KEYS = ("hgln_obs", "hglt_obs", "dsun_obs", "crln_obs", "crlt_obs", "heex_obs", "heey_obs",
                  "heez_obs", "haex_obs", "haey_obs", "haez_obs", "hecx_obs", "hecy_obs", "hecz_obs",
                  "heqx_obs", "heqy_obs", "heqz_obs", "hcix_obs", "hciy_obs", "hciz_obs")  # fmt: skip
#: WCS keywords replaced by the target grid's.
_GRID_KEYS = ("crpix1", "crpix2", "crval1", "crval2", "cdelt1", "cdelt2", "ctype1", "ctype2", "cunit1",
              "cunit2", "pc1_1", "pc1_2", "pc2_1", "pc2_2", "cd1_1", "cd1_2", "cd2_1", "cd2_2", "crota",
              "crota1", "crota2", "lonpole", "latpole", "pv1_1", "pv1_2", "pv2_1", "pv2_2", "naxis1",
              "naxis2")  # fmt: skip


def _label(m, index=None):
    """A name for messages: FILENAME, else the position in the input."""
    name = m.meta.get("filename") if hasattr(m, "meta") else None
    if name:
        return str(name)
    return "<map>" if index is None else f"<map #{index}>"


# ---------------------------------------------------------------------------------------------
# Grids


def _as_pair(value, unit):
    q = u.Quantity(value, unit) if not isinstance(value, u.Quantity) else value
    q = np.atleast_1d(q.to(unit) if q.unit.physical_type == unit.physical_type else q.value * unit)
    if q.size == 1:
        q = np.repeat(q, 2)
    if q.size != 2:
        raise ProcessingError(f"expected one or two values, got {value!r}")
    return q


def _observer_hgs(m):
    """(lon deg, lat deg, dist m) of the map's observer, None if the map has none."""
    try:
        obs = m.observer_coordinate
    except Exception:  # sunpy raises different errors for missing observer keywords
        obs = None
    if obs is None:
        return None
    from sunpy.coordinates import HeliographicStonyhurst

    hgs = obs.transform_to(HeliographicStonyhurst(obstime=obs.obstime))
    return float(hgs.lon.to_value(u.deg)), float(hgs.lat.to_value(u.deg)), float(hgs.radius.to_value(u.m))


def _build_wcs(crpix, crval, cdelt, pc, ctype, cunit, *, date=None, observer=None, rsun_ref=None, shape=None):
    """A 2-D FITS WCS from numbers (no header parsing, hence no FITSFixedWarning)."""
    w = WCS(naxis=2)
    w.wcs.crpix = list(crpix)
    w.wcs.crval = list(crval)
    w.wcs.cdelt = list(cdelt)
    w.wcs.pc = np.asarray(pc, dtype=float)
    w.wcs.ctype = list(ctype)
    w.wcs.cunit = list(cunit)
    if date is not None:
        t = Time(date)
        w.wcs.dateobs = t.utc.isot
        w.wcs.mjdobs = t.utc.mjd
    if observer is not None:
        w.wcs.aux.hgln_obs, w.wcs.aux.hglt_obs, w.wcs.aux.dsun_obs = observer
    if rsun_ref is not None:
        w.wcs.aux.rsun_ref = rsun_ref
    w.wcs.set()
    if shape is not None:
        w.array_shape = tuple(int(s) for s in shape)
    return w


def sun_centered_wcs(reference_map, *, shape=None, scale=None):
    """
    The official level-3 grid: Sun centre at the image centre, solar north up.

    Parameters
    ----------
    reference_map : `sunpy.map.GenericMap`
        The map whose observer, observation time and plate scale define the grid (for a composite:
        the longest exposure).
    shape : tuple of int, optional
        ``(ny, nx)`` of the grid; default the shape of ``reference_map``.
    scale : float or `~astropy.units.Quantity`, optional
        Plate scale (arcsec per pixel, one value or one per axis); default the ``CDELT`` of
        ``reference_map``.

    Returns
    -------
    wcs : `astropy.wcs.WCS`
        Helioprojective TAN WCS with ``CRPIX`` = the image centre (``(n + 1) / 2``, 1-based),
        ``CRVAL = 0``, ``PC`` = identity, arcsec units, and the observer (``HGLN_OBS``, ``HGLT_OBS``,
        ``DSUN_OBS``) and ``DATE-OBS`` of ``reference_map``; ``wcs.array_shape`` is set.
    shape : tuple of int
        ``(ny, nx)``.

    Notes
    -----
    On this grid Sun centre falls on the centre of the image: on the central pixel for odd sizes,
    on the corner shared by the four central pixels for even sizes (``CRPIX = 1024.5`` for 2048),
    as in the level-1 convention for the detector centre.
    """
    if shape is None:
        shape = reference_map.data.shape
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ProcessingError(f"shape must be (ny, nx), got {shape}")
    if scale is None:
        scale = u.Quantity([abs(s.to_value(u.arcsec / u.pix)) for s in reference_map.scale], u.arcsec)
    scale = _as_pair(scale, u.arcsec)
    ny, nx = shape
    rsun_ref = reference_map.meta.get("rsun_ref")
    w = _build_wcs(
        ((nx + 1) / 2, (ny + 1) / 2),
        (0.0, 0.0),
        scale.to_value(u.arcsec),
        np.eye(2),
        ("HPLN-TAN", "HPLT-TAN"),
        ("arcsec", "arcsec"),
        date=reference_map.date,
        observer=_observer_hgs(reference_map),
        rsun_ref=float(rsun_ref) if rsun_ref is not None else None,
        shape=shape,
    )
    return w, shape


def _grid_keywords(w):
    """CTYPE/CUNIT/CRPIX/CRVAL/CDELT/PC of a 2-D FITS WCS, helioprojective angles in arcsec."""
    w = w.celestial if w.has_celestial else w
    ctype = [str(c) for c in w.wcs.ctype]
    units = [u.Unit(c) if c else u.one for c in w.wcs.cunit]
    helio = all(c.upper().startswith(("HPLN", "HPLT")) for c in ctype)
    out_units = [u.arcsec, u.arcsec] if helio else units
    crval = [(v * un).to_value(ou) for v, un, ou in zip(w.wcs.crval, units, out_units, strict=True)]
    matrix = np.diag(w.wcs.get_cdelt()) @ w.wcs.get_pc()  # the CD matrix, in the WCS units
    norms = np.sqrt((matrix**2).sum(axis=1))
    pc = matrix / norms[:, None]
    cdelt = [(n * un).to_value(ou) for n, un, ou in zip(norms, units, out_units, strict=True)]
    return {
        "ctype1": ctype[0],
        "ctype2": ctype[1],
        "cunit1": out_units[0].to_string(),
        "cunit2": out_units[1].to_string(),
        "crpix1": float(w.wcs.crpix[0]),
        "crpix2": float(w.wcs.crpix[1]),
        "crval1": float(crval[0]),
        "crval2": float(crval[1]),
        "cdelt1": float(cdelt[0]),
        "cdelt2": float(cdelt[1]),
        "pc1_1": float(pc[0, 0]),
        "pc1_2": float(pc[0, 1]),
        "pc2_1": float(pc[1, 0]),
        "pc2_2": float(pc[1, 1]),
        "crota": float(np.degrees(np.arctan2(pc[1, 0], pc[0, 0]))),
    }


def _header_wcs(header):
    """A FITS WCS from a header, without astropy's FITSFixedWarning about date keywords."""
    from astropy.wcs import FITSFixedWarning

    header = fits.Header(header) if not isinstance(header, fits.Header) else header
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _resolve_target(m, target, shape_out):
    """(FITS WCS, shape, description) of a target for map ``m``."""
    from sunpy.map import GenericMap

    if isinstance(target, str):
        key = target.lower()
        if key in ("sun", "sun-centered", "sun-centred", "l3"):
            w, shape = sun_centered_wcs(m, shape=shape_out)
            return w, shape, "Sun-centred north-up grid"
        if key in ("longest", "self", "own"):
            shape = tuple(shape_out) if shape_out is not None else m.data.shape
            return _map_wcs(m), shape, "own grid"
        raise ProcessingError(f"Unknown target {target!r}: use 'sun', 'longest', a WCS, a header or a map")
    if isinstance(target, GenericMap):
        shape = tuple(shape_out) if shape_out is not None else target.data.shape
        return _map_wcs(target), shape, f"grid of {_label(target)}"
    if isinstance(target, fits.Header | dict):
        header = fits.Header(target) if isinstance(target, fits.Header) else _dict_header(target)
        w = _header_wcs(header)
        shape = shape_out
        if shape is None and header.get("NAXIS1") and header.get("NAXIS2"):
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
        return w, _need_shape(shape, w), "header grid"
    if isinstance(target, WCS):
        return target, _need_shape(shape_out, target), "WCS grid"
    if isinstance(target, BaseHighLevelWCS | BaseLowLevelWCS):
        raise TypeError(
            f"reproject_map needs a FITS WCS (astropy.wcs.WCS) to write the map's header, got "
            f"{type(target).__name__}; use aspiics.resample.reproject_affine for array output"
        )
    raise TypeError(
        f"Unsupported target {type(target).__name__}: use 'sun', 'longest', a WCS, a header or a map"
    )


def _dict_header(d):
    h = fits.Header()
    for key, value in d.items():
        if key.lower() in ("keycomments", "history", "comment") or isinstance(value, dict):
            continue
        h[key] = value
    return h


def _need_shape(shape, w):
    if shape is None and w.array_shape is not None:
        shape = w.array_shape
    if shape is None:
        raise ProcessingError("The target WCS has no array shape: give shape_out=(ny, nx)")
    return tuple(int(s) for s in shape)[-2:]


def _map_wcs(m):
    """The map's WCS, without sunpy's warnings about missing optional keywords."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. missing observer or RSUN keywords
        return m.wcs


def _check_wcs_keys(m, label):
    meta = m.meta
    missing = [k.upper() for k in ("ctype1", "ctype2", "crpix1", "crpix2") if meta.get(k) in (None, "")]
    if meta.get("cdelt1") is None and meta.get("cd1_1") is None:
        missing.append("CDELT1/CD1_1")
    if missing:
        raise HeaderError(
            f"{label}: no celestial WCS (missing {', '.join(missing)}); the frame cannot be aligned. "
            "Use level-2 files from the ASPIICS pipeline, which carry the pointing."
        )


# ---------------------------------------------------------------------------------------------
# Map-level reprojection


def _invalid_as_nan_inf(m):
    """Float32 copy of the data with masked pixels NaN, except saturated (+Inf) ones."""
    data = np.array(m.data, dtype=np.float32, copy=True)
    if m.mask is not None:
        mask = np.asarray(m.mask, dtype=bool)
        if mask.shape == data.shape:
            data[mask & ~np.isposinf(data)] = np.nan
    data[np.isneginf(data)] = np.nan
    return data


def _append_history(meta, line):
    history = meta.get("history", "")
    history = "\n".join(history) if isinstance(history, list | tuple) else str(history or "")
    meta["history"] = f"{history}\n{line}" if history else line


def _fit_comments(meta):
    """Shorten header comments that would not fit on their FITS card with the value."""
    comments = dict(meta.get("keycomments", {}) or {})
    changed = False
    for key, comment in comments.items():
        value = meta.get(key)
        if value is None or not comment or (isinstance(value, str) and len(value) > 60):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                head = fits.Card(key.upper(), value).image.rstrip()
        except (ValueError, TypeError):
            continue
        room = 80 - len(head) - 3
        if len(comment) > room:
            comments[key] = comment[: max(room, 0)]
            changed = True
    if changed:
        meta["keycomments"] = comments


def _set(meta, key, value, comment=None):
    meta[key] = value
    if comment is not None:
        comments = dict(meta.get("keycomments", {}) or {})
        comments[key] = comment
        meta["keycomments"] = comments


def _new_meta(m, w, shape, description, same_frame, order, method):
    """Metadata of ``m`` moved onto grid ``w`` of ``shape``."""
    meta = copy.deepcopy(m.meta)
    old_crota = meta.get("crota")
    for key in _GRID_KEYS:
        meta.pop(key, None)
    keys = _grid_keywords(w)
    crota = keys.pop("crota")
    for key, value in keys.items():
        meta[key] = value
    if old_crota is not None or abs(crota) > 1e-9:
        _set(meta, "crota", crota, "[deg] roll of the grid (PCi_j is authoritative)")
    meta["naxis"] = 2
    meta["naxis1"], meta["naxis2"] = int(shape[1]), int(shape[0])
    # The IO centre, 1-based, on the new grid (only meaningful in the same celestial frame)
    if "x_io" in meta and "y_io" in meta:
        if same_frame:
            wl = _map_wcs(m).pixel_to_world_values(float(meta["x_io"]) - 1, float(meta["y_io"]) - 1)
            x, y = w.world_to_pixel_values(*wl)
            _set(meta, "x_io", float(x) + 1, "[pix] IO centre X on this grid (1-based)")
            _set(meta, "y_io", float(y) + 1, "[pix] IO centre Y on this grid (1-based)")
        else:
            meta.pop("x_io")
            meta.pop("y_io")
    if not same_frame:
        aux = w.wcs.aux
        if aux.hgln_obs is not None and aux.hglt_obs is not None and aux.dsun_obs is not None:
            for key in _OBSERVER_KEYS:
                meta.pop(key, None)
            meta["hgln_obs"], meta["hglt_obs"], meta["dsun_obs"] = aux.hgln_obs, aux.hglt_obs, aux.dsun_obs
            rsun_ref = float(meta.get("rsun_ref", 6.957e8))
            rsun_arc = float(np.degrees(np.arcsin(rsun_ref / aux.dsun_obs)) * 3600)
            meta.pop("rsun_obs", None)
            _set(meta, "rsun_arc", rsun_arc, "[arcsec] solar radius seen from the grid's observer")
    for key in ("datamin", "datamax", "datamean", "datamedn"):  # recomputed by the callers
        meta.pop(key, None)
    how = "reproject_affine" if method == "affine" else "reproject_interp"
    _append_history(meta, f"{_HISTORY_PREFIX} reproject: to the {description}")
    _append_history(
        meta,
        f"{_HISTORY_PREFIX} reproject: {shape[1]}x{shape[0]} px, CDELT {keys['cdelt1']:.5g}, "
        f"order {order}, {how}",
    )
    return meta


def _reproject_arrays(m, w, shape, order, label, **kwargs):
    """(data, sigma or None, method) of ``m`` on grid ``w``."""
    data = _invalid_as_nan_inf(m)
    sigma = getattr(m, "sigma", None)
    if sigma is None and m.uncertainty is not None:
        sigma = np.asarray(m.uncertainty.represent_as(StdDevUncertainty).array)
    src = (data, _map_wcs(m))
    method = "affine"
    with _capture_fallback() as fell_back:
        try:
            result = reproject_affine(
                src, w, shape_out=shape, order=order, uncertainty=sigma, return_footprint=True, **kwargs
            )
        except ProcessingError as err:
            raise ProcessingError(f"{label}: {err}") from None
    if fell_back:
        method = "interp"
    out = result[0].astype(np.float32, copy=False)
    out_sigma = None if sigma is None else result[2].astype(np.float32, copy=False)
    if out_sigma is not None:
        out_sigma[~np.isfinite(out)] = np.nan
    return out, out_sigma, method


class _capture_fallback:
    """Context manager noting whether reproject_affine logged its reproject_interp fallback."""

    def __enter__(self):
        self.flag = []
        self.handler = _FlagHandler(self.flag)
        self.logger = logging.getLogger("aspiics.resample")
        self.logger.addHandler(self.handler)
        self._level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        return self.flag

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self._level)
        return False


class _FlagHandler(logging.Handler):
    def __init__(self, flag):
        super().__init__(level=logging.INFO)
        self.flag = flag

    def emit(self, record):
        if "falling back" in record.getMessage():
            self.flag.append(True)


def reproject_map(m, target="sun", *, shape_out=None, order=3, **kwargs):
    """
    Resample an ASPIICS map onto another grid, keeping its class, mask, uncertainty and metadata.

    `sunpy.map.GenericMap.reproject_to` drops the mask, the uncertainty and most of the header;
    this function keeps them, and uses the fast NaN/Inf-safe `aspiics.resample.reproject_affine`
    (which falls back to `reproject.reproject_interp` when the pixel mapping is not smooth).

    Parameters
    ----------
    m : `~aspiics.ASPIICSMap`
        A level-2 or level-3 map (float brightness, NaN missing, +Inf saturated). Masked pixels are
        treated as missing unless their value is +Inf (saturated).
    target : str, `~astropy.wcs.WCS`, `~astropy.io.fits.Header`, dict or `~sunpy.map.GenericMap`, optional
        ``"sun"`` (default): the official level-3 grid of `sun_centered_wcs` (Sun centre at the
        image centre, solar north up, same plate scale and shape). ``"longest"`` (or ``"self"``):
        the map's own grid (for a single map; `align` resolves it to the longest exposure). A FITS
        WCS (``shape_out`` or ``wcs.array_shape`` gives the shape), a FITS header (``NAXISn``), or
        any sunpy map (e.g. another instrument's): its grid.
    shape_out : tuple of int, optional
        ``(ny, nx)`` of the output (overrides the target's shape).
    order : int or str, optional
        Spline order (3 = cubic, default) or a `reproject` order name (``"bicubic"``).
    **kwargs
        Passed to `aspiics.resample.reproject_affine` (``tolerance``, ``nan_threshold``,
        ``inf_threshold``, ``threads``).

    Returns
    -------
    `~aspiics.ASPIICSMap`
        A new map of the same class: float32 data (NaN missing, +Inf saturated), the resampled
        uncertainty (see `aspiics.resample.resample_uncertainty`; NaN where the data are invalid),
        the mask rebuilt from the result, and the metadata with the grid keywords replaced
        (``CRPIX``, ``CRVAL``, ``CDELT``, ``PCi_j``, ``CTYPE``, ``CUNIT``, ``NAXISn``; ``CROTA`` set
        to the grid's roll, 0 on the Sun-centred grid; ``CDi_j``/``CROTA2`` removed), ``X_IO``/``Y_IO``
        moved to the new grid, the ``DATA*`` statistics recomputed and a HISTORY line added.

    Raises
    ------
    aspiics.exceptions.HeaderError
        If the map has no celestial WCS keywords.
    aspiics.exceptions.ProcessingError
        If the target grid does not overlap the map, or the target is unknown.
    TypeError
        If the target is of an unsupported type.

    Notes
    -----
    When the target's observer differs from the map's (another spacecraft's map), the pixels
    are mapped through a Sun-centred spherical screen (the sunpy convention for off-limb
    coronagraph data) and the observer keywords (``HGLN_OBS``, ``HGLT_OBS``, ``DSUN_OBS``,
    ``RSUN_ARC``) of the result are those of the target grid, so that the result's WCS describes
    its pixels; ``DATE-OBS`` stays the time of the ASPIICS observation.

    Examples
    --------
    >>> l3_grid = reproject_map(l2_map)  # doctest: +SKIP
    >>> on_aia = reproject_map(l2_map, aia_map)  # doctest: +SKIP
    """
    label = _label(m)
    _check_wcs_keys(m, label)
    w, shape, description = _resolve_target(m, target, shape_out)
    order = _ORDER_NAMES.get(order, order)
    data, sigma, method = _reproject_arrays(m, w, shape, order, label, **kwargs)
    return _finish_map(m, data, sigma, w, shape, description, order, method)


def _finish_map(m, data, sigma, w, shape, description, order, method):
    same = frames_match(_map_wcs(m), w)
    meta = _new_meta(m, w, shape, description, same, order, method)
    mask = ~np.isfinite(data)
    for key, value in valid_statistics(data, ~mask).items():
        _set(meta, key.lower(), value, "over valid pixels")
    _fit_comments(meta)
    unc = None if sigma is None else StdDevUncertainty(sigma, copy=False)
    return type(m)(data, meta, uncertainty=unc, mask=mask)


# ---------------------------------------------------------------------------------------------
# The aligned exposure stack


class ExposureStack(NDCube):
    """
    The aligned exposures of one acquisition: an `ndcube.NDCube` with an exposure-time axis.

    Build one with `align`. The data have shape ``(n_exp, ny, nx)`` (float32, NaN missing,
    +Inf saturated), sorted by increasing exposure time. The WCS combines the celestial WCS of
    the common grid (pixel axes x, y) with a lookup table of the exposure times (world axis
    ``time.duration``), so ``stack.axis_world_coords("time.duration")`` gives the exposure times and
    ``stack[k]`` is an `~ndcube.NDCube` of exposure ``k`` on the celestial grid. The metadata
    (`ndcube.NDMeta`) holds, along the exposure axis, each aligned map's header (``"headers"``) and
    exposure time (``"exposure_times"``), so slicing the stack keeps them consistent.

    Attributes
    ----------
    exposure_times : `~astropy.units.Quantity`
    headers : list of dict
    filter : `~aspiics.constants.FilterInfo`
    maps : list of `~aspiics.ASPIICSMap`
    celestial_wcs : `~astropy.wcs.WCS`
    """

    @property
    def exposure_times(self):
        """Exposure times (s), in stack order."""
        return u.Quantity(np.atleast_1d(self.meta["exposure_times"]), u.s)

    @property
    def headers(self):
        """The aligned maps' metadata (one dict per exposure, in stack order)."""
        h = self.meta["headers"]
        return [h] if isinstance(h, dict) else list(h)

    @property
    def filenames(self):
        """The exposures' ``FILENAME`` (None when absent)."""
        return [h.get("filename") for h in self.headers]

    @property
    def filter(self):
        """The filter of the exposures (`~aspiics.constants.FilterInfo`)."""
        return self.meta.get("filter")

    @property
    def sigma(self):
        """The 1σ uncertainty array (n_exp, ny, nx), None without uncertainty."""
        if self.uncertainty is None:
            return None
        if isinstance(self.uncertainty, StdDevUncertainty):
            return np.asarray(self.uncertainty.array)
        return np.asarray(self.uncertainty.represent_as(StdDevUncertainty).array)

    @property
    def celestial_wcs(self):
        """
        The FITS WCS of the stack's spatial grid (`astropy.wcs.WCS`, 2-D).

        Derived from the stored grid keywords, shifted for a spatially cropped stack.
        """
        h = self.headers[-1]
        keys = ("ctype1", "ctype2", "cunit1", "cunit2", "crpix1", "crpix2", "crval1", "crval2", "cdelt1",
                "cdelt2", "pc1_1", "pc1_2", "pc2_1", "pc2_2")  # fmt: skip
        grid = {k: h[k] for k in keys}
        base = _build_wcs(
            (grid["crpix1"], grid["crpix2"]),
            (grid["crval1"], grid["crval2"]),
            (grid["cdelt1"], grid["cdelt2"]),
            [[grid["pc1_1"], grid["pc1_2"]], [grid["pc2_1"], grid["pc2_2"]]],
            (grid["ctype1"], grid["ctype2"]),
            (grid["cunit1"], grid["cunit2"]),
        )
        ny, nx = self.data.shape[-2:]
        ll = self.wcs.low_level_wcs
        n_pix = ll.pixel_n_dim
        probe = [np.array([0.0, 1.0, 0.0])] * 2 + [np.zeros(3)] * (n_pix - 2)
        probe[1] = np.array([0.0, 0.0, 1.0])
        world = ll.pixel_to_world_values(*probe)
        xb, yb = base.world_to_pixel_values(world[0], world[1])
        if not (np.allclose(np.diff(xb[:2]), 1, atol=1e-6) and np.allclose(np.diff(yb[::2]), 1, atol=1e-6)):
            raise ProcessingError(
                "The stack was resampled or strided spatially: its celestial WCS is unknown"
            )
        w = base.deepcopy()
        w.wcs.crpix = [grid["crpix1"] - xb[0], grid["crpix2"] - yb[0]]
        w.wcs.set()
        w.array_shape = (ny, nx)
        return w

    @property
    def maps(self):
        """The aligned exposures as `~aspiics.ASPIICSMap` (sharing the stack's arrays)."""
        from aspiics.map import ASPIICSMap

        if self.data.ndim != 3:
            raise ProcessingError("maps needs the full (n_exp, ny, nx) stack")
        sigma = self.sigma
        out = []
        for k, h in enumerate(self.headers):
            unc = None if sigma is None else StdDevUncertainty(sigma[k], copy=False)
            mask = None if self.mask is None else np.asarray(self.mask)[k]
            out.append(ASPIICSMap(self.data[k], copy.copy(h), uncertainty=unc, mask=mask))
        return out


def _read_if_path(item):
    if isinstance(item, str | Path):
        from aspiics.io import read_map

        return read_map(item)
    return item


def _check_inputs(maps):
    """Validate the maps for a composite; return (maps sorted by exposure time, FilterInfo)."""
    if len(maps) == 0:
        raise ProcessingError("No exposure given to align")
    labels = [_label(m, i) for i, m in enumerate(maps)]
    for m, label in zip(maps, labels, strict=True):
        if not hasattr(m, "meta") or not hasattr(m, "data"):
            raise TypeError(f"{label}: expected an ASPIICSMap or a file name, got {type(m).__name__}")
        if m.data.ndim != 2:
            raise ProcessingError(f"{label}: expected a 2-D image, got shape {m.data.shape}")
        level = getattr(m, "processing_level", None)
        if level == 1 or np.issubdtype(np.asarray(m.data).dtype, np.integer):
            raise ProcessingError(f"{label}: level-1 (DN) frame; calibrate it to level 2 first (aspiics l2)")
        _check_wcs_keys(m, label)
    times, info = _check_set(maps, labels, verb="merged", advice="Merge each filter separately.")
    order = np.argsort(times, kind="stable")
    return [maps[i] for i in order], [times[i] for i in order], info


def _check_set(maps, labels, *, verb, advice):
    """
    Check that the frames of an exposure set share their filter and shape and have EXPTIME.

    Returns the exposure times (input order) and the common `~aspiics.constants.FilterInfo`;
    ``verb`` and ``advice`` complete the error messages ("... cannot be {verb}", "{advice}").
    """
    filters = []
    for m, label in zip(maps, labels, strict=True):
        info = getattr(m, "filter", None)
        if info is None:
            raise HeaderError(f"{label}: the filter is unknown (FILTER={m.meta.get('filter')!r}); set FILTER")
        filters.append(info)
    names = {f.name for f in filters}
    if len(names) > 1:
        listing = ", ".join(f"{lb} ({f.name})" for lb, f in zip(labels, filters, strict=True))
        raise ProcessingError(f"mixed filters in one exposure set: {listing}. {advice}")
    shapes = {m.data.shape for m in maps}
    if len(shapes) > 1:
        listing = ", ".join(f"{lb} {m.data.shape}" for lb, m in zip(labels, maps, strict=True))
        raise ProcessingError(f"frames of different shapes cannot be {verb}: {listing}")
    times = []
    for m, label in zip(maps, labels, strict=True):
        t = m.meta.get("exptime")
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = float("nan")
        if not t > 0:
            raise HeaderError(f"{label}: EXPTIME is missing or not positive ({m.meta.get('exptime')!r})")
        times.append(t)
    return times, filters[0]


def _drop_empty(maps, times):
    keep = [not np.isnan(_invalid_as_nan_inf(m)).all() for m in maps]
    if not any(keep):
        raise ProcessingError(
            "Every frame is empty (all pixels missing): "
            + ", ".join(_label(m, i) for i, m in enumerate(maps))
        )
    for i, k in enumerate(keep):
        if not k:
            warnings.warn(
                f"{_label(maps[i], i)}: every pixel is missing (NaN); the frame is skipped",
                AspiicsUserWarning,
                stacklevel=3,
            )
    return [m for m, k in zip(maps, keep, strict=True) if k], [
        t for t, k in zip(times, keep, strict=True) if k
    ]


def _frame_overlap(m, ref, n_grid=24):
    """Fraction of the frame of ``m`` that falls inside the frame of ``ref`` (from their WCS)."""
    ny, nx = m.data.shape
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, n_grid), np.linspace(0, nx - 1, n_grid), indexing="ij")
    w_m, w_ref = _map_wcs(m), _map_wcs(ref)
    if frames_match(w_m, w_ref):
        world = w_m.pixel_to_world_values(gx.ravel(), gy.ravel())
        x, y = w_ref.world_to_pixel_values(*world)
    else:
        try:
            pmap = find_pixel_mapping(w_ref, w_m, ref.data.shape, m.data.shape, tolerance=np.inf)
        except ProcessingError:
            return 0.0
        x = pmap.matrix[1, 0] * gy.ravel() + pmap.matrix[1, 1] * gx.ravel() + pmap.offset[1]
        y = pmap.matrix[0, 0] * gy.ravel() + pmap.matrix[0, 1] * gx.ravel() + pmap.offset[0]
    ry, rx = ref.data.shape
    x, y = np.asarray(x), np.asarray(y)
    inside = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < rx - 0.5) & (y > -0.5) & (y < ry - 0.5)
    return float(inside.mean())


def _check_overlap(maps, labels):
    """Each exposure's frame must cover the same sky as the longest exposure's (within jitter)."""
    ref = maps[-1]
    for m, label in zip(maps[:-1], labels[:-1], strict=True):
        frac = _frame_overlap(m, ref)
        if frac < _MIN_OVERLAP:
            raise ProcessingError(
                f"{label}: its frame overlaps the longest exposure {labels[-1]} by only {100 * frac:.0f} % "
                f"(at least {100 * _MIN_OVERLAP:.0f} % expected): the frames do not belong to one "
                "acquisition, or their pointing keywords (CRVAL/CRPIX/PC) are wrong"
            )


def align(maps, target="sun", *, shape_out=None, order=3, **kwargs):
    """
    Align the exposures of one acquisition onto a common grid.

    Parameters
    ----------
    maps : iterable of `~aspiics.ASPIICSMap` or path-like
        Level-2 exposures of one filter (1–3, any order); file names are read with
        `aspiics.io.read_map`.
    target : str, WCS, header or map, optional
        ``"sun"`` (default): the Sun-centred, solar-north-up level-3 grid of the longest exposure
        (`sun_centered_wcs`); ``"longest"``: the longest exposure's own grid; or any target
        accepted by `reproject_map`.
    shape_out : tuple of int, optional
        Output shape; default the target's (the input shape for ``"sun"``/``"longest"``).
    order : int, optional
        Spline order of the resampling.
    **kwargs
        Passed to `aspiics.resample.reproject_affine`.

    Returns
    -------
    `ExposureStack`
        Sorted by increasing exposure time, with uncertainty (if every input has one) and mask.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        Mixed filters, frames of different shapes, level-1 frames, footprints that do not overlap
        on the common grid, or only empty (all-NaN) frames.
    aspiics.exceptions.HeaderError
        A frame without celestial WCS keywords, without a known filter or without ``EXPTIME``
        (the message names the file).

    Warns
    -----
    aspiics.exceptions.AspiicsUserWarning
        For each all-NaN frame, which is skipped when others remain.
    """
    maps = [_read_if_path(m) for m in maps]
    maps, times, info = _check_inputs(maps)
    maps, times = _drop_empty(maps, times)
    longest = maps[-1]
    labels = [_label(m, i) for i, m in enumerate(maps)]
    _check_overlap(maps, labels)
    w, shape, description = _resolve_target(longest, target, shape_out)
    order = _ORDER_NAMES.get(order, order)
    n = len(maps)
    data = np.empty((n, *shape), dtype=np.float32)
    with_sigma = all(m.uncertainty is not None for m in maps)
    if not with_sigma and any(m.uncertainty is not None for m in maps):
        log.info("Some exposures have no uncertainty: the stack carries none")
    sigma = np.empty((n, *shape), dtype=np.float32) if with_sigma else None
    headers = []
    for k, m in enumerate(maps):
        d, s, method = _reproject_arrays(m, w, shape, order, labels[k], **kwargs)
        data[k] = d
        if sigma is not None:
            sigma[k] = s
        # DATA* statistics are left out of the stack's headers (recomputed for the composite)
        meta = _new_meta(m, w, shape, description, frames_match(_map_wcs(m), w), order, method)
        headers.append(dict(meta))
        log.debug("Aligned %s (%s s) onto the %s", labels[k], times[k], description)
    for k in range(n):
        if np.isnan(data[k]).all():
            raise ProcessingError(f"{labels[k]}: no valid pixel on the common grid ({description})")
    return _make_stack(data, sigma, w, shape, times, headers, info, unit=longest.unit)


def _make_stack(data, sigma, w, shape, times, headers, info, unit=None):
    w = w.deepcopy()
    w.array_shape = tuple(shape)
    table = QuantityTableCoordinate(
        u.Quantity(times, u.s), names="exposure time", physical_types="time.duration"
    )
    wcs = CompoundLowLevelWCS(w, table.wcs)
    headers_arr = np.empty(len(headers), dtype=object)
    for k, h in enumerate(headers):
        headers_arr[k] = h
    meta = NDMeta(
        {"exposure_times": u.Quantity(times, u.s), "headers": headers_arr, "filter": info},
        axes={"exposure_times": 0, "headers": 0},
        data_shape=data.shape,
    )
    unc = None if sigma is None else StdDevUncertainty(sigma, copy=False)
    return ExposureStack(data, wcs=wcs, uncertainty=unc, mask=~np.isfinite(data), meta=meta, unit=unit)


# ---------------------------------------------------------------------------------------------
# The merge


@dataclass
class Composite:
    """
    Result of `composite`.

    Attributes
    ----------
    map : `~aspiics.ASPIICSMap`
        The level-3 map.
    weights : `numpy.ndarray`
        Weight of each exposure, shape ``(n_exp, ny, nx)``, float32, in the order of ``stack``
        (increasing exposure time); they sum to 1 at every valid pixel.
    stack : `ExposureStack`
        The aligned exposures.
    """

    map: object
    weights: np.ndarray
    stack: ExposureStack


def _l3_identifier(headers):
    """The 13-character acquisition ID shared by the inputs (None if no file name parses)."""
    from aspiics.io import parse_filename

    ids = []
    for h in headers:
        try:
            ids.append(parse_filename(str(h.get("filename") or "")).acquisition_id)
        except FilenameError:
            ids.append(None)
    known = [i for i in ids if i]
    if not known:
        return None
    if len(set(known)) > 1:
        warnings.warn(
            f"The exposures belong to different acquisitions ({', '.join(sorted(set(known)))}); "
            f"the composite is named after the longest exposure's, {known[-1]}",
            AspiicsUserWarning,
            stacklevel=4,
        )
    return known[-1]


def _l3_meta(stack, merged, weighting, blend, island_size):
    """Header of the level-3 composite, from the longest exposure's aligned header."""
    from aspiics.io import format_filename

    headers = stack.headers
    times = stack.exposure_times.to_value(u.s)
    meta = copy.deepcopy(headers[-1])
    grid = _grid_keywords(stack.celestial_wcs)
    grid.pop("crota")
    meta.update(grid)
    ny, nx = merged.data.shape
    meta["naxis"], meta["naxis1"], meta["naxis2"] = 2, nx, ny
    parents = [str(h.get("filename") or "<unnamed>") for h in headers]
    info = stack.filter
    _set(meta, "level", "L3", "processing level")
    _set(meta, "prod_id", "Total brightness", "level-3 product: HDR exposure composite")
    _set(meta, "bunit", "MSB", "mean solar brightness")
    _set(meta, "parent", ", ".join(parents), "input files (shortest exposure first)")
    _set(meta, "exptime", float(np.sum(times)), "[s] total exposure time of the merged exposures")
    _set(meta, "nexp", len(headers), "number of merged exposures")
    for key in ("date-beg", "date-end"):
        meta.pop(key, None)
    begs = [h.get("date-beg") or h.get("date-obs") for h in headers]
    ends = [h.get("date-end") for h in headers]
    begs = [Time(b) for b in begs if b]
    if begs:
        _set(meta, "date-beg", min(begs).utc.isot, "start of the first exposure")
    ends = [Time(e) for e in ends if e]
    if not ends and begs:
        ends = [
            Time(h["date-obs"]) + t * u.s for h, t in zip(headers, times, strict=True) if h.get("date-obs")
        ]
    if ends:
        _set(meta, "date-end", max(ends).utc.isot, "end of the last exposure")
    for k, t in enumerate(times, start=1):
        _set(meta, f"exptim{k}", float(t), f"[s] exposure time of input {k}")
    ident = _l3_identifier(headers)
    date = meta.get("date-obs")
    if ident and date and info is not None:
        _set(meta, "filename", format_filename(info.code, 3, ident, date), "file name")
    else:
        meta.pop("filename", None)
        log.info("No ASPIICS file name for the composite (inputs without FILENAME or DATE-OBS)")
    for key, value in valid_statistics(merged.data, ~merged.mask).items():
        _set(meta, key.lower(), value, "over valid pixels")
    _append_history(meta, f"{_HISTORY_PREFIX} merge: {len(headers)} exposures, weighting {weighting!r}")
    if weighting == "fill":
        _append_history(meta, f"{_HISTORY_PREFIX} merge: blend {blend} px, island_size {island_size} px")
    for name, t in zip(parents, times, strict=True):
        _append_history(meta, f"{_HISTORY_PREFIX} merge: {t:.6g} s {name}")
    _fit_comments(meta)
    return meta


def _restore_outer_islands(stack, merged, sigma, times, blend, island_radius):
    """
    Put back fill islands that `merge_arrays` dropped outside ``island_radius`` (R_sun).

    The island rule removes slivers of a shorter exposure inside the occulter shadow of a longer
    one; further out, a small fill region is real data (e.g. a shorter exposure seen through a
    dropped tile of a longer one) and is kept.
    """
    lost = np.isnan(merged.data) & (~np.isnan(stack.data)).any(axis=0)
    if not lost.any():
        return merged
    rows, cols = np.nonzero(lost)
    try:
        w = stack.celestial_wcs
        lon, lat = w.pixel_to_world_values(cols.astype(float), rows.astype(float))
        rsun = float(stack.headers[-1].get("rsun_arc") or stack.headers[-1].get("rsun_obs"))
    except (ProcessingError, TypeError, ValueError):
        return merged
    lon = (np.asarray(lon) + 180) % 360 - 180
    r = np.hypot(lon, np.asarray(lat)) * 3600 / rsun
    outer = r > float(
        u.Quantity(island_radius, u.R_sun).value if isinstance(island_radius, u.Quantity) else island_radius
    )
    if not outer.any():
        return merged
    rows, cols = rows[outer], cols[outer]
    data, weights = merged.data.copy(), merged.weights.copy()
    out_sigma = None if merged.sigma is None else merged.sigma.copy()
    # Merge again without the island rule, only in boxes around the lost islands: the blend
    # reaches ``blend`` px, so a margin of blend + 2 px makes the boxes exact at those pixels.
    keep = np.zeros(data.shape, dtype=bool)
    keep[rows, cols] = True
    margin = int(np.ceil(blend)) + 2
    ny, nx = data.shape
    for sl in ndimage.find_objects(ndimage.label(keep, structure=np.ones((3, 3)))[0]):
        y0, y1 = max(sl[0].start - margin, 0), min(sl[0].stop + margin, ny)
        x0, x1 = max(sl[1].start - margin, 0), min(sl[1].stop + margin, nx)
        box = (slice(y0, y1), slice(x0, x1))
        sub_sigma = None if sigma is None else sigma[(slice(None), *box)]
        full = merge_arrays(
            stack.data[(slice(None), *box)], sub_sigma, times, blend=blend, weighting="fill", island_size=0
        )
        sel = keep[box]
        data[box][sel] = full.data[sel]
        weights[(slice(None), *box)][:, sel] = full.weights[:, sel]
        if out_sigma is not None:
            out_sigma[box][sel] = full.sigma[sel]
    log.debug("Kept %d px of small fill islands outside %s R_sun", rows.size, island_radius)
    return type(merged)(data, out_sigma, ~np.isfinite(data), weights)


def composite(
    stack_or_maps, *, blend=30, weighting="fill", island_size=350, island_radius=1.15, target="sun", **kwargs
):
    """
    Merge the exposures of one acquisition into a level-3 map, and return the weights too.

    `merge_exposures` does the same and returns only the map.

    Parameters
    ----------
    stack_or_maps : `ExposureStack` or sequence of `~aspiics.ASPIICSMap` or path-like
        An aligned stack, or the level-2 exposures of one acquisition (aligned first).
    blend : float, optional
        Width (pixels of the output grid) of the linear blend at the fill boundaries.
    weighting : {'fill', 'inverse-variance'}, optional
        The merge method (see `aspiics.merge.merge_arrays`).
    island_size : int, optional
        Fill islands of at most this many pixels are dropped where the longer exposure is NaN.
    island_radius : float or None, optional
        Islands farther than this from Sun centre (solar radii) are kept (None: the reference rule).
    target : optional
        The output grid, as in `align`.
    **kwargs
        Passed to `align`.

    Returns
    -------
    `Composite`
        ``(map, weights, stack)``.
    """
    if isinstance(stack_or_maps, ExposureStack):
        if kwargs or target != "sun":
            log.debug("An ExposureStack is already aligned: target and alignment options are ignored")
        stack = stack_or_maps
    else:
        stack = align(stack_or_maps, target=target, **kwargs)
    if stack.data.ndim != 3:
        raise ProcessingError("merge needs an (n_exp, ny, nx) stack: do not index out the exposure axis")
    times = stack.exposure_times.to_value(u.s)
    sigma = stack.sigma
    merged = merge_arrays(stack.data, sigma, times, blend=blend, weighting=weighting, island_size=island_size)
    if weighting == "fill" and island_size > 0 and island_radius is not None:
        merged = _restore_outer_islands(stack, merged, sigma, times, blend, island_radius)
    meta = _l3_meta(stack, merged, weighting, blend, island_size)
    from aspiics.map import ASPIICSMap

    unc = None if merged.sigma is None else StdDevUncertainty(merged.sigma, copy=False)
    result = ASPIICSMap(merged.data, meta, uncertainty=unc, mask=merged.mask)
    log.info(
        "Composite %s: %d exposures, %.1f %% valid pixels",
        meta.get("filename", "<unnamed>"),
        len(times),
        100 * float(np.mean(~merged.mask)),
    )
    return Composite(result, merged.weights, stack)


def merge_exposures(
    stack_or_maps, *, blend=30, weighting="fill", island_size=350, island_radius=1.15, target="sun", **kwargs
):
    """
    Merge the exposures of one acquisition into a level-3 high-dynamic-range map.

    Parameters
    ----------
    stack_or_maps : `ExposureStack` or iterable of `~aspiics.ASPIICSMap` / path-like
        An aligned stack (from `align`), or level-2 exposures of one filter, which are aligned
        first with ``align(maps, target=target, **kwargs)``.
    blend : float, optional
        ``"fill"`` only: width (px) of the linear blend at the seams (0: hard seams).
    weighting : {"fill", "inverse-variance"}, optional
        ``"fill"`` (the reference processor): the longest exposure, its invalid (saturated,
        missing) pixels filled from the next shorter one and so on, with soft seams.
        ``"inverse-variance"``: every valid unsaturated exposure weighted by ``1/σ²``
        (noise-optimal). See `aspiics.merge.merge_arrays`.
    island_size : int, optional
        ``"fill"`` only: fill regions of at most this many pixels are dropped where the longer
        exposure is missing (slivers at the occulter edge). The defaults of ``blend`` and
        ``island_size`` are the reference processor's, in pixels of the 2048² detector: scale them
        (linearly, and with the area) for binned frames.
    island_radius : float or None, optional
        ``"fill"`` only: dropped islands whose pixels lie farther than this from Sun centre (R☉)
        are put back: beyond the occulter shadow (~1.1 R☉) and its vignetted edge they are real
        data, e.g. a shorter exposure seen through a dropped tile of a longer one. None drops every
        small island, as the reference processor does.
    target : str, WCS, header or map, optional
        Grid of the composite when maps are given: ``"sun"`` (default, the official level-3 grid),
        ``"longest"`` or any target of `reproject_map`.
    **kwargs
        Passed to `align` (``shape_out``, ``order``, and `~aspiics.resample.reproject_affine` options).

    Returns
    -------
    `~aspiics.ASPIICSMap`
        The level-3 map (float32 MSB, NaN missing, +Inf saturated in every exposure) with its
        uncertainty and mask. Header: the longest exposure's, on the output grid, with
        ``LEVEL = 'L3'``, ``PROD_ID = 'Total brightness'``, ``BUNIT = 'MSB'``,
        ``FILENAME = aspiics_<flt>_l3_<acquisitionID>_<utc>.fits``, ``PARENT`` (all inputs, comma
        separated; a long-string ``CONTINUE`` card in FITS), ``EXPTIME`` (sum of the exposure times),
        ``EXPTIMn`` (each exposure time), ``NEXP``, ``DATE-BEG``/``DATE-END`` spanning all exposures,
        ``DATAMIN``/``DATAMAX``/``DATAMEAN``/``DATAMEDN`` and HISTORY lines with the parameters.

    Raises
    ------
    aspiics.exceptions.ProcessingError, aspiics.exceptions.HeaderError
        See `align`; also for an unknown ``weighting``.

    Notes
    -----
    Naming: ``<flt>`` is the filter code (``wb``, ``fe``, ``he``, ``p1``...), the acquisition ID the
    13-character ID shared by the exposures (their 14-character exposure ID without the exposure
    digit, SPEC §2), which keeps the composites of two acquisitions of one sequence apart and
    makes ``ASPIICSMap.acquisition_id`` of the composite equal that of its inputs (the archive's
    12-character sequence IDs name products that combine several acquisitions, such as pB);
    ``<utc>`` is ``DATE-OBS`` of the longest exposure, which also keeps its ``DATE-OBS`` and
    observer.

    ``EXPTIME`` is the total exposure time: the data are a brightness (MSB), normalised by
    exposure time already, so the keyword documents how much exposure went into the image.
    ``PROD_ID`` is ``'Total brightness'`` for every filter: the composite of Fe XIV or He I
    exposures is still the brightness through that filter, not the continuum-subtracted line.

    Examples
    --------
    >>> l3 = merge_exposures(["aspiics_wb_l2_..._1.fits", "..."])  # doctest: +SKIP
    >>> l3.save(l3.meta["filename"])  # doctest: +SKIP
    """
    return composite(
        stack_or_maps,
        blend=blend,
        weighting=weighting,
        island_size=island_size,
        island_radius=island_radius,
        target=target,
        **kwargs,
    ).map
