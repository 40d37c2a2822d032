"""
Coronal emission-line products of ASPIICS (level 3): Fe XIV 530.4 nm and He I D3 587.7 nm.

The narrowband filters see the line *and* the continuum corona (K + F) within their passband.
The continuum is measured through the Wideband filter (536–566 nm, free of both lines), so

.. math::

    L = \\left(N - C\\,W - C_F\\,F\\right) / S

with ``N`` the narrowband and ``W`` the wideband brightness (each in the MSB of its own
filter), ``C`` the continuum ratio, ``F`` an optional F-corona model subtracted with weight
``C_F`` and ``S`` a line calibration scale.
"""

import logging
import warnings

import numpy as np
from astropy.nddata import StdDevUncertainty

from aspiics.exceptions import AspiicsUserWarning, ProcessingError
from aspiics.io import product_filename

__all__ = ["DEFAULT_CONTINUUM_RATIO", "DEFAULT_LINE_SCALE", "LINE_PRODUCTS", "line_emission"]

log = logging.getLogger(__name__)

#: PROD_ID of the line product per narrowband filter.
LINE_PRODUCTS = {"Fe XIV": "Green line", "He I": "He I D3 line"}

#: Continuum ratio C (narrowband MSB per wideband MSB of continuum corona) per narrowband filter.
#: 1.0: each filter is calibrated in MSB of its own passband, and the continuum corona (Thomson-
#: scattered K-corona and dust-scattered F-corona) has nearly the photospheric spectrum, so its
#: MSB value is the same in every passband up to colour terms of a few per cent. The reference
#: processor (``l3_onband.py``) also uses 1.0 (``C_K_G``, ``C_K_D3``) pending an in-flight
#: calibration; pass measured values through ``continuum_ratio``. For data made by
#: `aspiics.simulate` C = 1 is exact by construction: the scene's continuum ``B`` (MSB) is the
#: same in every filter and each filter is calibrated with its own ``Aphot``.
DEFAULT_CONTINUUM_RATIO = {"Fe XIV": 1.0, "He I": 1.0}

#: Line calibration scale S (the reference's ``C_gr_G`` and ``C_D3_D3``, both 1.0): the result is
#: divided by it.
DEFAULT_LINE_SCALE = {"Fe XIV": 1.0, "He I": 1.0}


def _name(m):
    return m.meta.get("filename") or f"<{m.meta.get('filter', 'unknown filter')} map>"


def _same_grid(a, b):
    if a.data.shape != b.data.shape:
        return False
    keys = ("crpix1", "crpix2", "crval1", "crval2", "cdelt1", "cdelt2")
    for key in keys:
        va, vb = a.meta.get(key), b.meta.get(key)
        if va is None or vb is None or not np.isclose(float(va), float(vb), rtol=0, atol=1e-9):
            return False
    return np.allclose(a.rotation_matrix, b.rotation_matrix, atol=1e-12) and (
        str(a.meta.get("ctype1")) == str(b.meta.get("ctype1"))
    )


def _on_grid(m, reference, what):
    """(data, sigma) of ``m`` on the grid of ``reference`` (resampled if needed)."""
    data = np.asarray(m.data, dtype=np.float32)
    sigma = m.sigma
    if m.mask is not None and np.any(m.mask):
        data = data.copy()
        data[np.asarray(m.mask, bool) & ~np.isposinf(data)] = np.nan
    if _same_grid(m, reference):
        return data, sigma
    log.info("resampling the %s %s onto the grid of %s", what, _name(m), _name(reference))
    from aspiics.resample import reproject_affine

    out = reproject_affine(
        (data, m.wcs),
        reference.wcs,
        shape_out=reference.data.shape,
        return_footprint=False,
        uncertainty=sigma,
    )
    if sigma is None:
        return out, None
    return out[0], out[1]


def _is_f_corona_free(m):
    return bool(m.meta.get("fcor_mod"))


def line_emission(
    narrowband_map,
    wideband_map,
    *,
    continuum_ratio=None,
    f_corona=None,
    f_corona_ratio=1.0,
    line_scale=None,
):
    """
    Line emission (Fe XIV or He I D3) by subtracting the wideband continuum.

    Parameters
    ----------
    narrowband_map : `~aspiics.map.ASPIICSMap`
        Fe XIV or He I brightness (MSB), level 2 or 3.
    wideband_map : `~aspiics.map.ASPIICSMap`
        Wideband brightness (MSB), level 2 or 3; resampled onto the narrowband grid when the
        two grids differ (`aspiics.resample.reproject_affine`).
    continuum_ratio : float, optional
        C; default `DEFAULT_CONTINUUM_RATIO` of the narrowband filter (1.0).
    f_corona : None, 'koutchmy', 'allen' or `~sunpy.map.GenericMap`, optional
        F-corona subtracted in addition to ``C·W``: a model name (evaluated on the narrowband
        grid, `aspiics.fcorona.f_corona_model`) or a map (resampled if needed). Use it only
        when the wideband map has had the F-corona removed (``FCOR_MOD`` set by
        `aspiics.fcorona.subtract_f_corona`): an ordinary wideband map contains the F-corona
        and ``C·W`` removes it from the narrowband already.
    f_corona_ratio : float, optional
        C_F, weight of the F-corona (default 1.0: the F-corona has the photospheric spectrum).
    line_scale : float, optional
        S, the result is divided by it; default `DEFAULT_LINE_SCALE` (1.0).

    Returns
    -------
    `~aspiics.map.ASPIICSMap`
        ``(N − C·W − C_F·F) / S`` in MSB of the narrowband filter (float32), PROD_ID 'Green line'
        or 'He I D3 line', LEVEL 'L3', PARENT = both inputs, keywords ``CONT_RAT``, ``FCOR_RAT``,
        ``LINE_SCL`` and HISTORY. σ = √(σ_N² + C² σ_W²) / S when both inputs have one; a pixel
        missing in either input is missing (NaN), saturated (+Inf) in either is +Inf.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        The narrowband map is not Fe XIV or He I, the wideband map is not Wideband, or a
        brightness is not in MSB.

    Warns
    -----
    aspiics.exceptions.AspiicsUserWarning
        F-corona given while the wideband map still contains it, or the wideband map had its
        F-corona removed and none is given (the F-corona is then left in the line product).

    Notes
    -----
    The reference processor computes ``(N − C_K W) / C_line`` with every coefficient at 1 and
    computes, but does not subtract, an Allen F-corona. The default coefficients here are the
    same (1.0); they are parameters so that in-flight calibrations can be applied.

    Level-2 frames are not corrected for the IO vignetting by default: below ~1.2 R☉, where
    the vignetting of the two filters (different IO centres) differs, correct it in both maps
    first or the continuum does not cancel exactly there.

    On simulated frames (`aspiics.simulate`, which adds the Fe XIV / He I line of
    `aspiics.simulate.CoronaModel.line_brightness` to the narrowband scenes) the result
    recovers the injected line within the propagated noise, with C = 1 exact (see
    `DEFAULT_CONTINUUM_RATIO`).
    """
    nb_info = narrowband_map.filter
    if nb_info is None or nb_info.name not in LINE_PRODUCTS:
        raise ProcessingError(
            f"{_name(narrowband_map)} has FILTER={narrowband_map.meta.get('filter')!r}: the narrowband "
            "map must be 'Fe XIV' or 'He I'"
        )
    wb_info = wideband_map.filter
    if wb_info is None or wb_info.name != "Wideband":
        raise ProcessingError(
            f"{_name(wideband_map)} has FILTER={wideband_map.meta.get('filter')!r}: the continuum map must "
            "be 'Wideband'"
        )
    for m in (narrowband_map, wideband_map):
        if str(m.meta.get("bunit", "")).strip().upper() != "MSB" or m.processing_level == 1:
            raise ProcessingError(
                f"{_name(m)} is not in MSB (BUNIT={m.meta.get('bunit')!r}): calibrate it first"
            )
    name = nb_info.name
    c = DEFAULT_CONTINUUM_RATIO[name] if continuum_ratio is None else float(continuum_ratio)
    s = DEFAULT_LINE_SCALE[name] if line_scale is None else float(line_scale)
    if s == 0:
        raise ProcessingError("line_scale must not be zero")

    nb = np.asarray(narrowband_map.data, dtype=np.float32)
    if narrowband_map.mask is not None and np.any(narrowband_map.mask):
        nb = nb.copy()
        nb[np.asarray(narrowband_map.mask, bool) & ~np.isposinf(nb)] = np.nan
    wb, wb_sigma = _on_grid(wideband_map, narrowband_map, "wideband map")

    wb_free = _is_f_corona_free(wideband_map)
    f_values = None
    f_label = "none"
    if f_corona is not None:
        if not wb_free:
            warnings.warn(
                f"{_name(wideband_map)} still contains the F-corona: subtracting an F-corona as well removes "
                "it twice; pass f_corona only with an F-corona-free wideband map",
                AspiicsUserWarning,
                stacklevel=2,
            )
        if isinstance(f_corona, str):
            from aspiics.fcorona import f_corona_model

            f_values = f_corona_model(narrowband_map, f_corona, as_map=False)
            f_label = f"model {f_corona.lower()}"
        else:
            f_values, _ = _on_grid(f_corona, narrowband_map, "F-corona map")
            f_label = f"map {_name(f_corona)}"
    elif wb_free:
        warnings.warn(
            f"{_name(wideband_map)} has had its F-corona removed ({wideband_map.meta['fcor_mod']}) but no "
            "f_corona is given: the F-corona stays in the line product",
            AspiicsUserWarning,
            stacklevel=2,
        )

    with np.errstate(invalid="ignore", over="ignore"):
        line = nb - np.float32(c) * wb
        if f_values is not None:
            line = line - np.float32(f_corona_ratio) * f_values.astype(np.float32)
        if s != 1.0:
            line = line / np.float32(s)
    line = line.astype(np.float32)
    missing = np.isnan(nb) | np.isnan(wb)
    saturated = (np.isposinf(nb) | np.isposinf(wb)) & ~missing
    line[missing] = np.nan
    line[saturated] = np.inf

    unc = None
    nb_sigma = narrowband_map.sigma
    if nb_sigma is not None and wb_sigma is not None:
        sig = np.sqrt(np.square(nb_sigma.astype(np.float64)) + (c * wb_sigma.astype(np.float64)) ** 2) / abs(
            s
        )
        unc = StdDevUncertainty(sig.astype(np.float32), copy=False)

    from sunpy.util import MetaDict

    from aspiics import __version__
    from aspiics.fcorona import _append_history, _set_stats
    from aspiics.map import ASPIICSMap

    meta = MetaDict(dict(narrowband_map.meta))
    for key in ("blank", "bzero", "bscale", "filename", "datamin", "datamax", "datamean", "datamedn"):
        meta.pop(key, None)
    prod_id = LINE_PRODUCTS[name]
    meta["level"] = "L3"
    meta["prod_id"] = prod_id
    meta["btype"] = prod_id
    meta["bunit"] = "MSB"
    parents = [str(m.meta["filename"]) for m in (narrowband_map, wideband_map) if m.meta.get("filename")]
    if parents:
        meta["parent"] = ", ".join(parents)
    name_out = product_filename(narrowband_map.filter.code, narrowband_map.meta)
    if name_out:
        meta["filename"] = name_out
    meta["cont_rat"] = c
    meta["fcor_rat"] = float(f_corona_ratio) if f_values is not None else 0.0
    meta["line_scl"] = s
    _append_history(
        meta,
        [
            f"aspiics {__version__} line_emission: ({name} - C*Wideband - C_F*F) / S",
            f"C = {c:g}, C_F = {meta['fcor_rat']:g} (F-corona: {f_label}), S = {s:g}",
        ],
    )
    _set_stats(meta, line)
    mask = ~np.isfinite(line)
    return ASPIICSMap(line, meta, mask=mask, uncertainty=unc)
