"""
Models of the F-corona (dust-scattered photospheric light) in Mean Solar Brightness (MSB).

The F-corona is unpolarized at the heights seen by ASPIICS and dominates the total brightness
above ~2–2.5 R☉. These pure functions evaluate tabulated empirical models; the map-level
F-corona removal of the L3 products is built on them.
"""

import logging

import astropy.units as u
import numpy as np

__all__ = [
    "ALLEN_LOG_F",
    "ALLEN_R",
    "F_CORONA_MODELS",
    "KOUTCHMY_LOG_F1",
    "KOUTCHMY_LOG_F2",
    "KOUTCHMY_R",
    "allen_f_corona",
    "f_corona_model",
    "helioprojective_polar",
    "koutchmy_f_corona",
    "subtract_f_corona",
]

log = logging.getLogger(__name__)

#: Names of the F-corona models accepted by `f_corona_model` and their description.
F_CORONA_MODELS = {
    "koutchmy": "Koutchmy (2000) equatorial/polar model",
    "allen": "Allen (1977) polar-symmetric model",
}

#: Radii (R☉) of the Koutchmy (2000) F-corona table. The first five nodes (< 1.1 R☉) are
#: padding that keeps the interpolation smooth inside the occulter.
KOUTCHMY_R = np.array(
    [0.1, 0.5, 0.95, 1.03, 1.06, 1.10, 1.20, 1.40, 1.60, 2.00, 2.50, 3.00, 4.00, 5.00, 10.0]
)
#: log10 of the equatorial F-corona brightness (MSB) of the Koutchmy (2000) table.
KOUTCHMY_LOG_F1 = (
    np.array([3.25, 3.24, 3.23, 3.21, 3.20, 3.10, 2.90, 2.50, 2.25, 1.91, 1.66, 1.48, 1.23, 1.00, 0.31])
    - 10.0
)
#: log10 of the polar F-corona brightness (MSB) of the Koutchmy (2000) table.
KOUTCHMY_LOG_F2 = (
    np.array([3.25, 3.23, 3.23, 3.21, 3.20, 3.10, 2.90, 2.50, 2.25, 1.82, 1.56, 1.33, 1.03, 0.80, 0.06])
    - 10.0
)

#: Radii (R☉) of the Allen (1977) F-corona table; the first three nodes are padding.
ALLEN_R = np.array(
    [
        0.01,
        0.5,
        0.90,
        1.01,
        1.03,
        1.06,
        1.10,
        1.20,
        1.40,
        1.60,
        1.80,
        2.00,
        2.20,
        2.50,
        3.00,
        4.00,
        5.00,
        10.0,
    ]
)
#: log10 of the (polar-symmetric) Allen (1977) F-corona brightness (MSB).
ALLEN_LOG_F = (
    np.array(
        [
            3.27,
            3.26,
            3.27,
            3.22,
            3.16,
            3.06,
            3.00,
            2.80,
            2.46,
            2.24,
            2.06,
            1.93,
            1.81,
            1.65,
            1.43,
            1.10,
            0.83,
            0.23,
        ]
    )
    - 10.0
)


def _as_value(x, unit):
    if isinstance(x, u.Quantity):
        x = x.to_value(unit)
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(float)


def _interp_log(r, r_nodes, log_nodes):
    """Linear interpolation of log10 brightness in r, linear extrapolation beyond the table."""
    r = np.asarray(r)
    val = np.interp(r, r_nodes, log_nodes)
    if r.size and r.min() < r_nodes[0]:
        lo_slope = (log_nodes[1] - log_nodes[0]) / (r_nodes[1] - r_nodes[0])
        val = np.where(r < r_nodes[0], log_nodes[0] + (r - r_nodes[0]) * lo_slope, val)
    if r.size and r.max() > r_nodes[-1]:
        hi_slope = (log_nodes[-1] - log_nodes[-2]) / (r_nodes[-1] - r_nodes[-2])
        val = np.where(r > r_nodes[-1], log_nodes[-1] + (r - r_nodes[-1]) * hi_slope, val)
    return val


def _pow10(log_f, like):
    """10**log_f, in float32 when the radius was given in float32 (speed), else float64."""
    if np.asarray(like).dtype == np.float32:
        return np.power(np.float32(10.0), np.asarray(log_f, dtype=np.float32))
    return np.power(10.0, log_f)


def koutchmy_f_corona(r, position_angle):
    """
    F-corona brightness of Koutchmy (2000), mixed between equator and pole.

    Parameters
    ----------
    r : float, array_like or `~astropy.units.Quantity`
        Projected distance from Sun centre in solar radii (a dimensionless Quantity, or a
        Quantity in units of ``u.R_sun`` with the plane-of-sky meaning, is accepted).
    position_angle : float, array_like or `~astropy.units.Quantity`
        Solar position angle: measured from solar north, counter-clockwise (through east) as
        seen on the sky. Radians if a plain number, any angle unit if a Quantity. Must
        broadcast against ``r``.

    Returns
    -------
    `numpy.ndarray` or float
        F-corona brightness in MSB, same broadcast shape as the inputs; float64, or float32
        when ``r`` is a float32 array (the table look-up itself is always done in float64).

    Notes
    -----
    The table (SPEC §9; Koutchmy 2000) gives ``log10 F1`` (equatorial) and ``log10 F2``
    (polar) at r = 0.1 … 10 R☉, the nodes below 1.1 R☉ being padding. Each profile is
    interpolated linearly in ``log10 F`` versus ``r`` (linear extrapolation beyond the ends).
    The two are mixed in log space, as in the reference processor, with the weight of F1

    ``w = |(|phi| - pi/2)| / (pi/2)``,

    where ``phi`` is the angle from the solar equator (``phi = position_angle - pi/2``,
    wrapped to [-pi, pi]); ``w = 1`` on the equator (PA = 90°, 270°) and ``0`` at the poles
    (PA = 0°, 180°), linear in angle in between:
    ``log10 F = w log10 F1 + (1 - w) log10 F2``. The model is symmetric about the solar
    equator, so the sense of the position angle does not matter.

    References
    ----------
    Koutchmy, S. 2000, in *Allen's Astrophysical Quantities*, 4th ed., ed. A. N. Cox
    (tabulation used by the ASPIICS reference L3 processor).

    Examples
    --------
    >>> import astropy.units as u
    >>> from aspiics.fcorona import koutchmy_f_corona
    >>> print(f"{koutchmy_f_corona(2.0, 90 * u.deg):.3e}")  # equator: 10**(1.91 - 10)
    8.128e-09
    """
    rr = _as_value(r, u.dimensionless_unscaled) if not _is_rsun(r) else r.to_value(u.R_sun)
    pa = _as_value(position_angle, u.rad)
    phi = np.mod(pa - np.pi / 2 + np.pi, 2 * np.pi) - np.pi  # angle from the equator in [-pi, pi)
    w1 = np.abs(np.abs(phi) - np.pi / 2) / (np.pi / 2)
    f1 = _interp_log(rr, KOUTCHMY_R, KOUTCHMY_LOG_F1)
    f2 = _interp_log(rr, KOUTCHMY_R, KOUTCHMY_LOG_F2)
    out = _pow10(f2 + w1 * (f1 - f2), rr)
    return out[()] if isinstance(out, np.ndarray) else out


def allen_f_corona(r):
    """
    Polar-symmetric F-corona brightness after Allen (1977).

    Parameters
    ----------
    r : float, array_like or `~astropy.units.Quantity`
        Projected distance from Sun centre in solar radii.

    Returns
    -------
    `numpy.ndarray` or float
        F-corona brightness in MSB; float64, or float32 when ``r`` is a float32 array.

    Notes
    -----
    ``log10 B_F + 10`` (B in MSB) at r (R☉):

    ====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====
    r     1.01   1.03   1.06   1.10   1.20   1.40   1.60   1.80   2.00   2.20   2.50   3.00   4.00   5.00
    logB  3.22   3.16   3.06   3.00   2.80   2.46   2.24   2.06   1.93   1.81   1.65   1.43   1.10   0.83
    ====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====  =====

    and 0.23 at 10 R☉, with padding nodes at 0.01, 0.5 and 0.9 R☉ (3.27, 3.26, 3.27).
    Interpolated linearly in ``log10 B`` versus ``r`` (linear extrapolation beyond the ends).

    Source: this is the tabulation of Allen's *Astrophysical Quantities* (3rd ed., 1973;
    reprinted 1977) F-corona that the ASPIICS team used for the simulated data of Shestov et
    al. (2021) and that the reference L3 processor ships as its ``'Allen'`` option. We could
    not re-check every node against the printed book; between 1.1 and 3 R☉ the values lie
    within ~0.1 dex of the Koutchmy (2000) equatorial and polar profiles.

    References
    ----------
    Allen, C. W. 1973, *Astrophysical Quantities*, 3rd ed. (London: Athlone Press), §81.
    Shestov, S. V. et al. 2021, A&A 652, A4.

    Examples
    --------
    >>> from aspiics.fcorona import allen_f_corona
    >>> print(f"{allen_f_corona(2.0):.3e}")
    8.511e-09
    """
    rr = _as_value(r, u.dimensionless_unscaled) if not _is_rsun(r) else r.to_value(u.R_sun)
    out = _pow10(_interp_log(rr, ALLEN_R, ALLEN_LOG_F), rr)
    return out[()] if isinstance(out, np.ndarray) else out


def _is_rsun(x):
    return isinstance(x, u.Quantity) and x.unit.is_equivalent(u.R_sun) and x.unit != u.dimensionless_unscaled


# ----------------------------------------------------------------------------------------------------
# Map level
# ----------------------------------------------------------------------------------------------------
def helioprojective_polar(m):
    """
    Projected distance from Sun centre and solar position angle of every pixel of a map.

    Parameters
    ----------
    m : `sunpy.map.GenericMap`
        A map with a helioprojective WCS (any pointing, roll or plate scale).

    Returns
    -------
    r : `numpy.ndarray`
        Angular distance from Sun centre in units of the map's ``rsun_obs`` (R☉, float64).
    position_angle : `numpy.ndarray`
        Solar position angle in radians, from solar north counter-clockwise through east
        (``atan2(−Tx, Ty)``), in (−π, π].

    Notes
    -----
    The helioprojective longitude/latitude of each pixel come from the WCS
    (``pixel_to_world_values``), so the result does not depend on the map's rotation. The distance
    is the great-circle angle ``arccos(cos Tx cos Ty)``.
    """
    ny, nx = m.data.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    lon, lat = m.wcs.pixel_to_world_values(xx.astype(np.float64), yy.astype(np.float64))
    del xx, yy
    unit1 = u.Unit(m.wcs.wcs.cunit[0] or "deg")
    unit2 = u.Unit(m.wcs.wcs.cunit[1] or "deg")
    tx = np.asarray(lon) * unit1.to(u.rad)
    ty = np.asarray(lat) * unit2.to(u.rad)
    tx = np.mod(tx + np.pi, 2 * np.pi) - np.pi
    rho = np.arccos(np.clip(np.cos(tx) * np.cos(ty), -1.0, 1.0))
    rsun = m.rsun_obs.to_value(u.rad)
    return rho / rsun, np.arctan2(-tx, ty)


def _model_values(m, model):
    key = str(model).lower()
    if key not in F_CORONA_MODELS:
        from aspiics.exceptions import ProcessingError

        raise ProcessingError(f"unknown F-corona model {model!r}; use one of {', '.join(F_CORONA_MODELS)}")
    r, pa = helioprojective_polar(m)
    if key == "koutchmy":
        return koutchmy_f_corona(r, pa), key
    return allen_f_corona(r), key


def f_corona_model(m, model="koutchmy", *, as_map=True):
    """
    The F-corona model evaluated on the pixels of a map.

    Parameters
    ----------
    m : `sunpy.map.GenericMap`
        Any helioprojective map (ASPIICS L2 detector frame or L3 north-up grid, any roll).
    model : {'koutchmy', 'allen'}, optional
        `koutchmy_f_corona` (default) or `allen_f_corona`.
    as_map : bool, optional
        Return an `~aspiics.map.ASPIICSMap` (default) or a plain array.

    Returns
    -------
    `~aspiics.map.ASPIICSMap` or `numpy.ndarray`
        F-corona brightness in MSB (float32), with PROD_ID 'F-corona model' and HISTORY when a
        map.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        Unknown model.

    Notes
    -----
    The distance from Sun centre is taken in units of the map's ``rsun_obs`` (``RSUN_ARC``) and
    the position angle from solar north through the helioprojective coordinates of each pixel
    (`helioprojective_polar`), so the model is right whatever the map's rotation and centring.
    The reference processor computes both in pixels from ``CRPIX`` and assumes a north-up,
    Sun-centred image (with a one-pixel ``CRPIX`` inconsistency between its scripts).
    """
    values, key = _model_values(m, model)
    values = values.astype(np.float32)
    if not as_map:
        return values
    from aspiics.map import ASPIICSMap

    meta = _l3_meta(m, "F-corona model")
    meta["fcor_mod"] = key
    _append_history(meta, [f"F-corona model: {F_CORONA_MODELS[key]} (aspiics.fcorona.f_corona_model)"])
    _set_stats(meta, values)
    return ASPIICSMap(values, meta)


def _l3_meta(m, prod_id):
    from sunpy.util import MetaDict

    meta = MetaDict(dict(m.meta))
    for key in ("blank", "bzero", "bscale"):
        meta.pop(key, None)
    meta["level"] = "L3"
    meta["prod_id"] = prod_id
    meta["btype"] = prod_id
    meta["bunit"] = "MSB"
    return meta


def _append_history(meta, lines):
    """Append lines to the ``HISTORY`` of a metadata dict (shared by the L3 product modules)."""
    old = meta.get("history", "")
    old = "\n".join(old) if isinstance(old, list | tuple) else str(old or "")
    meta["history"] = "\n".join([x for x in [old, *lines] if x])


def _set_stats(meta, data):
    """``DATAMIN``, ``DATAMAX``, ``DATAMEAN``, ``DATAMEDN`` of the finite pixels (removed if none)."""
    from aspiics.calibrate import valid_statistics

    stats = valid_statistics(data)
    for key, value in stats.items():
        if np.isfinite(value):
            meta[key.lower()] = value
        else:
            meta.pop(key.lower(), None)


def subtract_f_corona(m, model="koutchmy"):
    """
    Remove the F-corona model from a total-brightness map.

    Parameters
    ----------
    m : `~aspiics.map.ASPIICSMap`
        A brightness map in MSB: a Wideband (or polarizer-derived total brightness) frame of
        level 2 or 3.
    model : {'koutchmy', 'allen'}, optional
        F-corona model, see `f_corona_model`.

    Returns
    -------
    `~aspiics.map.ASPIICSMap`
        ``data − F`` (float32) with PROD_ID 'Total brightness', LEVEL 'L3', ``FCOR_MOD`` = the
        model, PARENT = the input file, a HISTORY line naming the model, the input's
        uncertainty (the model is taken as exact) and mask. NaN and +Inf pixels stay so.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If the map is not a brightness in MSB (e.g. level 1, pB, angle or line emission), or the
        F-corona was removed already (``FCOR_MOD`` present).
    """
    from aspiics.exceptions import ProcessingError
    from aspiics.map import ASPIICSMap

    name = m.meta.get("filename") or "the map"
    if m.meta.get("fcor_mod"):
        raise ProcessingError(
            f"the F-corona ({m.meta['fcor_mod']}) was removed from {name} already; pass the original map"
        )
    if str(m.meta.get("bunit", "")).strip().upper() != "MSB" or getattr(m, "processing_level", 2) == 1:
        raise ProcessingError(
            f"{name} is not a brightness map in MSB (BUNIT={m.meta.get('bunit')!r}): calibrate it first"
        )
    prod = m.meta.get("prod_id")
    if prod and prod != "Total brightness":
        raise ProcessingError(
            f"{name} is a {prod!r} product: the F-corona is removed from total brightness only"
        )
    info = getattr(m, "filter", None)
    if prod is None and info is not None and info.name != "Wideband":
        raise ProcessingError(
            f"{name} was taken through {info.name!r}: remove the F-corona from Wideband or "
            "total-brightness maps (use aspiics.lines.line_emission for Fe XIV / He I)"
        )
    values, key = _model_values(m, model)
    data = np.asarray(m.data, dtype=np.float32) - values.astype(np.float32)
    meta = _l3_meta(m, "Total brightness")
    meta["fcor_mod"] = key
    from aspiics.io import product_filename

    meta.pop("filename", None)
    if m.meta.get("filename"):
        meta["parent"] = m.meta["filename"]
        name = product_filename("bt", m.meta)
        if name:
            meta["filename"] = name
    _append_history(meta, [f"F-corona removed: {F_CORONA_MODELS[key]} (aspiics.fcorona.subtract_f_corona)"])
    _set_stats(meta, data)
    mask = ~np.isfinite(data)
    if m.mask is not None:
        mask |= np.asarray(m.mask, dtype=bool)
    return ASPIICSMap(data, meta, mask=mask, uncertainty=m.uncertainty)
