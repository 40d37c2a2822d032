"""
Level-2 calibration of ASPIICS frames: DN → mean solar brightness (MSB).

The calibration follows the reference L2 processor (Shestov et al. 2020; SPEC §5) step by step,
with the seed's saturation fix, and carries a variance and per-pixel flags through every step:

``bias``
    electrons = (DN − bias(T)) / gain; ``BLANK`` → missing, raw 16383 → saturated (electron).
``nonlin``
    measured → linear signal (monotone spline); beyond the table → saturated (electron).
``variance``
    (σ_read/g)² + dark e⁻ + max(signal − dark e⁻, 0) (electron²).
``dark``
    − dark(T)·t/g (electron).
``flat``
    ÷ flat, variance ÷ flat² (electron).
``msb``
    × g / (Aphot·t), variance × its square (MSB).
``banding``
    optional, ``banding=True`` or a callable (see `apply_banding`) (MSB).
``badpix``
    listed hot pixels and isolated outliers beyond k·σ of the 3×3 median (k = eta1, then eta2)
    → median (MSB).
``vignetting``
    optional: ÷ vignetting where it exceeds a threshold, masked below (MSB).

Two layers are provided:

* pure functions on NumPy arrays (``subtract_bias``, ``correct_nonlinearity``, ``init_variance``,
  ``subtract_dark``, ``flat_field``, ``to_msb``, ``replace_bad_pixels``, ``correct_vignetting``,
  ``finalize``), float32 and vectorised;
* map-level functions (`calibrate_map` and one function per step, e.g. `subtract_bias_map`) that
  take an `~aspiics.map.ASPIICSMap` and return a new one. Intermediate maps hold the data in
  electrons (``BUNIT = 'electron'``) or MSB, the variance as a
  `~astropy.nddata.VarianceUncertainty`, missing pixels as NaN and saturated pixels as finite values
  marked in ``mask``; the steps done are listed in the header keyword ``CALSTEPS`` so that a step
  cannot run twice or out of order.
"""

import logging
import math
import warnings
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.nddata import StdDevUncertainty, VarianceUncertainty

from aspiics.calibration import CalibrationArchive, CalibrationSet
from aspiics.constants import BLANK_DN, SATURATION_DN, default_config, filter_info
from aspiics.exceptions import (
    AspiicsUserWarning,
    CalibrationError,
    FilenameError,
    HeaderError,
    ProcessingError,
)
from aspiics.units import MSB

__all__ = [
    "ALL_STEPS",
    "DEFAULT_APS_TEMP",
    "DEFAULT_STEPS",
    "FLAG_MISSING",
    "FLAG_REPLACED",
    "FLAG_SATURATED",
    "FLAG_VIGNETTED",
    "SET_STEPS",
    "apply_banding",
    "apply_banding_map",
    "calibrate_acquisition",
    "calibrate_map",
    "correct_nonlinearity",
    "correct_nonlinearity_map",
    "correct_vignetting",
    "correct_vignetting_map",
    "estimate_variance_map",
    "finalize",
    "finalize_map",
    "flat_field",
    "flat_field_map",
    "init_variance",
    "raw_flags",
    "replace_bad_pixels",
    "replace_bad_pixels_map",
    "subtract_bias",
    "subtract_bias_map",
    "subtract_dark",
    "subtract_dark_map",
    "to_msb",
    "to_msb_map",
    "to_physical_units",
    "valid_statistics",
]

log = logging.getLogger(__name__)

#: Pixel flags (bits of a uint8 array).
FLAG_MISSING = 1
FLAG_SATURATED = 2
FLAG_REPLACED = 4
FLAG_VIGNETTED = 8
_INVALID = FLAG_MISSING | FLAG_SATURATED

#: Detector temperature assumed when ``APS_TEMP`` is absent (°C, as the reference).
DEFAULT_APS_TEMP = -13.0

#: Every step, in the only order in which they may run.
ALL_STEPS = (
    "bias", "nonlin", "variance", "dark", "flat", "msb", "expbanding", "banding", "badpix", "vignetting",
)  # fmt: skip
#: Steps that work on the exposures of one acquisition together (`calibrate_acquisition`).
SET_STEPS = ("expbanding",)
#: Steps of `calibrate_map` by default (``banding`` runs only if a banding function is given;
#: ``vignetting`` is off, as in the reference).
DEFAULT_STEPS = ("bias", "nonlin", "variance", "dark", "flat", "msb", "banding", "badpix")
_REQUIRES = {
    "nonlin": "bias",
    "variance": "bias",
    "dark": "bias",
    "flat": "bias",
    "msb": "bias",
    "expbanding": "msb",
    "banding": "flat",
    "badpix": "variance",
    "vignetting": "bias",
}
_CALSTEPS = "CALSTEPS"
_HISTORY_PREFIX = "aspiics L2"


# =============================================================================================
# Pure array functions
# =============================================================================================


def raw_flags(raw, *, blank=BLANK_DN, saturation=SATURATION_DN, missing=None):
    """
    Flags of a raw level-1 frame.

    Parameters
    ----------
    raw : `numpy.ndarray`
        Raw DN (integers, or floats with NaN for missing pixels).
    blank : int, optional
        Value of missing pixels (FITS ``BLANK``).
    saturation : int, optional
        Raw value of saturated pixels (14-bit ADC: 16383).
    missing : `numpy.ndarray` of bool, optional
        Extra missing pixels (e.g. the map's mask).

    Returns
    -------
    `numpy.ndarray` (uint8)
        `FLAG_MISSING` and `FLAG_SATURATED` bits.
    """
    raw = np.asarray(raw)
    miss = raw == blank
    if np.issubdtype(raw.dtype, np.floating):
        miss |= np.isnan(raw)
    if missing is not None:
        miss |= np.asarray(missing, dtype=bool)
    flags = miss.view(np.uint8).copy()  # FLAG_MISSING == 1
    sat = (raw >= saturation) & ~miss
    flags[sat] |= FLAG_SATURATED
    return flags


def subtract_bias(raw, bias, gain, *, flags=None):
    """
    Subtract the bias and convert DN to electrons (SPEC §5.2).

    Parameters
    ----------
    raw : `numpy.ndarray`
        Raw frame, DN.
    bias : `numpy.ndarray`
        Bias at the frame's temperature, DN (``CalibrationSet.bias(T)``).
    gain : float
        DN per electron.
    flags : `numpy.ndarray` (uint8), optional
        Pixels with `FLAG_MISSING` become NaN. Default: `raw_flags` of ``raw``.

    Returns
    -------
    `numpy.ndarray` (float32)
        ``(raw − bias) / gain`` electrons, NaN where missing.
    """
    if flags is None:
        flags = raw_flags(raw)
    out = np.asarray(raw).astype(np.float32)
    out -= bias
    out *= np.float32(1.0 / gain)
    out[(flags & FLAG_MISSING) != 0] = np.nan
    return out


def correct_nonlinearity(electrons, table, *, flags=None, exact=False):
    """
    Correct the detector non-linearity and flag saturation (SPEC §5.3).

    Parameters
    ----------
    electrons : `numpy.ndarray`
        Bias-subtracted measured signal, electrons.
    table : `~aspiics.calibration.NonlinearityTable`
        The response table in electrons (``CalibrationSet.nonlinearity``).
    flags : `numpy.ndarray` (uint8), optional
        Updated in place: `FLAG_SATURATED` is set where the signal lies beyond the table's
        measured range (the seed's fix: all of them, not only raw 16383).
    exact : bool, optional
        Evaluate the spline itself rather than its fine look-up grid.

    Returns
    -------
    linear : `numpy.ndarray` (float32)
        Linear signal, electrons; NaN stays NaN; saturated pixels hold the table's last linear value.
    flags : `numpy.ndarray` (uint8)
        The flags (a new array if none was given).
    """
    x = np.asarray(electrons, dtype=np.float32)
    linear, beyond = table.linearize(x, exact=exact)  # NaN in, NaN out
    if flags is None:
        flags = np.isnan(x).view(np.uint8).copy()  # FLAG_MISSING == 1
    flags[beyond] |= FLAG_SATURATED
    return linear, flags


def init_variance(signal, *, read_noise, gain, dark=None, exptime=0.0):
    """
    Initial variance of the signal in electrons² (SPEC §5.4).

    Parameters
    ----------
    signal : `numpy.ndarray`
        Linearised signal before dark subtraction, electrons.
    read_noise : float
        Read noise, DN.
    gain : float
        DN per electron.
    dark : `numpy.ndarray` or float, optional
        Dark current, DN s⁻¹.
    exptime : float, optional
        Exposure time, s.

    Returns
    -------
    `numpy.ndarray` (float32)
        ``(read_noise/gain)² + D + max(signal − D, 0)`` with ``D = dark·t/gain`` the dark electrons.

    Notes
    -----
    The reference writes ``(σ/g)² + dark·t/g + max(signal, 0)`` with ``signal`` still containing
    the dark electrons, which counts the dark shot noise twice; the photon term here uses the
    dark-free signal, so read, dark-shot and photon-shot noise are each counted once (identical to
    the reference when the dark is negligible).
    """
    sig = np.asarray(signal, dtype=np.float32)
    if dark is None or exptime == 0:
        var = np.maximum(sig, np.float32(0))
        var += np.float32((read_noise / gain) ** 2)
        return var
    # D + max(S - D, 0) == max(S, D): one temporary only
    var = np.multiply(dark, np.float32(exptime / gain), dtype=np.float32)
    np.maximum(sig, var, out=var)
    var += np.float32((read_noise / gain) ** 2)
    return var


def subtract_dark(data, dark, exptime, gain):
    """
    Subtract the dark signal (SPEC §5.5).

    Parameters
    ----------
    data : `numpy.ndarray`
        Signal, electrons.
    dark : `numpy.ndarray` or float
        Dark current, DN s⁻¹.
    exptime : float
        Exposure time, s.
    gain : float
        DN per electron.

    Returns
    -------
    `numpy.ndarray` (float32)
        ``data − dark·t/gain``.
    """
    out = np.asarray(dark, dtype=np.float32) * np.float32(exptime / gain)
    np.subtract(np.asarray(data, dtype=np.float32), out, out=out)
    return out


def flat_field(data, variance, flat, *, flags=None):
    """
    Divide by the flat field (SPEC §5.6, first part).

    Parameters
    ----------
    data : `numpy.ndarray`
        Signal, electrons.
    variance : `numpy.ndarray` or None
        Its variance; divided by ``flat²``.
    flat : `numpy.ndarray`
        Flat field, dimensionless.
    flags : `numpy.ndarray` (uint8), optional
        Updated in place: pixels with a non-positive or non-finite flat get `FLAG_MISSING`.

    Returns
    -------
    data, variance : `numpy.ndarray` (float32)
        Flat-fielded signal (NaN where the flat is unusable) and variance (None if none given).
    """
    flat = np.asarray(flat, dtype=np.float32)
    bad = ~(flat > 0) | ~np.isfinite(flat)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.divide(data, flat, dtype=np.float32)
        var = None
        if variance is not None:
            var = np.divide(variance, flat, dtype=np.float32)
            var /= flat
    if bad.any():
        out[bad] = np.nan
        if var is not None:
            var[bad] = np.nan
        if flags is not None:
            flags[bad] |= FLAG_MISSING
            flags[bad] &= ~np.uint8(FLAG_SATURATED)
    return out, var


def to_msb(data, variance, aphot, gain, exptime):
    """
    Convert electrons to mean solar brightness (SPEC §5.6).

    Parameters
    ----------
    data : `numpy.ndarray`
        Flat-fielded signal, electrons.
    variance : `numpy.ndarray` or None
        Its variance, electrons².
    aphot : float
        Radiometric sensitivity, DN s⁻¹ MSB⁻¹.
    gain : float
        DN per electron.
    exptime : float
        Exposure time, s.

    Returns
    -------
    data, variance : `numpy.ndarray` (float32)
        ``data · gain / (Aphot · t)`` MSB and the variance times the square of that factor.
    """
    factor = gain / (aphot * exptime)
    out = np.multiply(data, np.float32(factor), dtype=np.float32)
    var = None
    if variance is not None:
        # two multiplications: factor² (~1e-22) can underflow float32 on its own
        var = np.multiply(variance, np.float32(factor), dtype=np.float32)
        var *= np.float32(factor)
    return out, var


def apply_banding(data, func, *, flags=None, variance=None, exposure_time=None, center=None, **kwargs):
    """
    Run a banding correction on an MSB image (SPEC §5.7, §6).

    Parameters
    ----------
    data : `numpy.ndarray`
        Flat-fielded image, MSB.
    func : callable
        ``func(data, *, mask=None, **kwargs)`` returning either ``(corrected, pattern)`` or a
        result object with ``corrected``, ``pattern``, ``pattern_variance`` and ``history()``
        (as `aspiics.banding.correct_banding_step` does).
    flags : `numpy.ndarray` (uint8), optional
        Missing and saturated pixels are passed as ``mask``.
    variance : `numpy.ndarray`, optional
        Pixel variance, passed on when ``func`` takes a ``variance`` argument.
    exposure_time : float, optional
        Exposure time (s), passed on when ``func`` takes an ``exposure_time`` argument.
    center : tuple of float, optional
        ``(x, y)`` 0-based pixel of the internal-occulter centre (≈ Sun centre), passed on when
        ``func`` takes a ``center`` argument.
    **kwargs
        Passed to ``func``.

    Returns
    -------
    corrected, pattern : `numpy.ndarray`
        The corrected image and the removed pattern.
    pattern_variance : `numpy.ndarray` or None
        Variance of the pattern estimate, when ``func`` provides it.
    description : str or None
        A one-line description for HISTORY, when ``func`` provides it.
    """
    import inspect

    mask = None if flags is None else (flags & _INVALID) != 0
    try:
        accepted = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        accepted = {}
    if variance is not None and "variance" in accepted:
        kwargs["variance"] = variance
    if exposure_time is not None and "exposure_time" in accepted:
        kwargs["exposure_time"] = exposure_time
    if center is not None and "center" in accepted:
        kwargs.setdefault("center", center)
    result = func(data, mask=mask, **kwargs)
    if isinstance(result, tuple):
        corrected, pattern = result
        pattern_variance = description = None
    else:
        corrected, pattern = result.corrected, result.pattern
        pattern_variance = getattr(result, "pattern_variance", None)
        description = result.history() if hasattr(result, "history") else None
    corrected = np.asarray(corrected, dtype=np.float32)
    if corrected.shape != np.shape(data):
        raise ProcessingError(
            f"banding function {func!r} returned shape {corrected.shape} for an image of {np.shape(data)}"
        )
    return corrected, pattern, pattern_variance, description


def _minmax3(a):
    """NaN-ignoring 3×3 minimum and maximum (separable, edges use the available neighbours)."""
    lo = a.copy()
    np.fmin(lo[:, 1:], a[:, :-1], out=lo[:, 1:])
    np.fmin(lo[:, :-1], a[:, 1:], out=lo[:, :-1])
    hi = a.copy()
    np.fmax(hi[:, 1:], a[:, :-1], out=hi[:, 1:])
    np.fmax(hi[:, :-1], a[:, 1:], out=hi[:, :-1])
    tmp = lo.copy()
    np.fmin(lo[1:], tmp[:-1], out=lo[1:])
    np.fmin(lo[:-1], tmp[1:], out=lo[:-1])
    tmp[...] = hi
    np.fmax(hi[1:], tmp[:-1], out=hi[1:])
    np.fmax(hi[:-1], tmp[1:], out=hi[:-1])
    return lo, hi


_DR = np.array([-1, -1, -1, 0, 0, 0, 1, 1, 1])
_DC = np.array([-1, 0, 1, -1, 0, 1, -1, 0, 1])


def _outlier_candidates(ref, var, k, strip=128, isolated=False):
    """Flat indices where ``x − min₃ₓ₃ > kσ`` or ``max₃ₓ₃ − x > kσ``, in strips of rows."""
    ny, nx = ref.shape
    found = []
    kk = np.float32(k)
    for r0 in range(0, ny, strip):
        r1 = min(r0 + strip, ny)
        a0, a1 = max(r0 - 1, 0), min(r1 + 1, ny)
        lo, hi = _minmax3(ref[a0:a1])
        inner = slice(r0 - a0, r0 - a0 + (r1 - r0))
        x = ref[r0:r1]
        ks = np.sqrt(var[r0:r1])
        ks *= kk
        with np.errstate(invalid="ignore"):
            diff = x - lo[inner]
            cand = diff > ks
            if isolated:  # an isolated outlier is the maximum (or minimum) of its window
                cand &= x >= hi[inner]
            np.subtract(hi[inner], x, out=diff)
            low = diff > ks
            if isolated:
                low &= x <= lo[inner]
            cand |= low
        found.append(np.flatnonzero(cand) + r0 * nx)
    return np.concatenate(found) if found else np.empty(0, dtype=np.intp)


def _neighbourhoods(a, rows, cols):
    """Gather the 3×3 neighbourhoods (n, 9) of the given pixels; outside the image → NaN."""
    ny, nx = a.shape
    rr = rows[:, None] + _DR
    cc = cols[:, None] + _DC
    outside = (rr < 0) | (rr >= ny) | (cc < 0) | (cc >= nx)
    vals = a[np.clip(rr, 0, ny - 1), np.clip(cc, 0, nx - 1)].astype(np.float32)
    vals[outside] = np.nan
    return vals


def _nanmedian_rows(vals):
    """Median of the finite values of each row (NaN if none); vectorised."""
    vals = np.where(np.isfinite(vals), vals, np.nan)
    s = np.sort(vals, axis=1)  # NaN last
    n = np.isfinite(s).sum(axis=1)
    lo = np.clip((n - 1) // 2, 0, None)
    hi = np.clip(n // 2, 0, None)
    a = np.take_along_axis(s, lo[:, None], axis=1)[:, 0]
    b = np.take_along_axis(s, hi[:, None], axis=1)[:, 0]
    med = 0.5 * (a + b)
    med[n == 0] = np.nan
    return med


def replace_bad_pixels(
    data, variance, *, thresholds=(15.0, 20.0), hot_pixels=None, flags=None, inplace=False, isolated=True
):
    """
    Replace hot pixels and isolated outliers by the median of their 3×3 neighbourhood (SPEC §5.8).

    First the listed hot pixels are replaced by the median of their valid neighbours; then, for
    each threshold ``k`` in turn (the reference: 15, then ``eta2`` = 20), every pixel with
    ``|x − median₃ₓ₃(x)| > k·σ`` is replaced by that median. With ``isolated=True`` (the default)
    the pixel must also stand out from *every* one of its eight neighbours by more than ``k·σ``
    (above their maximum or below their minimum).

    Parameters
    ----------
    data : `numpy.ndarray`
        Image (MSB or electrons).
    variance : `numpy.ndarray`
        Its variance (σ²), same units squared.
    thresholds : sequence of float, optional
        ``k`` of each pass.
    hot_pixels : tuple of `numpy.ndarray`, optional
        ``(rows, cols)`` of the listed hot pixels (``CalibrationSet.hot_pixels``).
    flags : `numpy.ndarray` (uint8), optional
        Missing and saturated pixels are neither tested nor used in medians; `FLAG_REPLACED` is set
        on replaced pixels (in place). Default: non-finite pixels are invalid.
    inplace : bool, optional
        Modify ``data`` and ``variance`` (float32 arrays) in place instead of copying them; the
        invalid pixels of ``data`` are then set to NaN (re-apply the flags with `finalize`).
    isolated : bool, optional
        Only replace isolated outliers (see above). The reference tests the median alone, which at
        high signal-to-noise also replaces real coronal structure narrower than the 3×3 window
        (rays, streamer edges: their neighbours along the structure are as bright as they are);
        a defective pixel stands out from all its neighbours. Set False for the reference rule.

    Returns
    -------
    data, variance : `numpy.ndarray` (float32)
        New arrays (``data`` and ``variance`` if ``inplace``); the variance of a replaced pixel
        is the median variance of its neighbourhood.
    flags : `numpy.ndarray` (uint8)
    n_replaced : int
        Number of replaced pixels (hot pixels included).

    Notes
    -----
    The median is the median of the valid pixels of the 3×3 window (centre included, as
    ``scipy.ndimage.median_filter``; at the image edge only the pixels inside the image). Instead
    of filtering the whole image, the exact median is computed only at candidates: since the
    median of a window lies between its minimum and its maximum, ``x − median > kσ`` implies
    ``x − min₃ₓ₃ > kσ`` (and likewise below), and the NaN-ignoring 3×3 minimum and maximum are
    cheap separable operations. A later pass only needs to revisit the neighbourhoods of the
    pixels replaced before. The result equals the full median filter's (tested).
    """
    out = np.asarray(data, dtype=np.float32) if inplace else np.array(data, dtype=np.float32)
    var = np.asarray(variance, dtype=np.float32) if inplace else np.array(variance, dtype=np.float32)
    if flags is None:
        flags = np.where(np.isfinite(out), 0, FLAG_MISSING).astype(np.uint8)
    ny, nx = out.shape
    invalid = (flags & _INVALID) != 0
    if inplace:
        # The pipeline owns ``data`` and re-applies NaN/+Inf from the flags at the end: the invalid
        # pixels can be NaN'd in place, and the reference image need not be a copy.
        ref = out
    else:
        ref = out.copy()
    ref[invalid] = np.nan
    n_replaced = 0
    replaced_idx = []

    def _replace(idx, med):
        nonlocal n_replaced
        rows, cols = np.divmod(idx, nx)
        vmed = _nanmedian_rows(_neighbourhoods(var, rows, cols))
        ok = np.isfinite(med)
        idx, med, vmed = idx[ok], med[ok], vmed[ok]
        out.flat[idx] = med
        ref.flat[idx] = med
        var.flat[idx] = vmed
        flags.flat[idx] |= FLAG_REPLACED
        n_replaced += idx.size
        replaced_idx.append(idx)
        return idx

    if hot_pixels is not None:
        rows, cols = (np.asarray(h, dtype=np.intp) for h in hot_pixels)
        inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
        idx = np.unique(rows[inside] * nx + cols[inside])
        idx = idx[~invalid.flat[idx]]
        if idx.size:
            ref.flat[idx] = np.nan  # a hot pixel must not bias its own median
            r, c = np.divmod(idx, nx)
            _replace(idx, _nanmedian_rows(_neighbourhoods(ref, r, c)))

    thresholds = [float(k) for k in thresholds]
    if thresholds:
        base = _outlier_candidates(ref, var, min(thresholds), isolated=isolated)
        for k in thresholds:
            if replaced_idx:
                prev = np.concatenate(replaced_idx)
                r, c = np.divmod(prev, nx)
                rr = np.clip(r[:, None] + _DR, 0, ny - 1)
                cc = np.clip(c[:, None] + _DC, 0, nx - 1)
                idx = np.union1d(base, (rr * nx + cc).ravel())
            else:
                idx = base
            if idx.size == 0:
                continue
            r, c = np.divmod(idx, nx)
            neighbourhoods = _neighbourhoods(ref, r, c)
            med = _nanmedian_rows(neighbourhoods)
            x = ref.flat[idx]
            ks = np.float32(k) * np.sqrt(var.flat[idx])
            with np.errstate(invalid="ignore"):
                bad = np.abs(x - med) > ks
                if isolated:
                    others = np.delete(neighbourhoods, 4, axis=1)  # the 8 neighbours
                    bad &= (x - np.fmax.reduce(others, axis=1) > ks) | (
                        np.fmin.reduce(others, axis=1) - x > ks
                    )
            if bad.any():
                _replace(idx[bad], med[bad])
    return out, var, flags, n_replaced


def correct_vignetting(data, variance, vignetting, *, threshold=0.05, flags=None):
    """
    Divide by the vignetting where it exceeds ``threshold``; mask the rest (SPEC §5.10).

    Parameters
    ----------
    data : `numpy.ndarray`
        Image.
    variance : `numpy.ndarray` or None
        Its variance (divided by vignetting²).
    vignetting : `numpy.ndarray`
        Transmission, 0–1 (``CalibrationSet.vignetting(filter)``).
    threshold : float, optional
        Pixels with a transmission ≤ ``threshold`` become missing (NaN) with `FLAG_VIGNETTED`:
        dividing by a tiny transmission only amplifies noise and model errors.
    flags : `numpy.ndarray` (uint8), optional
        Updated in place.

    Returns
    -------
    data, variance : `numpy.ndarray` (float32)
    """
    vign = np.asarray(vignetting, dtype=np.float32)
    low = ~(vign > threshold)
    safe = np.where(low, np.float32(1), vign)
    out = np.divide(data, safe, dtype=np.float32)
    out[low] = np.nan
    var = None
    if variance is not None:
        var = np.divide(variance, safe, dtype=np.float32)
        var /= safe
        var[low] = np.nan
    if flags is not None:
        flags[low] |= FLAG_VIGNETTED | FLAG_MISSING
        flags[low] &= ~np.uint8(FLAG_SATURATED)
    return out, var


def finalize(data, flags):
    """
    Apply the official L2 convention: saturated → +Inf, missing → NaN (SPEC §5.9).

    Parameters
    ----------
    data : `numpy.ndarray`
    flags : `numpy.ndarray` (uint8)

    Returns
    -------
    `numpy.ndarray` (float32)
        A float32 array (``data`` itself when it already is one: modified in place).
    """
    out = np.asarray(data, dtype=np.float32)
    out[(flags & FLAG_SATURATED) != 0] = np.inf
    out[(flags & FLAG_MISSING) != 0] = np.nan
    return out


def valid_statistics(data, valid=None):
    """
    ``DATAMIN``, ``DATAMAX``, ``DATAMEAN``, ``DATAMEDN`` over the valid (finite, unmasked) pixels.

    Parameters
    ----------
    data : `numpy.ndarray`
    valid : `numpy.ndarray` of bool, optional
        Default: finite pixels.

    Returns
    -------
    dict
        The four keywords (NaN if no pixel is valid).
    """
    data = np.asarray(data)
    if valid is None:
        valid = np.isfinite(data)
    n = int(np.count_nonzero(valid))
    if n == 0:
        return dict.fromkeys(("DATAMIN", "DATAMAX", "DATAMEAN", "DATAMEDN"), float("nan"))
    return {
        "DATAMIN": float(np.min(data, where=valid, initial=np.inf)),
        "DATAMAX": float(np.max(data, where=valid, initial=-np.inf)),
        "DATAMEAN": float(np.sum(data, where=valid, dtype=np.float64) / n),
        "DATAMEDN": _valid_median(data, valid, n),
    }


def _valid_median(data, valid, n):
    """
    Exact median of ``data[valid]`` without copying all the valid values.

    The median is bracketed with quantiles of a 1-in-16 subsample; only the values inside the
    bracket are gathered and partitioned. If the bracket misses (very unlikely), all valid values
    are copied instead.
    """
    sample = data[::4, ::4][valid[::4, ::4]] if data.ndim == 2 else None
    if sample is None or n < 200_000 or sample.size < 10_000:
        return _median_inplace(data[valid])
    margin = 6.0 * 0.5 / np.sqrt(sample.size) + 1e-3  # six binomial sigmas of the sample median
    lo, hi = np.quantile(sample, [max(0.5 - margin, 0.0), min(0.5 + margin, 1.0)])
    below = 0
    parts = []
    for rows in _strips(data.shape[0]):  # strips keep the temporaries small
        d, v = data[rows], valid[rows]
        below += int(np.count_nonzero(v & (d < lo)))
        parts.append(d[v & (d >= lo) & (d <= hi)])
    inside = np.concatenate(parts)
    k = n // 2  # the upper median's order statistic; the lower one is k - 1 for even n
    if not (below <= k - 1 and below + inside.size > k):
        return _median_inplace(data[valid])
    j = k - below
    inside.partition(j)
    upper = float(inside[j])
    if n % 2:
        return upper
    return 0.5 * (upper + float(inside[:j].max()))


def _median_inplace(values):
    """Median of a 1-D scratch array (partitioned in place: no extra copy)."""
    n = values.size
    k = n // 2
    values.partition(k)
    if n % 2:
        return float(values[k])
    return 0.5 * (float(values[k]) + float(values[:k].max()))


# =============================================================================================
# Map level
# =============================================================================================


@dataclass
class _State:
    """Calibration state of a frame: arrays plus what has been done."""

    data: np.ndarray
    variance: np.ndarray | None
    flags: np.ndarray
    done: list
    history: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)


@dataclass
class _Context:
    filename: str
    filter: object
    exptime: float
    temperature: float
    calibration: CalibrationSet
    options: dict


_OPTION_DEFAULTS = {
    "exact_nonlinearity": False,
    "bad_pixel_thresholds": None,
    "use_hot_pixels": True,
    "isolated_outliers": True,
    "vignetting_threshold": 0.05,
    "banding": None,
    "banding_options": None,
}


def _filename(m):
    return str(m.meta.get("filename") or "<map without FILENAME>")


def _done_steps(meta):
    text = str(meta.get(_CALSTEPS, "") or "").strip()
    return [s for s in text.split(",") if s]


def _frame_filter(m, filter=None):
    name = _filename(m)
    if filter is not None:
        return filter_info(filter)
    value = m.meta.get("filter")
    if value is None or str(value).strip().lower() in ("", "unknown"):
        raise HeaderError(
            f"{name}: FILTER is {value!r}; aspiics does not guess the filter: pass filter='Wideband' "
            "(or the right one) explicitly"
        )
    try:
        return filter_info(value)
    except HeaderError as exc:
        raise HeaderError(f"{name}: {exc}") from None


def _frame_exptime(m):
    value = m.meta.get("exptime")
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise HeaderError(
            f"{_filename(m)}: EXPTIME is {value!r}; a positive exposure time in seconds is needed: "
            "fix the header (EXPTIME) of the input file"
        )
    return t


def _frame_temperature(m):
    value = m.meta.get("aps_temp")
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not math.isfinite(t):
        warnings.warn(
            f"{_filename(m)}: APS_TEMP is missing or invalid ({value!r}); assuming {DEFAULT_APS_TEMP} °C "
            "for bias and dark",
            AspiicsUserWarning,
            stacklevel=3,
        )
        return DEFAULT_APS_TEMP, True
    return t, False


def _resolve_calibration(calibration, m):
    if isinstance(calibration, CalibrationSet):
        return calibration
    date = m.meta.get("date-obs") or m.meta.get("date-beg")
    if isinstance(calibration, CalibrationArchive):
        return calibration.for_date(date)
    return CalibrationSet(calibration, date=date)


def _state_from_map(m):
    done = _done_steps(m.meta)
    mask = None if m.mask is None else np.asarray(m.mask, dtype=bool)
    if not done:
        raw = np.asarray(m.data)
        flags = raw_flags(raw, missing=mask)
        return _State(raw, None, flags, done)
    data = np.array(m.data, dtype=np.float32)
    missing = np.isnan(data)
    flags = missing.view(np.uint8).copy()
    if mask is not None:
        flags[mask & ~missing] |= FLAG_SATURATED
    variance = None
    if m.uncertainty is not None:
        unc = m.uncertainty
        if not isinstance(unc, VarianceUncertainty):
            unc = unc.represent_as(VarianceUncertainty)
        variance = np.array(unc.array, dtype=np.float32)
    return _State(data, variance, flags, done)


def _check_order(step, done, filename):
    if step not in ALL_STEPS:
        raise ProcessingError(f"unknown calibration step {step!r}; the steps are {', '.join(ALL_STEPS)}")
    if step in done:
        raise ProcessingError(
            f"{filename}: calibration step {step!r} was already applied (CALSTEPS={','.join(done)}); "
            "start again from the level-1 map to redo it"
        )
    if done and ALL_STEPS.index(step) < ALL_STEPS.index(done[-1]):
        raise ProcessingError(
            f"{filename}: calibration step {step!r} must run before {done[-1]!r}, which was already "
            f"applied; the steps run in the order {', '.join(ALL_STEPS)}"
        )
    need = _REQUIRES.get(step)
    if need is not None and need not in done:
        raise ProcessingError(
            f"{filename}: calibration step {step!r} needs step {need!r} to be applied first"
        )


def _check_steps(steps):
    steps = list(steps)
    unknown = [s for s in steps if s not in ALL_STEPS]
    if unknown:
        raise ProcessingError(f"unknown calibration step(s) {unknown}; the steps are {', '.join(ALL_STEPS)}")
    if any(s in SET_STEPS for s in steps):
        raise ProcessingError(
            f"step(s) {[s for s in steps if s in SET_STEPS]} work on the exposures of one acquisition "
            "together: use aspiics.calibrate.calibrate_acquisition(maps, calibration)"
        )
    order = [ALL_STEPS.index(s) for s in steps]
    if order != sorted(set(order)):
        raise ProcessingError(
            f"calibration steps {steps} are repeated or out of order; "
            f"they run in the order {', '.join(ALL_STEPS)}"
        )
    return steps


def _check_input(m, filename):
    level = None
    try:
        level = m.processing_level
    except Exception:  # a map class without the property
        level = None
    bunit = str(m.meta.get("bunit", "") or "").strip().lower()
    if (level is not None and level >= 2) or (bunit == "msb" and not _done_steps(m.meta)):
        raise ProcessingError(
            f"{filename} is already calibrated (LEVEL={m.meta.get('level')!r}); "
            "calibrate the level-1 file instead"
        )


# --- step implementations on a _State ---------------------------------------------------------


#: Rows processed at a time by the pipeline steps: the temporaries of a step stay a few MB.
_STRIP = 256


def _strips(n_rows):
    return [slice(r, min(r + _STRIP, n_rows)) for r in range(0, n_rows, _STRIP)]


def _do_bias(st, ctx):
    cal = ctx.calibration
    raw = np.asarray(st.data)
    out = np.empty(raw.shape, dtype=np.float32)
    for rows in _strips(raw.shape[0]):
        out[rows] = subtract_bias(raw[rows], cal.bias(ctx.temperature, rows), cal.gain, flags=st.flags[rows])
    st.data = out
    return f"bias: (DN - bias_A - bias_B*T)/gain, T={ctx.temperature:g} C, gain={cal.gain:g} DN/e"


def _do_nonlin(st, ctx):
    table = ctx.calibration.nonlinearity
    exact = bool(ctx.options["exact_nonlinearity"])
    before = int(np.count_nonzero(st.flags & FLAG_SATURATED))
    for rows in _strips(st.data.shape[0]):
        st.data[rows], _ = correct_nonlinearity(st.data[rows], table, flags=st.flags[rows], exact=exact)
    after = int(np.count_nonzero(st.flags & FLAG_SATURATED))
    name = table.source.rsplit("/", 1)[-1]
    return (
        f"nonlin: inverse of {name} (monotone cubic, electrons), saturated above "
        f"{table.max_measured:.1f} e: {after} px ({after - before} beyond table)"
    )


def _do_variance(st, ctx):
    cal = ctx.calibration
    st.variance = np.empty(st.data.shape, dtype=np.float32)
    for rows in _strips(st.data.shape[0]):
        st.variance[rows] = init_variance(
            st.data[rows], read_noise=cal.read_noise, gain=cal.gain, dark=cal.dark(ctx.temperature, rows),
            exptime=ctx.exptime,
        )  # fmt: skip
    return f"variance: (rn/g)^2 + dark*t/g + max(S - dark*t/g, 0), rn={cal.read_noise:g} DN"


def _do_dark(st, ctx):
    cal = ctx.calibration
    for rows in _strips(st.data.shape[0]):
        st.data[rows] = subtract_dark(st.data[rows], cal.dark(ctx.temperature, rows), ctx.exptime, cal.gain)
    return f"dark: - (dark_A2 + dark_B2*T + dark_C2*T^2)*t/gain, T={ctx.temperature:g} C, t={ctx.exptime:g} s"


def _do_flat(st, ctx):
    cal = ctx.calibration
    flat = cal.flat(ctx.filter)
    for rows in _strips(st.data.shape[0]):
        variance = None if st.variance is None else st.variance[rows]
        data, variance = flat_field(st.data[rows], variance, flat[rows], flags=st.flags[rows])
        st.data[rows] = data
        if variance is not None:
            st.variance[rows] = variance
    return f"flat: / {cal.file_path('flat:' + ctx.filter.name).name} ({ctx.filter.name})"


def _do_msb(st, ctx):
    cal = ctx.calibration
    aphot = cal.aphot(ctx.filter)
    for rows in _strips(st.data.shape[0]):
        variance = None if st.variance is None else st.variance[rows]
        data, variance = to_msb(st.data[rows], variance, aphot, cal.gain, ctx.exptime)
        st.data[rows] = data
        if variance is not None:
            st.variance[rows] = variance
    return f"msb: * gain/(Aphot*t), Aphot={aphot:.4g} DN/s/MSB, t={ctx.exptime:g} s"


def _do_banding(st, ctx):
    func = ctx.options["banding"]
    if func is None or func is False:
        return None
    if func is True:
        from aspiics.banding import correct_banding_step as func
    kwargs = dict(ctx.options["banding_options"] or {})
    made_for = getattr(kwargs.get("template"), "filter", None)
    if made_for is not None and made_for != ctx.filter.name:
        raise ProcessingError(
            f"{ctx.filename}: the banding template was made from {made_for} frames, not "
            f"{ctx.filter.name} (the MSB scale depends on the filter); use a template of this filter "
            "(aspiics banding-template)."
        )
    st.data, pattern, pattern_variance, description = apply_banding(
        st.data, func, flags=st.flags, variance=st.variance, exposure_time=ctx.exptime,
        center=ctx.calibration.io_center(ctx.filter), **kwargs,
    )  # fmt: skip
    st.notes["banding_pattern"] = pattern
    if pattern_variance is not None and st.variance is not None:
        # The estimate's own error adds to the pixel variance.
        extra = np.asarray(pattern_variance, dtype=np.float32)
        np.add(st.variance, np.where(np.isfinite(extra), extra, np.float32(0)), out=st.variance)
    if description is None:
        name = getattr(func, "__qualname__", repr(func))
        description = f"{getattr(func, '__module__', '')}.{name} {kwargs or ''}".rstrip()
    return f"banding: {description}"


def _do_badpix(st, ctx):
    cal = ctx.calibration
    if st.variance is None:
        raise ProcessingError(f"{ctx.filename}: bad-pixel replacement needs the variance step first")
    thresholds = ctx.options["bad_pixel_thresholds"]
    if thresholds is None:
        thresholds = (cal.eta1, cal.eta2)
    hot = cal.hot_pixels if ctx.options["use_hot_pixels"] else None
    isolated = bool(ctx.options["isolated_outliers"])
    st.data, st.variance, st.flags, n = replace_bad_pixels(
        st.data,
        st.variance,
        thresholds=thresholds,
        hot_pixels=hot,
        flags=st.flags,
        inplace=True,
        isolated=isolated,
    )
    n_hot = 0 if hot is None else len(hot[0])
    ks = "/".join(f"{k:g}" for k in thresholds)
    rule = "isolated (beyond all 8 neighbours)" if isolated else "reference rule"
    return f"badpix: 3x3 median where |x-med|>k*sigma, k={ks}, {rule}, hot list {n_hot} px; replaced {n} px"


def _do_vignetting(st, ctx):
    cal = ctx.calibration
    threshold = float(ctx.options["vignetting_threshold"])
    vign = cal.vignetting(ctx.filter, st.data.shape)
    st.data, st.variance = correct_vignetting(st.data, st.variance, vign, threshold=threshold, flags=st.flags)
    return f"vignetting: / geometric model with vign_polar_fit, masked where <= {threshold:g}"


_STEP_FUNCS = {
    "bias": _do_bias,
    "nonlin": _do_nonlin,
    "variance": _do_variance,
    "dark": _do_dark,
    "flat": _do_flat,
    "msb": _do_msb,
    "banding": _do_banding,
    "badpix": _do_badpix,
    "vignetting": _do_vignetting,
}


def _prepare(m, calibration, filter, options):
    filename = _filename(m)
    unknown = set(options) - set(_OPTION_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown calibration option(s): {', '.join(sorted(unknown))}")
    _check_input(m, filename)
    flt = _frame_filter(m, filter)
    exptime = _frame_exptime(m)
    temperature, assumed = _frame_temperature(m)
    cal = _resolve_calibration(calibration, m)
    try:
        cal.check_shape(np.shape(m.data), filename)
    except CalibrationError as exc:
        raise CalibrationError(str(exc)) from None
    ctx = _Context(filename, flt, exptime, temperature, cal, {**_OPTION_DEFAULTS, **options})
    return ctx, assumed


def _run(m, steps, ctx, st):
    for step in steps:
        _check_order(step, st.done, ctx.filename)
        line = _STEP_FUNCS[step](st, ctx)
        if line is None:
            st.history.append(f"{_HISTORY_PREFIX} {step}: skipped (no function given)")
            continue
        st.done.append(step)
        st.history.append(f"{_HISTORY_PREFIX} {line}")
        log.debug("%s: %s", ctx.filename, line)
    return st


def _new_meta(m, ctx, st, assumed_temperature, forced_filter):
    meta = m.meta.copy()
    for key in ("blank", "bzero", "bscale"):
        meta.pop(key, None)
    if forced_filter is not None and str(meta.get("filter")) != ctx.filter.name:
        st.history.insert(
            0, f"{_HISTORY_PREFIX} FILTER {meta.get('filter')!r} replaced by {ctx.filter.name!r} (user)"
        )
        meta["filter"] = ctx.filter.name
    if assumed_temperature:
        meta["aps_temp"] = DEFAULT_APS_TEMP
        st.history.insert(0, f"{_HISTORY_PREFIX} APS_TEMP absent: assumed {DEFAULT_APS_TEMP} C")
    meta[_CALSTEPS.lower()] = ",".join(st.done)
    history = str(meta.get("history", "") or "")
    lines = [line for line in history.split("\n") if line] + st.history
    meta["history"] = "\n".join(lines)
    return meta


def _intermediate_map(m, ctx, st, assumed, forced_filter):
    meta = _new_meta(m, ctx, st, assumed, forced_filter)
    meta["bunit"] = "MSB" if "msb" in st.done else "electron"
    mask = (st.flags & _INVALID) != 0
    data = st.data
    if np.issubdtype(np.asarray(data).dtype, np.floating):
        data = np.asarray(data, dtype=np.float32)
        data[(st.flags & FLAG_MISSING) != 0] = np.nan
    unc = None if st.variance is None else VarianceUncertainty(st.variance, copy=False)
    return type(m)(data, meta, uncertainty=unc, mask=mask)


def _l2_filename(m, ctx):
    from aspiics.io import parse_filename

    name = str(m.meta.get("filename") or "")
    try:
        parsed = parse_filename(name)
        return parsed.replace(level=2, code=ctx.filter.code).name
    except FilenameError:
        if "_l1_" in name:
            return name.replace("_l1_", "_l2_")
        return None


def _final_map(m, ctx, st, assumed, forced_filter):
    cal = ctx.calibration
    meta = _new_meta(m, ctx, st, assumed, forced_filter)
    data = finalize(st.data, st.flags)
    valid = np.isfinite(data)
    for rows in _strips(data.shape[0]):
        valid[rows] &= (st.flags[rows] & _INVALID) == 0
    st.flags = None  # not needed any more: free it before the output map is built
    if st.variance is not None:
        sigma = np.sqrt(st.variance, out=st.variance)  # the variance is not needed any more
        st.variance = None
        for rows in _strips(sigma.shape[0]):
            np.copyto(sigma[rows], np.float32(np.nan), where=~valid[rows])
        unc = StdDevUncertainty(sigma, copy=False)
    else:
        unc = None
    stats = valid_statistics(data, valid)
    mask = np.logical_not(valid, out=valid)  # reuse the buffer: valid is not needed any more
    x_io, y_io = cal.io_center(ctx.filter)
    conv = cal.conversion_factors(ctx.filter)
    msb_phot = cal.msb(ctx.filter)
    l2name = _l2_filename(m, ctx)
    parent = m.meta.get("filename")
    comments = dict(meta.get("keycomments", {}) or {})
    updates = {
        "level": ("L2", "processing level"),
        "bunit": ("MSB", "mean solar brightness; DN/s = MSB * A_PHOT"),
        "a_phot": (cal.aphot(ctx.filter), "[DN s-1 MSB-1] mean radiometric sensitivity"),
        "x_io": (x_io + 1.0, "[pix] X position of the IO (1-based)"),
        "y_io": (y_io + 1.0, "[pix] Y position of the IO (1-based)"),
        "r_io": (cal.r_io, "[mm] IO radius"),
        "conv_pho": (float(conv["CONV_PHO"].value), "[DN cm2 sr ph-1] (DN/s)/CONV_PHO = ph s-1 cm-2 sr-1"),
        "conv_wat": (float(conv["CONV_WAT"].value), "[DN m2 sr J-1] (DN/s)/CONV_WAT = W m-2 sr-1"),
        "conv_erg": (float(conv["CONV_ERG"].value), "[DN cm2 sr erg-1] (DN/s)/CONV_ERG = erg s-1 cm-2 sr-1"),
        "vers_cal": (cal.version, "version of the calibration data"),
        "cdelt1": (cal.plate_scale, "[arcsec/pix] calibrated plate scale"),
        "cdelt2": (cal.plate_scale, "[arcsec/pix] calibrated plate scale"),
        "exptime": (ctx.exptime, "[s] exposure time"),
    }
    for key, value in stats.items():
        updates[key.lower()] = (value, "over valid pixels")
    if parent:
        updates["parent"] = (str(parent), "level-1 input file")
    if l2name:
        updates["filename"] = (l2name, "file name")
    if assumed:
        updates["aps_temp"] = (DEFAULT_APS_TEMP, "[C] ASSUMED: absent from the level-1 file")
    for key, (value, comment) in updates.items():
        meta[key] = value
        comments[key] = comment
    meta["keycomments"] = comments
    meta["history"] = meta["history"] + f"\n{_HISTORY_PREFIX}: 1 MSB = {msb_phot:.4e} photon s-1 cm-2 sr-1"
    return type(m)(data, meta, uncertainty=unc, mask=mask)


def calibrate_map(m, calibration=None, *, steps=DEFAULT_STEPS, filter=None, **options):
    """
    Calibrate a level-1 ASPIICS map to level 2 (MSB).

    Parameters
    ----------
    m : `~aspiics.map.ASPIICSMap`
        A level-1 map (raw DN), or an intermediate map made by the step functions (the remaining
        ``steps`` are run).
    calibration : `~aspiics.calibration.CalibrationSet`, `~aspiics.calibration.CalibrationArchive`, path-like
        Optional.
        Calibration data; a path is opened as ``CalibrationSet(path, date=DATE-OBS)`` (pass a
        `CalibrationSet` for batches: it caches the arrays). Default: ``ASPIICS_CALIBRATION_DIR``.
    steps : sequence of str, optional
        Steps to run, in the order of `ALL_STEPS`; default `DEFAULT_STEPS`. Add ``'vignetting'`` to
        correct the vignetting.
    filter : str, optional
        Filter to use when the header's ``FILTER`` is ``'Unknown'`` or absent (or wrong); recorded
        in the header and the HISTORY.
    **options
        ``exact_nonlinearity`` (bool, False), ``bad_pixel_thresholds`` (sequence, default
        ``(eta1, eta2)`` of the calibration), ``use_hot_pixels`` (bool, True),
        ``isolated_outliers`` (bool, True: see `replace_bad_pixels`),
        ``vignetting_threshold`` (float, 0.05), ``banding`` (True for
        `aspiics.banding.correct_banding_step`, or a callable, see `apply_banding`; default None:
        step skipped), ``banding_options`` (dict, e.g. ``{"template": BandingTemplate.load(path)}``).

    Returns
    -------
    `~aspiics.map.ASPIICSMap`
        Level-2 map: float32 MSB, NaN = missing, +Inf = saturated; ``uncertainty`` a
        `~astropy.nddata.StdDevUncertainty` (NaN where masked); ``mask`` True where missing,
        saturated or non-finite; header per SPEC §5.9 (``LEVEL``, ``BUNIT``, ``A_PHOT``, ``X_IO``,
        ``Y_IO``, ``R_IO``, ``CONV_*``, ``DATA*``, ``VERS_CAL``, ``PARENT``, ``FILENAME``,
        ``CALSTEPS`` and one HISTORY line per step).

    Raises
    ------
    aspiics.exceptions.HeaderError
        ``FILTER`` unknown/absent without ``filter=``; ``EXPTIME`` missing or ≤ 0.
    aspiics.exceptions.ProcessingError
        The map is level 2 already; steps repeated or out of order.
    aspiics.exceptions.CalibrationError
        Calibration missing, corrupt, or of another shape than the frame.

    Warns
    -----
    aspiics.exceptions.AspiicsUserWarning
        ``APS_TEMP`` absent (−13 °C assumed); CONV_PHO of the calibration inconsistent.

    Examples
    --------
    >>> l2 = calibrate_map(l1_map, "calibration_data_20250101000000_20260101000000")  # doctest: +SKIP
    """
    steps = _check_steps(steps)
    ctx, assumed = _prepare(m, calibration, filter, options)
    st = _state_from_map(m)
    steps = [s for s in steps if s not in st.done]
    _run(m, steps, ctx, st)
    if "msb" not in st.done:
        raise ProcessingError(
            f"{ctx.filename}: a level-2 map needs at least the steps bias and msb; got {','.join(st.done)}"
        )
    out = _final_map(m, ctx, st, assumed, filter)
    log.info("%s calibrated to L2 (%s)", ctx.filename, ",".join(st.done))
    return out


def calibrate_acquisition(
    maps, calibration=None, *, steps=DEFAULT_STEPS, filter=None, exposure_banding=None,
    exposure_options=None, **options,
):  # fmt: skip
    """
    Calibrate the level-1 exposures of one acquisition to level 2, together.

    Every exposure goes through the steps of `calibrate_map`; in addition, between the ``msb`` and
    the ``banding`` steps, the set-level step ``expbanding``
    (`aspiics.banding.correct_banding_exposures`) measures the column banding that is constant in
    DN from the differences of the exposures, where the corona cancels, and removes it at all
    spatial scales. The per-frame ``banding`` step then removes what is left (gain banding,
    drifting columns, row banding).

    Parameters
    ----------
    maps : sequence of `~aspiics.map.ASPIICSMap`
        Level-1 maps of one filter (normally the 2-3 exposures of one acquisition).
    calibration : optional
        As in `calibrate_map`.
    steps : sequence of str, optional
        Per-frame steps, as in `calibrate_map`.
    filter : str, optional
        As in `calibrate_map`.
    exposure_banding : bool, optional
        Run the ``expbanding`` step. Default: when the per-frame banding correction is on
        (``banding=True`` or a function), without a banding template (which holds the same
        static pattern), and there are at least two exposures.
    exposure_options : dict, optional
        Parameters of `aspiics.banding.exposure_banding`.
    **options
        As in `calibrate_map` (``banding``, ``banding_options``, ...).

    Returns
    -------
    list of `~aspiics.map.ASPIICSMap`
        The level-2 maps, in the input order. Without ``expbanding`` they equal what
        `calibrate_map` returns for each frame.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        As `calibrate_map` and `aspiics.banding.correct_banding_exposures` (mixed filters or
        shapes, frames that cannot be aligned); ``exposure_banding=True`` together with a
        banding template.

    Examples
    --------
    >>> from aspiics.calibrate import calibrate_acquisition
    >>> l2_maps = calibrate_acquisition(l1_maps, cal, banding=True)  # doctest: +SKIP
    """
    maps = list(maps)
    steps = _check_steps(steps)
    template = (options.get("banding_options") or {}).get("template")
    if exposure_banding and template is not None:
        raise ProcessingError(
            "calibrate_acquisition: a banding template already holds the static column pattern; "
            "use either the template or exposure_banding=True, not both (it would be removed twice)"
        )
    if exposure_banding is None:
        func = options.get("banding")
        exposure_banding = func is not None and func is not False and "banding" in steps
        if exposure_banding and template is not None:
            log.info("calibrate_acquisition: banding template given; the exposure-set step is skipped")
            exposure_banding = False
    if not exposure_banding or len(maps) < 2:
        return [calibrate_map(m, calibration, steps=steps, filter=filter, **options) for m in maps]
    from aspiics.banding import correct_banding_exposures

    cut = ALL_STEPS.index("expbanding")
    before = [s for s in steps if ALL_STEPS.index(s) < cut]
    after = [s for s in steps if ALL_STEPS.index(s) > cut]
    intermediate = [
        _steps_map([s for s in before if s not in _done_steps(m.meta)], m, calibration, filter, options)
        for m in maps
    ]
    intermediate = correct_banding_exposures(intermediate, **(exposure_options or {}))
    return [calibrate_map(m, calibration, steps=after, filter=filter, **options) for m in intermediate]


def finalize_map(m, calibration=None, *, filter=None):
    """
    Turn an intermediate map in MSB (after the step functions) into a level-2 map.

    Parameters
    ----------
    m : `~aspiics.map.ASPIICSMap`
        Map on which at least the ``msb`` step has run.
    calibration : optional
        As in `calibrate_map`.
    filter : str, optional
        As in `calibrate_map`.

    Returns
    -------
    `~aspiics.map.ASPIICSMap`
        The level-2 map, as `calibrate_map` returns it.
    """
    return calibrate_map(m, calibration, steps=(), filter=filter)


def _steps_map(steps, m, calibration, filter, options):
    """Run ``steps`` on a map and return the intermediate (not finalised) map."""
    ctx, assumed = _prepare(m, calibration, filter, options)
    st = _state_from_map(m)
    _run(m, list(steps), ctx, st)
    return _intermediate_map(m, ctx, st, assumed, filter)


def _make_step_doc(step, what):
    return f"""
    Apply the ``{step}`` calibration step to a map ({what}).

    Parameters
    ----------
    m : `~aspiics.map.ASPIICSMap`
        Level-1 map or intermediate map from the previous steps.
    calibration : `~aspiics.calibration.CalibrationSet` or path-like, optional
        As in `calibrate_map`.
    filter : str, optional
        Filter to use if the header's is 'Unknown' or absent.
    **options
        As in `calibrate_map`.

    Returns
    -------
    `~aspiics.map.ASPIICSMap`
        A new intermediate map (data in electrons, or MSB after ``msb``; variance as
        `~astropy.nddata.VarianceUncertainty`; ``CALSTEPS`` and HISTORY updated).

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If the step was applied already, or a later step was.
    """


def subtract_bias_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("bias",), m, calibration, filter, options)


def correct_nonlinearity_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("nonlin",), m, calibration, filter, options)


def estimate_variance_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("variance",), m, calibration, filter, options)


def subtract_dark_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("dark",), m, calibration, filter, options)


def flat_field_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("flat",), m, calibration, filter, options)


def to_msb_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("msb",), m, calibration, filter, options)


def apply_banding_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("banding",), m, calibration, filter, options)


def replace_bad_pixels_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("badpix",), m, calibration, filter, options)


def correct_vignetting_map(m, calibration=None, *, filter=None, **options):
    return _steps_map(("vignetting",), m, calibration, filter, options)


for _f, _step, _what in (
    (subtract_bias_map, "bias", "DN → electrons; BLANK → missing, 16383 → saturated"),
    (correct_nonlinearity_map, "nonlin", "measured → linear electrons; beyond the table → saturated"),
    (estimate_variance_map, "variance", "read, dark and photon noise in electrons²"),
    (subtract_dark_map, "dark", "dark(T)·t/gain electrons subtracted"),
    (flat_field_map, "flat", "division by the flat of the filter"),
    (to_msb_map, "msb", "electrons → MSB with Aphot, gain and EXPTIME"),
    (apply_banding_map, "banding", "needs ``banding=True`` or a callable; skipped otherwise"),
    (replace_bad_pixels_map, "badpix", "hot pixels and k·σ outliers → 3×3 median"),
    (correct_vignetting_map, "vignetting", "division by the vignetting model, masked below a threshold"),
):
    _f.__doc__ = _make_step_doc(_step, _what)
del _f, _step, _what


# =============================================================================================
# Physical units
# =============================================================================================

_PHOTON_RADIANCE = u.ph / (u.s * u.cm**2 * u.sr)
_ENERGY_RADIANCE = u.W / (u.m**2 * u.sr)


def _radiometric_constants(filter, calibration, meta=None):
    """Aphot [DN/s/MSB], photon radiance of 1 MSB, photon energy [J]."""
    meta = meta or {}
    if calibration is None and "a_phot" in meta and "conv_pho" in meta and "conv_wat" in meta:
        aphot = float(meta["a_phot"])
        conv_pho = float(meta["conv_pho"])
        conv_wat = float(meta["conv_wat"])
        # CONV_PHO = Aphot/MSB; CONV_WAT = CONV_PHO/E/1e4
        return aphot, aphot / conv_pho, conv_pho / conv_wat / 1e4
    name = filter_info(filter).name
    if calibration is not None:
        return calibration.aphot(name), calibration.msb(name), calibration.photon_energy(name)
    entry = default_config()["calib_data"][name]
    return float(entry["Aphot"]), float(entry["MSB"]), float(entry["Photon_energy"])


def _msb_factor(unit, aphot, msb_phot, e_ph):
    """Factor (Quantity per MSB) converting MSB to ``unit``."""
    unit = u.Unit(unit)
    if unit.is_equivalent(MSB):
        return (1.0 * MSB).to(unit)
    dn_rate = aphot * u.DN / u.s
    if unit.is_equivalent(u.DN / u.s):
        return dn_rate.to(unit)
    photons = msb_phot * _PHOTON_RADIANCE
    if unit.is_equivalent(_PHOTON_RADIANCE):
        return photons.to(unit)
    energy = photons * (e_ph * u.J / u.ph)
    if unit.is_equivalent(_ENERGY_RADIANCE):
        return energy.to(unit)
    raise u.UnitConversionError(
        f"cannot convert MSB to {unit}; use DN/s, a photon radiance (ph s-1 cm-2 sr-1) or an energy "
        "radiance (W m-2 sr-1)"
    )


def to_physical_units(data, unit, *, filter=None, calibration=None):
    """
    Convert MSB to DN s⁻¹, photon radiance or energy radiance.

    Parameters
    ----------
    data : `~aspiics.map.ASPIICSMap`, `~astropy.units.Quantity` or `numpy.ndarray`
        A level-2/3 map in MSB, or values in MSB (a bare array is taken as MSB).
    unit : str or `~astropy.units.UnitBase`
        ``'DN/s'``, ``'ph s-1 cm-2 sr-1'`` (or any photon radiance), ``'W m-2 sr-1'`` (or any energy
        radiance, e.g. ``'erg s-1 cm-2 sr-1'``).
    filter : str, optional
        The filter (default: the map's ``FILTER``). Needed for arrays.
    calibration : `~aspiics.calibration.CalibrationSet`, optional
        Source of Aphot, MSB and photon energy. Default: the map header (``A_PHOT``, ``CONV_PHO``,
        ``CONV_WAT``) when present, else the release-1.0 constants.

    Returns
    -------
    `~aspiics.map.ASPIICSMap` or `~astropy.units.Quantity`
        A new map (``BUNIT`` set, uncertainty scaled) or a Quantity.

    Notes
    -----
    DN s⁻¹ = MSB · Aphot; photon radiance = MSB · MSB_phot (``MSB`` of the config, the photon
    radiance of the mean solar disc in the passband) = (DN s⁻¹) / CONV_PHO; energy radiance =
    photon radiance · E_photon.
    """
    if hasattr(data, "meta") and hasattr(data, "data"):
        m = data
        bunit = str(m.meta.get("bunit", "")).strip().lower()
        if bunit != "msb":
            raise ProcessingError(
                f"{_filename(m)}: BUNIT is {m.meta.get('bunit')!r}, not 'MSB': calibrate to level 2 first"
            )
        flt = filter if filter is not None else _frame_filter(m)
        factor = _msb_factor(unit, *_radiometric_constants(flt, calibration, m.meta))
        value = np.float32(factor.value)
        meta = m.meta.copy()
        meta["bunit"] = factor.unit.to_string()
        meta["history"] = (
            str(meta.get("history", "") or "")
            + f"\n{_HISTORY_PREFIX}: converted MSB to {factor.unit} (x {factor.value:.6g})"
        ).lstrip("\n")
        unc = None
        if m.uncertainty is not None:
            sig = m.uncertainty.represent_as(StdDevUncertainty).array
            unc = StdDevUncertainty(np.asarray(sig, dtype=np.float32) * value, copy=False)
        return type(m)(np.asarray(m.data, dtype=np.float32) * value, meta, uncertainty=unc, mask=m.mask)
    if filter is None:
        raise HeaderError("to_physical_units on an array needs filter=...")
    if isinstance(data, u.Quantity):
        values = data.to_value(MSB)
    else:
        values = np.asarray(data)
    factor = _msb_factor(unit, *_radiometric_constants(filter, calibration))
    return values * factor
