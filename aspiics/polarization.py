"""
Polarization products of ASPIICS (level 3): total brightness, polarized brightness, angle.

ASPIICS measures linear polarization with three polarizers of nominal orientation 0°, 60° and
120°. With ``ψ_k`` the orientation of polarizer ``k`` at a pixel, the brightness seen through it
is (SPEC §8)

.. math::

    I_k = \\tfrac12 \\left(B + Q \\cos 2\\psi_k + U \\sin 2\\psi_k\\right),

a 3×3 linear system per pixel for the total brightness ``B`` and the linear Stokes parameters
``Q`` and ``U``. `demodulate_arrays` inverts it in closed form on whole images;
`demodulate` does the map-level work: identification of the three frames, per-pixel
polarizer angle maps from the calibration set, alignment onto a common Sun-centred,
solar-north-up grid, rotation of the angles, and level-3 `~aspiics.map.ASPIICSMap` products.

Angle conventions
-----------------
All angles (polarizer orientations, the polarization angle, the tangential direction) are in
degrees, measured in the pixel frame of the image they belong to, from the +x axis (columns)
counter-clockwise towards +y (rows). On a solar-north-up level-3 grid +x points to solar west
and +y to solar north, so an angle of 90° is a polarization along the north-south direction.
The polarization angle is ``½ atan2(U, Q)``, in (−90°, 90°].
"""

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

import astropy.units as u
import numpy as np
from astropy.nddata import StdDevUncertainty

from aspiics.constants import filter_info
from aspiics.exceptions import AspiicsUserWarning, CalibrationError, ProcessingError
from aspiics.fcorona import _append_history, _set_stats
from aspiics.io import product_filename

__all__ = [
    "POLARIZER_NAMES",
    "PolarizationArrays",
    "PolarizationProducts",
    "demodulate",
    "demodulate_arrays",
    "demodulation_weights",
    "north_up_header",
    "tangential_angle",
    "to_ndcollection",
]

log = logging.getLogger(__name__)

#: FITS ``FILTER`` names of the three polarizers, in the order of their nominal angle.
POLARIZER_NAMES = ("Polarizer 0", "Polarizer 60", "Polarizer 120")

_ESTIMATORS = ("norm", "tangential")
_METHODS = ("closed-form", "linalg")
#: |det| of the (2×) modulation matrix below which a pixel is declared singular. For the nominal
#: angles det = 3 sin 120° ≈ 2.6; it vanishes when two polarizers are parallel.
_DET_MIN = 1e-3
_BLOCK_PIXELS = 1 << 18


# ----------------------------------------------------------------------------------------------------
# Pure array functions
# ----------------------------------------------------------------------------------------------------
@dataclass
class PolarizationArrays:
    """
    Result of `demodulate_arrays`.

    Attributes
    ----------
    B, Q, U : `numpy.ndarray`
        Total brightness and linear Stokes parameters (unit of the intensities).
    pB : `numpy.ndarray`
        Polarized brightness, by the estimator that was asked for.
    angle : `numpy.ndarray`
        Polarization angle ``½ atan2(U, Q)`` in degrees, in (−90, 90], same frame as the
        polarizer angles.
    sigma_B, sigma_Q, sigma_U, sigma_pB, sigma_angle : `numpy.ndarray` or None
        1σ uncertainties (angle in degrees), None when no per-frame σ was given.
    cov_QU : `numpy.ndarray` or None
        Covariance of Q and U.
    valid : `numpy.ndarray` of bool
        True where all inputs were finite and the system was not singular; the products are
        NaN elsewhere.
    pb_estimator : str
        ``'norm'`` or ``'tangential'``.
    """

    B: np.ndarray
    Q: np.ndarray
    U: np.ndarray
    pB: np.ndarray
    angle: np.ndarray
    valid: np.ndarray
    sigma_B: np.ndarray | None = None
    sigma_Q: np.ndarray | None = None
    sigma_U: np.ndarray | None = None
    sigma_pB: np.ndarray | None = None
    sigma_angle: np.ndarray | None = None
    cov_QU: np.ndarray | None = None
    pb_estimator: str = "norm"

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        """Names of the fields, as for a dict."""
        return [f.name for f in fields(self)]


def demodulation_weights(angles_deg):
    """
    Closed-form demodulation weights of three polarizers.

    Parameters
    ----------
    angles_deg : sequence of 3 float or array_like
        Polarizer orientations ``ψ_k`` (degrees); arrays broadcast against each other.

    Returns
    -------
    wB, wQ, wU : tuple of 3 arrays each
        Weights such that ``B = Σ_k wB[k] I_k`` (same for Q and U).
    det : `numpy.ndarray` or float
        Determinant of the matrix ``[[1, cos 2ψ_k, sin 2ψ_k]]`` (zero when two polarizers are
        parallel).

    Notes
    -----
    With ``t_k = 2ψ_k``, ``c_k = cos t_k``, ``s_k = sin t_k`` and indices taken cyclically, the
    cofactors of ``M' = [[1, c_k, s_k]]`` give

    * ``det = Σ_k sin(t_{k+1} − t_k)``,
    * ``wB_k = 2 sin(t_{k+2} − t_{k+1}) / det``,
    * ``wQ_k = 2 (s_{k+1} − s_{k+2}) / det``,
    * ``wU_k = 2 (c_{k+2} − c_{k+1}) / det``

    (the factor 2 undoes the ½ of the model). For 0/60/120°: ``wB = (⅔, ⅔, ⅔)``,
    ``wQ = (4/3, −⅔, −⅔)``, ``wU = (0, 2/√3, −2/√3)``.
    """
    t = [np.radians(2.0 * np.asarray(a, dtype=np.float64)) for a in angles_deg]
    if len(t) != 3:
        raise ProcessingError(f"three polarizer angles are needed, got {len(t)}")
    c = [np.cos(x) for x in t]
    s = [np.sin(x) for x in t]
    det = np.sin(t[1] - t[0]) + np.sin(t[2] - t[1]) + np.sin(t[0] - t[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        two_over_det = 2.0 / det
        wB = tuple(np.sin(t[(k + 2) % 3] - t[(k + 1) % 3]) * two_over_det for k in range(3))
        wQ = tuple((s[(k + 1) % 3] - s[(k + 2) % 3]) * two_over_det for k in range(3))
        wU = tuple((c[(k + 2) % 3] - c[(k + 1) % 3]) * two_over_det for k in range(3))
    return wB, wQ, wU, det


def tangential_angle(shape, center):
    """
    Direction perpendicular to the radius from a centre, per pixel (degrees, in (−90, 90]).

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    center : tuple of float
        ``(x, y)`` 0-based pixel of Sun centre.

    Returns
    -------
    `numpy.ndarray` (float64)
        ``atan2(y − yc, x − xc) + 90°`` wrapped to (−90, 90]: the tangential direction, along
        which the K-corona (Thomson scattering) is polarized. Valid for grids with square pixels
        and no skew (all ASPIICS grids).
    """
    ny, nx = shape
    y = np.arange(ny, dtype=np.float64)[:, None] - center[1]
    x = np.arange(nx, dtype=np.float64)[None, :] - center[0]
    return _wrap90(np.degrees(np.arctan2(y, x)) + 90.0)


def _wrap90(angle):
    """Wrap degrees to (−90, 90]."""
    out = np.mod(angle + 90.0, 180.0) - 90.0
    return np.where(out <= -90.0, out + 180.0, out)


def _broadcast_inputs(intensities, angles_deg, sigmas, tangential):
    if len(intensities) != 3:
        raise ProcessingError(f"three polarizer intensities are needed, got {len(intensities)}")
    if len(angles_deg) != 3:
        raise ProcessingError(f"three polarizer angles are needed, got {len(angles_deg)}")
    arrays = [np.asarray(i) for i in intensities] + [np.asarray(a) for a in angles_deg]
    if sigmas is not None:
        if len(sigmas) != 3:
            raise ProcessingError(f"three σ arrays are needed, got {len(sigmas)}")
        arrays += [np.asarray(s) for s in sigmas]
    if tangential is not None:
        arrays.append(np.asarray(tangential))
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError as exc:
        raise ProcessingError(f"intensities, angles and σ do not broadcast: {exc}") from None
    return shape


def demodulate_arrays(
    intensities,
    angles_deg,
    sigmas=None,
    *,
    pb_estimator="norm",
    tangential_angle=None,
    method="closed-form",
    dtype=None,
    threads=2,
):
    """
    Solve ``I_k = ½ (B + Q cos 2ψ_k + U sin 2ψ_k)`` per pixel for B, Q, U, pB and the angle.

    Parameters
    ----------
    intensities : sequence of 3 array_like
        Brightness through each polarizer (any unit, e.g. MSB), same or broadcastable shapes.
    angles_deg : sequence of 3 float or array_like
        Polarizer orientation of each frame in degrees (scalars or per-pixel maps), measured in
        the same frame as the wanted polarization angle.
    sigmas : sequence of 3 array_like, optional
        1σ noise of each intensity (independent between frames). If given, the σ of every
        product is propagated.
    pb_estimator : {'norm', 'tangential'}, optional
        ``'norm'``: ``pB = √(Q² + U²)``, positive and biased high at low S/N (by ≈ σ²/(2 pB),
        and ≈ 1.25 σ_Q when there is no signal). ``'tangential'``: the projection of (Q, U) on the
        tangential direction, ``pB_t = Q cos 2α + U sin 2α`` with ``α = tangential_angle``;
        unbiased (it is linear in the data) and may be negative where noise dominates.
    tangential_angle : array_like, optional
        Tangential direction α (degrees, same frame as the angles). Required for
        ``pb_estimator='tangential'``; see `tangential_angle`.
    method : {'closed-form', 'linalg'}, optional
        ``'closed-form'``: cofactor inverse (`demodulation_weights`), vectorised. ``'linalg'``:
        `numpy.linalg.solve` on a stack of 3×3 matrices (slower; for comparison).
    dtype : dtype, optional
        Output dtype; default float32 when all intensities are float32, float64 otherwise. The
        demodulation weights are computed in float64, the products in the output dtype.
    threads : int, optional
        Number of threads over blocks of rows.

    Returns
    -------
    `PolarizationArrays`

    Raises
    ------
    aspiics.exceptions.ProcessingError
        Wrong number of inputs, shapes that do not broadcast, unknown estimator or method, or a
        tangential estimator without ``tangential_angle``.

    Notes
    -----
    Sign convention of the tangential estimator: with ``Q = pB cos 2α`` and ``U = pB sin 2α``
    for light polarized along α, the projection ``Q cos 2α_t + U sin 2α_t = pB cos 2(α − α_t)``
    equals pB for tangential polarization. With φ = α_t − 90° the radial direction it reads
    ``pB_t = −(Q cos 2φ + U sin 2φ)``.

    Uncertainties are propagated linearly through the closed-form inverse: with ``x = Σ w_k I_k``,
    ``var x = Σ w_k² σ_k²`` and ``cov(Q, U) = Σ wQ_k wU_k σ_k²``. For the nominal 0/60/120° the
    noise gains ``var/σ²`` are 4/3 for B and 8/3 for Q and U. For the norm estimator
    ``σ_pB² = (Q² σ_Q² + U² σ_U² + 2 Q U cov) / pB²`` (first order) and for the angle
    ``σ_angle = (90°/π) √(U² σ_Q² + Q² σ_U² − 2 Q U cov) / pB²``. ``σ_pB`` of the tangential
    estimator is exact: ``cos² 2α σ_Q² + sin² 2α σ_U² + 2 sin 2α cos 2α cov``.

    Pixels where an input is not finite, or the system is singular, are NaN and False in
    ``valid``.

    Examples
    --------
    >>> import numpy as np
    >>> from aspiics.polarization import demodulate_arrays
    >>> B, pB, alpha = 2.0, 0.5, 30.0
    >>> I = [0.5 * (B + pB * np.cos(np.radians(2 * (psi - alpha)))) for psi in (0, 60, 120)]
    >>> r = demodulate_arrays(I, (0, 60, 120))
    >>> print(f"{float(r.B):.3f} {float(r.pB):.3f} {float(r.angle):.1f}")
    2.000 0.500 30.0
    """
    if pb_estimator not in _ESTIMATORS:
        raise ProcessingError(f"pb_estimator must be one of {_ESTIMATORS}, got {pb_estimator!r}")
    if method not in _METHODS:
        raise ProcessingError(f"method must be one of {_METHODS}, got {method!r}")
    if pb_estimator == "tangential" and tangential_angle is None:
        raise ProcessingError("pb_estimator='tangential' needs tangential_angle (degrees, per pixel)")
    intensities = list(intensities)
    angles_deg = list(angles_deg)
    sigmas = None if sigmas is None else list(sigmas)
    shape = _broadcast_inputs(intensities, angles_deg, sigmas, tangential_angle)
    if dtype is None:
        all32 = all(np.asarray(i).dtype == np.float32 for i in intensities)
        dtype = np.float32 if all32 else np.float64
    scalar = len(shape) == 0
    work_shape = (1,) if scalar else shape

    def view(a):
        return np.broadcast_to(np.asarray(a), work_shape)

    inp = {
        "I": [view(i) for i in intensities],
        "psi": [np.asarray(a, dtype=np.float64) if np.ndim(a) == 0 else view(a) for a in angles_deg],
        "sig": None if sigmas is None else [view(s) for s in sigmas],
        "tan": None if tangential_angle is None else view(tangential_angle),
        # float32 outputs are computed in float32 (weights in float64): relative error ~1e-7 of B
        "work": np.float32 if np.dtype(dtype) == np.float32 else np.float64,
    }
    names = ["B", "Q", "U", "pB", "angle"]
    if sigmas is not None:
        names += ["sigma_B", "sigma_Q", "sigma_U", "sigma_pB", "sigma_angle", "cov_QU"]
    out = {n: np.empty(work_shape, dtype=dtype) for n in names}
    out["valid"] = np.empty(work_shape, dtype=bool)

    n_rows = work_shape[0]
    row_pixels = int(np.prod(work_shape[1:], dtype=np.int64)) if len(work_shape) > 1 else 1
    step = max(1, _BLOCK_PIXELS // max(row_pixels, 1))
    blocks = [slice(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]

    def run(sl):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            _demodulate_block(inp, out, sl, pb_estimator, method)

    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run, blocks))
    else:
        for sl in blocks:
            run(sl)

    if scalar:
        out = {k: v.reshape(()) for k, v in out.items()}
    return PolarizationArrays(pb_estimator=pb_estimator, **out)


def _take(a, sl):
    return a if np.ndim(a) == 0 else a[sl]


def _demodulate_block(inp, out, sl, estimator, method):
    work = inp["work"]
    I = [np.asarray(i[sl], dtype=work) for i in inp["I"]]  # noqa: E741
    psi = [_take(p, sl) for p in inp["psi"]]
    if method == "closed-form":
        wB, wQ, wU, det = demodulation_weights(psi)
    else:
        wB, wQ, wU, det = _weights_linalg(psi, I[0].shape)
    if work != np.float64:
        wB, wQ, wU = ([np.asarray(w, dtype=work) for w in ws] for ws in (wB, wQ, wU))
    B = wB[0] * I[0] + wB[1] * I[1] + wB[2] * I[2]
    Q = wQ[0] * I[0] + wQ[1] * I[1] + wQ[2] * I[2]
    U = wU[0] * I[0] + wU[1] * I[1] + wU[2] * I[2]
    valid = np.isfinite(B) & np.isfinite(Q) & np.isfinite(U) & (np.abs(det) > _DET_MIN)
    angle = np.arctan2(U, Q)
    angle *= 90.0 / np.pi  # ½ atan2 in degrees, in [-90, 90]
    angle[angle <= -90.0] = 90.0
    if estimator == "norm":
        pB = np.hypot(Q, U)
    else:
        a = np.radians(2.0 * np.asarray(inp["tan"][sl], dtype=work))
        ca, sa = np.cos(a), np.sin(a)
        pB = Q * ca + U * sa
    res = {"B": B, "Q": Q, "U": U, "pB": pB, "angle": angle}
    if inp["sig"] is not None:
        var = [np.square(np.asarray(s[sl], dtype=work)) for s in inp["sig"]]
        vB = sum(np.square(wB[k]) * var[k] for k in range(3))
        vQ = sum(np.square(wQ[k]) * var[k] for k in range(3))
        vU = sum(np.square(wU[k]) * var[k] for k in range(3))
        cQU = sum(wQ[k] * wU[k] * var[k] for k in range(3))
        p2 = Q * Q + U * U
        with np.errstate(divide="ignore", invalid="ignore"):
            if estimator == "norm":
                vpB = (Q * Q * vQ + U * U * vU + 2.0 * Q * U * cQU) / p2
                vpB = np.where(p2 > 0, vpB, 0.5 * (vQ + vU))
            else:
                vpB = ca * ca * vQ + sa * sa * vU + 2.0 * ca * sa * cQU
            vang = (U * U * vQ + Q * Q * vU - 2.0 * Q * U * cQU) / (p2 * p2)
            sang = np.where(p2 > 0, np.degrees(0.5 * np.sqrt(np.maximum(vang, 0.0))), np.nan)
        valid &= np.isfinite(vB)
        res.update(
            sigma_B=np.sqrt(vB),
            sigma_Q=np.sqrt(vQ),
            sigma_U=np.sqrt(vU),
            sigma_pB=np.sqrt(np.maximum(vpB, 0.0)),
            sigma_angle=sang,
            cov_QU=cQU,
        )
    for name, value in res.items():
        target = out[name][sl]
        target[...] = value
        target[~valid] = np.nan
    out["valid"][sl] = valid


def _weights_linalg(psi, shape):
    """Demodulation weights by `numpy.linalg.inv` of per-pixel 3×3 matrices (for comparison)."""
    t = [np.broadcast_to(np.radians(2.0 * np.asarray(p, dtype=np.float64)), shape) for p in psi]
    m = np.empty((*shape, 3, 3))
    for k in range(3):
        m[..., k, 0] = 0.5
        m[..., k, 1] = 0.5 * np.cos(t[k])
        m[..., k, 2] = 0.5 * np.sin(t[k])
    det = 8.0 * np.linalg.det(m)
    singular = np.abs(det) <= _DET_MIN
    m[singular] = np.eye(3)
    inv = np.linalg.solve(m, np.broadcast_to(np.eye(3), m.shape))
    inv[singular] = np.nan
    wB = tuple(inv[..., 0, k] for k in range(3))
    wQ = tuple(inv[..., 1, k] for k in range(3))
    wU = tuple(inv[..., 2, k] for k in range(3))
    return wB, wQ, wU, det


# ----------------------------------------------------------------------------------------------------
# Map level
# ----------------------------------------------------------------------------------------------------
@dataclass
class PolarizationProducts:
    """
    Level-3 polarization products returned by `demodulate`.

    Attributes
    ----------
    B : `~aspiics.map.ASPIICSMap`
        Total brightness (PROD_ID 'Total brightness', MSB).
    pB : `~aspiics.map.ASPIICSMap`
        Polarized brightness (PROD_ID 'Polarized brightness', MSB).
    angle : `~aspiics.map.ASPIICSMap`
        Polarization angle (PROD_ID 'Polarization angle', degrees from the +x axis of the
        grid, counter-clockwise; on the north-up grid +x is solar west).
    Q, U : `numpy.ndarray`
        Linear Stokes parameters on the same grid (MSB).
    arrays : `PolarizationArrays`
        All arrays, with σ and the covariance of Q and U.
    """

    B: object
    pB: object
    angle: object
    Q: np.ndarray
    U: np.ndarray
    arrays: PolarizationArrays

    def __getitem__(self, key):
        if key not in ("B", "pB", "angle"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(("B", "pB", "angle"))

    def keys(self):
        """``('B', 'pB', 'angle')``."""
        return ("B", "pB", "angle")

    def items(self):
        """``(key, map)`` pairs."""
        return [(k, self[k]) for k in self.keys()]

    def to_ndcollection(self):
        """The products as an `ndcube.NDCollection` (see `to_ndcollection`)."""
        return to_ndcollection(self)


_WCS_KEYS = (
    "crpix1", "crpix2", "crval1", "crval2", "cdelt1", "cdelt2", "ctype1", "ctype2", "cunit1", "cunit2",
    "crota", "crota1", "crota2", "pc1_1", "pc1_2", "pc2_1", "pc2_2", "cd1_1", "cd1_2", "cd2_1", "cd2_2",
    "lonpole", "latpole", "naxis1", "naxis2", "wcsaxes",
)  # fmt: skip
_DROP_KEYS = (
    "filename", "polar", "filt_pos", "blank", "bzero", "bscale", "datamin", "datamax", "datamean",
    "datamedn", "x_io", "y_io", "calsteps", "exptime", "btype", "prod_id", "parent",
)  # fmt: skip


def north_up_header(reference, shape=None):
    """
    Header of the Sun-centred, solar-north-up level-3 grid for a frame.

    Parameters
    ----------
    reference : `~aspiics.map.ASPIICSMap`
        The frame whose metadata (observer, date, plate scale) the grid takes.
    shape : tuple of int, optional
        ``(ny, nx)``; default the frame's shape.

    Returns
    -------
    `sunpy.util.MetaDict`
        The frame's metadata with the WCS replaced: Sun centre at the image centre
        (``CRPIX = ((nx + 1)/2, (ny + 1)/2)``, ``CRVAL = 0``), ``PC`` = identity, ``CROTA = 0``,
        the same plate scale (``CDELT``, arcsec) and shape: the grid of
        `aspiics.composite.sun_centered_wcs`.
    """
    from sunpy.util import MetaDict

    from aspiics.composite import _grid_keywords, sun_centered_wcs

    wcs, (ny, nx) = sun_centered_wcs(reference, shape=shape)
    meta = MetaDict(dict(reference.meta))
    for key in _WCS_KEYS:
        meta.pop(key, None)
    meta.update(_grid_keywords(wcs))
    meta.update({"naxis1": nx, "naxis2": ny})
    return meta


def _map_class():
    from aspiics.map import ASPIICSMap

    return ASPIICSMap


def _describe_map(m):
    return m.meta.get("filename") or f"<{m.meta.get('filter', 'unknown filter')} map, DATE-OBS {m.date.isot}>"


def _as_maps(maps_or_stack):
    """Turn the input into a list of ASPIICSMap (sequence of maps, NDCollection, MapSequence)."""
    try:
        from ndcube import NDCollection
    except ImportError:  # pragma: no cover - ndcube is a dependency
        NDCollection = ()
    if NDCollection and isinstance(maps_or_stack, NDCollection):
        return [_cube_to_map(key, cube) for key, cube in maps_or_stack.items()]
    if hasattr(maps_or_stack, "maps") and not isinstance(maps_or_stack, list | tuple):
        maps_or_stack = maps_or_stack.maps
    if isinstance(maps_or_stack, str) or not hasattr(maps_or_stack, "__iter__"):
        raise ProcessingError(
            "demodulate needs the three polarizer maps (a list, a MapSequence or an NDCollection), "
            f"got {type(maps_or_stack).__name__}"
        )
    cls = _map_class()
    out = []
    for m in maps_or_stack:
        if not hasattr(m, "meta") or not hasattr(m, "data"):
            raise ProcessingError(f"demodulate needs maps, got {type(m).__name__}")
        if not isinstance(m, cls):
            m = cls(
                m.data, m.meta, mask=getattr(m, "mask", None), uncertainty=getattr(m, "uncertainty", None)
            )
        out.append(m)
    return out


def _cube_to_map(key, cube):
    """An NDCube of a solpolpy-style collection (meta 'POLAR' in degrees) as an ASPIICSMap."""
    from sunpy.util import MetaDict

    meta = MetaDict(dict(cube.meta or {}))
    polar = meta.get("polar")
    if isinstance(polar, u.Quantity):
        polar = float(polar.to_value(u.deg))
    elif polar is None:
        try:
            polar = float(u.Quantity(key).to_value(u.deg))
        except (TypeError, ValueError):
            polar = None
    if polar is not None:
        meta["polar"] = float(polar)
        if not meta.get("filter"):
            nominal = round(float(polar) % 180.0)
            meta["filter"] = f"Polarizer {nominal}"
    meta.setdefault("instrume", "ASPIICS")
    meta.setdefault("level", "L2")
    meta.setdefault("bunit", "MSB")
    wcs_header = (
        cube.wcs.low_level_wcs.to_header() if hasattr(cube.wcs, "low_level_wcs") else cube.wcs.to_header()
    )
    for key_, value in wcs_header.items():
        if key_.lower() not in ("wcsaxes",):
            meta[key_.lower()] = value
    data = np.asarray(cube.data)
    if isinstance(cube.data, u.Quantity):
        data = cube.data.value
    return _map_class()(data, meta, mask=cube.mask, uncertainty=cube.uncertainty)


def _identify(maps):
    """Map the three frames to their polarizer; raise on duplicates, missing or non-polarizers."""
    found = {}
    for m in maps:
        if not m.is_polarizer:
            raise ProcessingError(
                f"{_describe_map(m)} is not a polarizer frame (FILTER={m.meta.get('filter')!r}): "
                "pass only 'Polarizer 0', 'Polarizer 60' and 'Polarizer 120' frames"
            )
        name = m.filter.name
        if name in found:
            raise ProcessingError(
                f"two frames of {name!r}: {_describe_map(found[name])} and {_describe_map(m)}; "
                "pass exactly one frame per polarizer (merge the exposures of one acquisition first)"
            )
        found[name] = m
    missing = [n for n in POLARIZER_NAMES if n not in found]
    if missing:
        raise ProcessingError(
            f"missing polarizer frame(s): {', '.join(missing)} (got {', '.join(found) or 'none'}); "
            "demodulation needs one frame of each of Polarizer 0, 60 and 120"
        )
    return [found[n] for n in POLARIZER_NAMES]


def _get_calibration(calibration, reference):
    if calibration is None:
        from aspiics.calibration import open_calibration

        calibration = open_calibration(None)
    elif not hasattr(calibration, "angle_map") and not hasattr(calibration, "for_date"):
        from aspiics.calibration import open_calibration

        calibration = open_calibration(calibration)
    if hasattr(calibration, "for_date") and not hasattr(calibration, "angle_map"):
        calibration = calibration.for_date(reference.date)
    return calibration


def _angle_inputs(maps, calibration, angle_maps, nominal_angles):
    """Per-frame polarizer angles (detector frame, deg): arrays or nominal scalars, and a label."""
    if angle_maps is not None:
        if isinstance(angle_maps, dict):
            lookup = {}
            for key, value in angle_maps.items():
                lookup[filter_info(key).name if not isinstance(key, int | float) else f"Polarizer {key}"] = (
                    value
                )
            try:
                angles = [lookup[m.filter.name] for m in maps]
            except KeyError as exc:
                raise CalibrationError(f"angle_maps has no entry for {exc.args[0]!r}") from None
        else:
            angles = list(angle_maps)
            if len(angles) != 3:
                raise CalibrationError(
                    f"angle_maps needs 3 entries (Polarizer 0, 60, 120), got {len(angles)}"
                )
        source = "angle maps given by the caller"
    else:
        try:
            cal = _get_calibration(calibration, maps[0])
            angles = [cal.angle_map(m.filter) for m in maps]
            source = f"angle maps of {_calibration_label(cal)}"
        except (CalibrationError, OSError) as exc:
            if not nominal_angles:
                if isinstance(exc, CalibrationError):
                    raise
                raise CalibrationError(f"cannot read the polarizer angle maps: {exc}") from exc
            warnings.warn(
                f"no polarizer angle maps ({exc}); using the nominal angles 0, 60, 120 deg as asked "
                "(costs ~0.7 % in pB)",
                AspiicsUserWarning,
                stacklevel=3,
            )
            angles = [float(m.filter.polarizer_angle.to_value(u.deg)) for m in maps]
            source = "nominal angles 0, 60, 120 deg"
    out = []
    for m, a in zip(maps, angles, strict=True):
        a = np.asarray(
            a.value if isinstance(a, u.Quantity) else a, dtype=np.float64 if np.ndim(a) == 0 else None
        )
        if a.ndim != 0 and a.shape != m.data.shape:
            raise CalibrationError(
                f"angle map of {m.filter.name!r} has shape {a.shape}, but {_describe_map(m)} has shape "
                f"{m.data.shape}: use the calibration release of this detector format"
            )
        if a.ndim != 0 and not np.isfinite(a).all():
            raise CalibrationError(f"angle map of {m.filter.name!r} has non-finite values")
        out.append(a)
    return out, source


def _calibration_label(cal):
    for attr in ("path", "root", "source"):
        value = getattr(cal, attr, None)
        if value:
            return f"calibration {value}"
    version = getattr(cal, "version", None)
    if isinstance(version, str) and version:
        return f"calibration {version}"
    return f"calibration {type(cal).__name__}"


def _target(maps, target):
    """Target metadata (MetaDict) and shape."""
    ref = maps[0]
    if target is None or (isinstance(target, str) and target == "north-up"):
        meta = north_up_header(ref)
        return meta, ref.data.shape, "Sun-centred solar-north-up grid"
    if isinstance(target, str) and target in ("none", "first"):
        return ref.meta, ref.data.shape, "grid of the Polarizer 0 frame"
    if hasattr(target, "meta") and hasattr(target, "data"):
        meta = north_up_header(ref, target.data.shape)
        for key in _WCS_KEYS:
            meta.pop(key, None)
            if key in target.meta:
                meta[key] = target.meta[key]
        return meta, target.data.shape, "grid of the given target map"
    raise ProcessingError(
        "target must be None/'north-up', 'first' or a map giving the output grid, "
        f"got {type(target).__name__}"
    )


def _jacobian_rotation(pmap, shape_out):
    """Rotation (deg) and parity taking detector angles to output-grid angles for a pixel map."""
    ny, nx = shape_out
    r0 = ny // 2
    c0 = nx // 2
    pts = pmap.coordinates(r0, r0 + 2, nx)  # (2, 2, nx): input (row, col) of output rows r0, r0+1
    d_row = pts[:, 1, c0] - pts[:, 0, c0]  # input (row, col) per output row
    d_col = pts[:, 0, c0 + 1] - pts[:, 0, c0]  # per output column
    # J maps output (x=col, y=row) displacements to input (x, y) displacements
    jac = np.array([[d_col[1], d_row[1]], [d_col[0], d_row[0]]])
    inv = np.linalg.inv(jac)
    delta = np.degrees(np.arctan2(inv[1, 0], inv[0, 0]))  # output angle of the input +x axis
    parity = 1.0 if np.linalg.det(jac) > 0 else -1.0
    return float(delta), parity


def _is_identity(pmap, shape_in, shape_out):
    return (
        pmap is not None
        and pmap.is_affine
        and tuple(shape_in) == tuple(shape_out)
        and np.allclose(pmap.matrix, np.eye(2), atol=1e-9)
        and np.allclose(pmap.offset, 0.0, atol=1e-6)
    )


def _align(m, angle, wcs_out, shape_out, threads):
    """Resample a frame, its σ and its angle map onto the output grid; rotate the angles."""
    data = np.asarray(m.data)
    if data.dtype.kind != "f":
        raise ProcessingError(
            f"{_describe_map(m)} holds integers: demodulate needs level-2 or level-3 frames (MSB)"
        )
    data = data.astype(np.float32, copy=False)
    if m.mask is not None and np.any(m.mask):
        data = data.copy()
        data[np.asarray(m.mask, bool) & ~np.isposinf(data)] = np.nan
    sigma = m.sigma
    try:
        from aspiics import resample
    except ImportError:  # pragma: no cover - resample is part of the package
        resample = None
    if resample is None:  # pragma: no cover
        return _align_reproject(m, data, sigma, angle, wcs_out, shape_out)
    pmap = resample.find_pixel_mapping(m.wcs, wcs_out, data.shape, shape_out)
    if pmap is None:
        return _align_reproject(m, data, sigma, angle, wcs_out, shape_out)
    if _is_identity(pmap, data.shape, shape_out):
        return data, sigma, angle, 0.0
    out, foot = resample.resample_array(data, pmap, shape_out, order=3, threads=threads)
    sig = None
    if sigma is not None:
        sig = resample.resample_uncertainty(sigma, pmap, shape_out, valid=foot > 0, threads=threads)
    delta, parity = _jacobian_rotation(pmap, shape_out)
    if np.ndim(angle) == 0:
        ang = parity * angle + delta
    else:
        # angle maps are smooth: bilinear interpolation (the σ resampler: order 1, no masks) of the
        # map unwrapped around its median, so that no 180° jump is interpolated
        ref = float(np.median(angle[:: max(1, angle.shape[0] // 64), :: max(1, angle.shape[1] // 64)]))
        rel = np.asarray(angle, dtype=np.float32) - np.float32(ref)
        if np.abs(rel).max() >= 90:
            rel = _wrap90(rel).astype(np.float32)
        ang = resample.resample_uncertainty(rel, pmap, shape_out, threads=threads)
        ang = np.float32(parity) * ang + np.float32(parity * ref + delta)
    return out, sig, ang, delta


def _align_reproject(m, data, sigma, angle, wcs_out, shape_out):  # pragma: no cover - fallback
    from reproject import reproject_interp

    out = reproject_interp((data, m.wcs), wcs_out, shape_out=shape_out, return_footprint=False)
    sig = None
    if sigma is not None:
        sig = reproject_interp((sigma, m.wcs), wcs_out, shape_out=shape_out, return_footprint=False)
    pc = m.rotation_matrix
    delta = float(np.degrees(np.arctan2(pc[1, 0], pc[0, 0])))
    if np.ndim(angle) != 0:
        angle = reproject_interp(
            (angle, m.wcs), wcs_out, shape_out=shape_out, order="bilinear", return_footprint=False
        )
    return out.astype(np.float32), sig, angle + delta, delta


def _product_meta(base, maps, prod_id, bunit, history):
    from sunpy.util import MetaDict

    meta = MetaDict(dict(base))
    for key in _DROP_KEYS:
        meta.pop(key, None)
    parents = [str(m.meta.get("filename", "")) for m in maps if m.meta.get("filename")]
    dates = sorted(m.date for m in maps)
    meta["date-obs"] = dates[0].isot
    ends = [m.meta.get("date-end") for m in maps if m.meta.get("date-end")]
    if ends:
        meta["date-end"] = max(str(e) for e in ends)
    meta["level"] = "L3"
    meta["prod_id"] = prod_id
    meta["btype"] = prod_id
    meta["bunit"] = bunit
    meta["filter"] = "Polarizers 0, 60, 120"
    if parents:
        meta["parent"] = ", ".join(parents)
    _append_history(meta, history)
    return meta


def demodulate(
    maps_or_stack,
    calibration=None,
    *,
    method="closed-form",
    pb_estimator="norm",
    target=None,
    angle_maps=None,
    nominal_angles=False,
    threads=2,
):
    """
    Total brightness, polarized brightness and polarization angle from three polarizer frames.

    Parameters
    ----------
    maps_or_stack : sequence of `~aspiics.map.ASPIICSMap`, `~sunpy.map.MapSequence` or `ndcube.NDCollection`
        One frame per polarizer, in any order, identified by ``FILTER`` ('Polarizer 0',
        'Polarizer 60', 'Polarizer 120'): level-2 frames or level-3 exposure composites, in MSB.
        An NDCollection in the solpolpy convention (NDCubes with ``meta['POLAR']`` in degrees, see
        `to_ndcollection`) is accepted.
    calibration : `~aspiics.calibration.CalibrationSet`, path-like or None
        Source of the per-pixel polarizer angle maps (``aspiics_p{1,2,3}_angle.fits``; p1 =
        Polarizer 60, p2 = Polarizer 0, p3 = Polarizer 120); a
        `~aspiics.calibration.CalibrationArchive` is resolved at the frames' date. None:
        ``ASPIICS_CALIBRATION_DIR``.
    method : {'closed-form', 'linalg'}, optional
        Solver, see `demodulate_arrays`.
    pb_estimator : {'norm', 'tangential'}, optional
        See `demodulate_arrays`. The tangential direction is taken from Sun centre on the output
        grid.
    target : None, 'north-up', 'first' or `~sunpy.map.GenericMap`, optional
        Output grid. None or 'north-up' (default): Sun centre at the image centre, solar north
        up (PC = identity, CRVAL = 0), the plate scale and shape of the Polarizer 0 frame.
        'first': the grid of the Polarizer 0 frame (no re-centring). A map: its grid.
    angle_maps : dict or sequence of 3, optional
        Polarizer angle maps (degrees, detector frame) overriding the calibration: a dict keyed by
        filter name or code (``'p1'``, ``'Polarizer 60'`` ...), or a sequence in the order
        Polarizer 0, 60, 120. Scalars are allowed.
    nominal_angles : bool, optional
        If the angle maps cannot be read, use the nominal 0/60/120° with an
        `~aspiics.exceptions.AspiicsUserWarning` instead of raising.
    threads : int, optional
        Threads for resampling and demodulation.

    Returns
    -------
    `PolarizationProducts`
        ``B``, ``pB`` and ``angle`` level-3 maps (keys 'B', 'pB', 'angle'), with
        `~astropy.nddata.StdDevUncertainty` when all inputs have one, and masks.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        Not exactly one frame per polarizer, a non-polarizer frame, integer (level-1) data, or no
        overlap with the target grid.
    aspiics.exceptions.CalibrationError
        Angle maps missing (without ``nominal_angles``), non-finite, or of the wrong shape.

    Notes
    -----
    Each frame, its σ and its angle map are resampled onto the target grid with the same pixel
    map (`aspiics.resample`: NaN-safe cubic spline for the data, bilinear for σ and the angle
    maps). Angles measured on the detector become angles on the output grid by adding the
    rotation removed by the alignment: for a frame with ``PC = [[cos θ, −sin θ], [sin θ, cos θ]]``
    (θ = CROTA) a detector direction ψ points along ψ + θ on the north-up grid (a pixel step
    ``(cos ψ, sin ψ)`` maps to the world step ``PC (cos ψ, sin ψ) = (cos(ψ+θ), sin(ψ+θ))``). The
    rotation (and a mirror, if any) is taken from the Jacobian of the actual pixel map, so any
    target grid works.

    Masks combine: a pixel missing (NaN) in any frame is NaN in every product; a pixel
    saturated (+Inf) in some frame and missing in none is +Inf in B and pB and NaN in the angle.
    The angle is written in degrees (the reference processor writes radians labelled degrees).
    """
    if method not in _METHODS:
        raise ProcessingError(f"method must be one of {_METHODS}, got {method!r}")
    if pb_estimator not in _ESTIMATORS:
        raise ProcessingError(f"pb_estimator must be one of {_ESTIMATORS}, got {pb_estimator!r}")
    maps = _identify(_as_maps(maps_or_stack))
    for m in maps:
        if m.processing_level == 1:
            raise ProcessingError(f"{_describe_map(m)} is level 1: calibrate it to level 2 (MSB) first")
    angles, angle_source = _angle_inputs(maps, calibration, angle_maps, nominal_angles)
    meta_out, shape_out, grid_label = _target(maps, target)
    cls = _map_class()
    wcs_out = cls(np.zeros(shape_out, dtype=np.float32), meta_out).wcs

    aligned, sigmas, angles_out, rolls = [], [], [], []
    for m, a in zip(maps, angles, strict=True):
        d, s, ang, delta = _align(m, a, wcs_out, shape_out, threads)
        aligned.append(d)
        sigmas.append(s)
        angles_out.append(ang)
        rolls.append(delta)
    have_sigma = all(s is not None for s in sigmas)
    if not have_sigma and any(s is not None for s in sigmas):
        log.info("not every polarizer frame has an uncertainty: the products carry none")

    tan = None
    if pb_estimator == "tangential":
        xc, yc = wcs_out.world_to_pixel_values(0.0, 0.0)
        tan = tangential_angle(shape_out, (float(xc), float(yc)))
    res = demodulate_arrays(
        aligned,
        angles_out,
        sigmas if have_sigma else None,
        pb_estimator=pb_estimator,
        tangential_angle=tan,
        method=method,
        dtype=np.float32,
        threads=threads,
    )
    missing = np.zeros(shape_out, dtype=bool)
    saturated = np.zeros(shape_out, dtype=bool)
    for d in aligned:
        missing |= np.isnan(d) | np.isneginf(d)
        saturated |= np.isposinf(d)
    saturated &= ~missing
    for arr in (res.B, res.pB):
        arr[saturated] = np.inf
    # angles outside every frame: NaN already (data NaN there)

    from aspiics import __version__

    history = [
        f"aspiics {__version__} demodulate: closed-form 3-polarizer inversion"
        if method == "closed-form"
        else f"aspiics {__version__} demodulate: per-pixel numpy.linalg inversion",
        f"polarizer angles: {angle_source}",
        f"aligned onto the {grid_label}; rotation added to the angles (deg): "
        + ", ".join(f"{m.filter.name} {r:+.4f}" for m, r in zip(maps, rolls, strict=True)),
        f"pB estimator: {pb_estimator}",
    ]
    products = {}
    specs = (
        ("B", "Total brightness", "MSB", res.B, res.sigma_B),
        ("pB", "Polarized brightness", "MSB", res.pB, res.sigma_pB),
        ("angle", "Polarization angle", "deg", res.angle, res.sigma_angle),
    )
    codes = {"B": "bt", "pB": "pb", "angle": "pa"}
    for key, prod_id, bunit, data, sigma in specs:
        meta = _product_meta(meta_out, maps, prod_id, bunit, history)
        name = product_filename(codes[key], {**maps[0].meta, "date-obs": meta["date-obs"]})
        if name:
            meta["filename"] = name
        if key == "angle":
            meta["comment"] = "Polarization angle in degrees from +x (solar west) counter-clockwise"
        _set_stats(meta, data)
        unc = StdDevUncertainty(sigma, copy=False) if have_sigma else None
        products[key] = cls(data, meta, mask=~np.isfinite(data), uncertainty=unc)
    return PolarizationProducts(
        B=products["B"], pB=products["pB"], angle=products["angle"], Q=res.Q, U=res.U, arrays=res
    )


# ----------------------------------------------------------------------------------------------------
# NDCollection (solpolpy) interoperability
# ----------------------------------------------------------------------------------------------------
def _map_to_cube(m, meta_extra=None):
    from ndcube import NDCube

    meta = {
        k: v for k, v in m.meta.items() if not (meta_extra and k.lower() in {e.lower() for e in meta_extra})
    }
    if meta_extra:
        meta.update(meta_extra)
    data = np.asarray(m.data)
    return NDCube(data, wcs=m.wcs, uncertainty=m.uncertainty, mask=m.mask, meta=meta, unit=m.unit)


def to_ndcollection(maps_or_products):
    """
    An `ndcube.NDCollection` in the convention of solpolpy.

    Parameters
    ----------
    maps_or_products : sequence of `~aspiics.map.ASPIICSMap` or `PolarizationProducts`
        Either the three polarizer frames, or the products of `demodulate`.

    Returns
    -------
    `ndcube.NDCollection`
        For polarizer frames: NDCubes keyed ``str(angle)`` (``'0.0 deg'``, ``'60.0 deg'``,
        ``'120.0 deg'``) with ``meta['POLAR']`` the nominal angle as a Quantity in degrees, as
        solpolpy's ``'npol'`` input expects; the full ASPIICS metadata is kept in ``meta``. For
        products: NDCubes keyed ``'B'``, ``'pB'`` (``meta['POLAR']`` = ``'B'``/``'pB'``, as
        solpolpy's ``'bpb'`` system) and ``'angle'`` (degrees). Note that solpolpy names the angle
        ``'alpha'`` and measures it from solar north; ours is measured from the +x axis (solar
        west on the north-up grid). Both collections are accepted back by `demodulate` (the
        polarizer one) with ``aligned_axes='all'``.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If the input is neither.

    Notes
    -----
    solpolpy itself is not required. For solpolpy, pass the frames *after* alignment to a common
    grid (solpolpy does not resample) and remember that it uses nominal angles, not the per-pixel
    angle maps.
    """
    from ndcube import NDCollection

    if isinstance(maps_or_products, PolarizationProducts):
        items = [
            ("B", _map_to_cube(maps_or_products.B, {"POLAR": "B"})),
            ("pB", _map_to_cube(maps_or_products.pB, {"POLAR": "pB"})),
            ("angle", _map_to_cube(maps_or_products.angle)),
        ]
        return NDCollection(items, aligned_axes="all")
    maps = _identify(_as_maps(maps_or_products))
    items = []
    for m in maps:
        angle = m.filter.polarizer_angle.to(u.deg)
        items.append((str(angle), _map_to_cube(m, {"POLAR": angle})))
    return NDCollection(items, aligned_axes="all")
