"""
Fast, NaN-safe resampling of ASPIICS frames between WCS grids.

ASPIICS exposures of one acquisition differ by a small pointing jitter (sub-pixel shifts and
rotations of a fraction of a degree), so the pixel-to-pixel mapping between their WCS is an affine map
to far better than a hundredth of a pixel. `reproject_affine` detects this, resamples with a single
prefiltered cubic spline (`scipy.ndimage.affine_transform`), and falls back to
`reproject.reproject_interp` when the mapping is not affine enough.

The cubic spline prefilter is an infinite recursive filter: a single NaN (occulter, bad pixel) or
+Inf (saturation) would poison its whole row and column. Invalid pixels are therefore filled first
(`fill_invalid`), the filled image is transformed, and the missing and saturated masks are carried
through separately with a linear transform and restored afterwards.
"""

import itertools
import logging

import numpy as np
from astropy.wcs.utils import pixel_to_pixel, wcs_to_celestial_frame
from astropy.wcs.wcsapi import BaseHighLevelWCS, BaseLowLevelWCS, HighLevelWCSWrapper
from scipy import ndimage

from aspiics.exceptions import ProcessingError

__all__ = [
    "PixelMap",
    "affine_resample",
    "fill_invalid",
    "find_affine_mapping",
    "find_pixel_mapping",
    "frames_match",
    "reproject_affine",
    "resample_array",
    "resample_uncertainty",
]

log = logging.getLogger(__name__)

_ORDER_NAMES = {"nearest-neighbor": 0, "bilinear": 1, "biquadratic": 2, "bicubic": 3}
_ORDER_TO_NAME = {v: k for k, v in _ORDER_NAMES.items()}

#: Observers closer than this fraction of their distance to the Sun count as the same observer.
_OBSERVER_RTOL = 1e-5


# ----------------------------------------------------------------------------------------------------
# Filling invalid pixels
# ----------------------------------------------------------------------------------------------------
def fill_invalid(array, invalid=None, *, depth=16):
    """
    Fill NaN/Inf pixels so that a spline prefilter is not poisoned by them.

    Each invalid pixel ``p`` gets the point reflection of the valid data across its nearest valid
    pixel ``q``: ``2 v(q) - v(q + (q - p))`` (an odd mirror, which continues the local gradient, so
    the spline sees a smooth, C1-like extension across the boundary of the valid region). Deeper than
    ``depth`` pixels the reflected point is held at ``depth`` pixels from ``q`` so that the fill stays
    bounded. Where the reflected point is itself invalid (concave boundaries, thin valid strips), the
    nearest valid value ``v(q)`` is used; if there is no valid pixel at all, the array is filled
    with zeros.

    Parameters
    ----------
    array : `numpy.ndarray`
        2-D image.
    invalid : `numpy.ndarray` of bool, optional
        Pixels to fill. Default: ``~np.isfinite(array)``.
    depth : int, optional
        Maximum reflection depth in pixels. The cubic-spline prefilter forgets a value after ``d``
        pixels as ``0.268**d``, so values deeper than ~16 px do not influence valid pixels.

    Returns
    -------
    `numpy.ndarray`
        A finite copy of ``array`` (same dtype).

    Notes
    -----
    The nearest valid pixel is found with a chessboard distance transform
    (`scipy.ndimage.distance_transform_cdt` with indices), about 5x faster than the Euclidean one. The
    odd mirror along the line ``p -> q`` is a correct first-order extrapolation whatever the direction
    of that line, so an exactly Euclidean nearest pixel is not needed.
    """
    array = np.asarray(array)
    if invalid is None:
        invalid = ~np.isfinite(array)
    out = array.copy()
    if not invalid.any():
        return out
    if invalid.all():
        out[...] = 0
        return out
    # Only the bounding box of the invalid pixels plus a margin matters: outside it every pixel is
    # valid, so nearest valid pixels and mirror points (<= depth px away) all lie inside it.
    (y0, y1), (x0, x1) = _bbox(invalid, depth + 2)
    sub_inv = invalid[y0:y1, x0:x1]
    sub = array[y0:y1, x0:x1]
    iy, ix = np.nonzero(sub_inv)
    _, indices = ndimage.distance_transform_cdt(sub_inv, metric="chessboard", return_indices=True)
    qy = indices[0][iy, ix]
    qx = indices[1][iy, ix]
    del indices
    dy = (qy - iy).astype(np.float32)
    dx = (qx - ix).astype(np.float32)
    dist = np.maximum(np.abs(dy), np.abs(dx))
    scale = np.minimum(1.0, depth / np.maximum(dist, 1.0))
    my = np.clip(np.rint(qy + dy * scale).astype(np.intp), 0, sub.shape[0] - 1)
    mx = np.clip(np.rint(qx + dx * scale).astype(np.intp), 0, sub.shape[1] - 1)
    vq = sub[qy, qx]
    mirror_ok = ~sub_inv[my, mx]
    filled = np.where(mirror_ok, 2 * vq - sub[my, mx], vq)
    iy += y0
    ix += x0
    out[iy, ix] = filled
    return out


# ----------------------------------------------------------------------------------------------------
# Affine resampling of arrays
# ----------------------------------------------------------------------------------------------------
def _bbox(mask, margin=0):
    """((y0, y1), (x0, x1)) of the True pixels of a 2-D mask, grown by margin and clipped."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    ny, nx = mask.shape
    return (
        (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, ny)),
        (max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, nx)),
    )


def _nearest_fill(array, invalid):
    """Copy of array with invalid pixels replaced by the nearest valid value (chessboard metric)."""
    out = array.copy()
    if not invalid.any():
        return out
    if invalid.all():
        out[...] = np.nan
        return out
    (y0, y1), (x0, x1) = _bbox(invalid, 2)
    sub_inv = invalid[y0:y1, x0:x1]
    _, (iy, ix) = ndimage.distance_transform_cdt(sub_inv, return_indices=True)
    sub = out[y0:y1, x0:x1]
    sub[sub_inv] = sub[iy[sub_inv], ix[sub_inv]]
    return out


def _spline_filter(array, order, mode, threads):
    """`scipy.ndimage.spline_filter` (float64 output), each 1-D pass split over threads."""
    coeffs = np.array(array, dtype=np.float64, order="C")
    if threads <= 1 or min(array.shape) < 64:
        return ndimage.spline_filter(coeffs, order=order, output=np.float64, mode=mode)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for axis in (0, 1):
            other = 1 - axis
            edges = np.linspace(0, array.shape[other], threads + 1).astype(int)
            views = [
                coeffs[:, a:b] if axis == 0 else coeffs[a:b, :] for a, b in itertools.pairwise(edges) if b > a
            ]

            def run(v, axis=axis):
                v[...] = ndimage.spline_filter1d(v, order=order, axis=axis, output=np.float64, mode=mode)

            list(pool.map(run, views))
    return coeffs


def _split_rows(shape_out, n_chunks):
    edges = np.linspace(0, shape_out[0], n_chunks + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


class PixelMap:
    """
    A smooth map from output pixel array coordinates (row, col) to input ones.

    Either affine (``in = matrix @ out + offset``, applied with `scipy.ndimage.affine_transform`)
    or a 2-D polynomial in the output coordinates (applied with `scipy.ndimage.map_coordinates` on
    coordinates evaluated block by block).

    Parameters
    ----------
    matrix : array-like, shape (2, 2), optional
        Linear part of an affine map (row, col order).
    offset : array-like, shape (2,), optional
        Offset of an affine map.
    poly : tuple, optional
        ``(coef, degree, centre, scale)`` of a polynomial map: ``coef`` has shape (n_terms, 2).
    residual : float, optional
        Largest difference (px) from the exact WCS mapping, for information.
    """

    def __init__(self, matrix=None, offset=None, poly=None, residual=0.0):
        self.matrix = None if matrix is None else np.asarray(matrix, dtype=float)
        self.offset = None if offset is None else np.asarray(offset, dtype=float)
        self.poly = poly
        self.residual = residual

    @property
    def is_affine(self):
        """bool: True for an affine map."""
        return self.poly is None

    def __repr__(self):
        kind = "affine" if self.is_affine else f"polynomial(degree={self.poly[1]})"
        return f"<PixelMap {kind}, residual {self.residual:.2g} px>"

    def coordinates(self, r0, r1, nx):
        """Input (row, col) coordinates of output rows ``r0:r1`` (shape (2, r1 - r0, nx))."""
        rows = np.arange(r0, r1, dtype=float)[:, None]
        cols = np.arange(nx, dtype=float)[None, :]
        if self.is_affine:
            m, o = self.matrix, self.offset
            return np.stack([m[0, 0] * rows + m[0, 1] * cols + o[0], m[1, 0] * rows + m[1, 1] * cols + o[1]])
        coef, degree, centre, scale = self.poly
        v = (rows - centre[0]) / scale
        u = (cols - centre[1]) / scale
        out = np.zeros((2, r1 - r0, nx))
        for k, (i, j) in enumerate(_poly_terms(degree)):
            term = v**i * u**j
            out[0] += coef[k, 0] * term
            out[1] += coef[k, 1] * term
        return out

    def apply(self, coeffs, out, r0, r1, *, order, mode, cval):
        """Interpolate the (prefiltered) ``coeffs`` at output rows ``r0:r1`` into ``out``."""
        if self.is_affine:
            ndimage.affine_transform(
                coeffs,
                self.matrix,
                offset=self.offset + self.matrix @ np.array([r0, 0.0]),
                output_shape=out.shape,
                output=out,
                order=order,
                mode=mode,
                cval=cval,
                prefilter=False,
            )
        else:
            ndimage.map_coordinates(
                coeffs,
                self.coordinates(r0, r1, out.shape[1]),
                output=out,
                order=order,
                mode=mode,
                cval=cval,
                prefilter=False,
            )


def _poly_terms(degree):
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _transform(array, pmap, shape_out, *, order, mode, cval, dtype, threads, prefilter=True):
    """Apply a `PixelMap` with the output split in row blocks over threads."""
    if order > 1 and prefilter:
        coeffs = _spline_filter(array, order, mode, threads)
    else:
        coeffs = array
    out = np.empty(shape_out, dtype=dtype)
    # blocks of <= 256 rows bound the memory of the polynomial coordinates
    n_blocks = max(threads, 1) if pmap.is_affine else max(threads, int(np.ceil(shape_out[0] / 256)))
    blocks = _split_rows(shape_out, n_blocks)

    def work(rows):
        r0, r1 = rows
        pmap.apply(coeffs, out[r0:r1], r0, r1, order=order, mode=mode, cval=cval)

    if len(blocks) == 1 or threads <= 1:
        for b in blocks:
            work(b)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(work, blocks))
    return out


def affine_resample(array, matrix, offset, shape_out, **kwargs):
    """
    Resample an image with an affine pixel map, keeping NaN and +Inf pixels.

    Shortcut for ``resample_array(array, PixelMap(matrix, offset), shape_out, **kwargs)``.

    Parameters
    ----------
    array : `numpy.ndarray`
        2-D input image; NaN and -Inf mark missing pixels, +Inf saturated ones.
    matrix : array-like, shape (2, 2)
        Linear part of the map from output to input pixel *array* coordinates (row, column), as in
        `scipy.ndimage.affine_transform`: ``in = matrix @ out + offset``.
    offset : array-like, shape (2,)
        Offset of the map (row, column).
    shape_out : tuple of int
        Output shape.
    **kwargs
        Passed to `resample_array`.

    Returns
    -------
    data, footprint : `numpy.ndarray`
        See `resample_array`.
    """
    return resample_array(array, PixelMap(matrix, offset), shape_out, **kwargs)


def resample_array(
    array,
    pixel_map,
    shape_out,
    *,
    order=3,
    fill_value=np.nan,
    nan_threshold=0.5,
    inf_threshold=0.0,
    dtype=None,
    threads=2,
):
    """
    Resample an image with a smooth pixel map, keeping NaN (missing) and +Inf (saturated) pixels.

    Parameters
    ----------
    array : `numpy.ndarray`
        2-D input image; NaN and -Inf mark missing pixels, +Inf saturated ones.
    pixel_map : `PixelMap`
        Map from output to input pixel array coordinates (e.g. from `find_pixel_mapping`).
    shape_out : tuple of int
        Output shape.
    order : int, optional
        Spline order (0–5); 3 (cubic, prefiltered) by default.
    fill_value : float, optional
        Value of output pixels that are missing or outside the input frame.
    nan_threshold : float, optional
        An output pixel is missing where the linearly interpolated missing mask (1 = missing,
        outside the frame counts as missing) is ``> nan_threshold``. The default, 0.5, puts the
        boundary halfway between the last valid and the first missing input pixel, and matches the
        half-pixel frame edge of `reproject.reproject_interp`. Use 0 for the conservative
        "any overlap" rule of the reference processor (costs about one more pixel).
    inf_threshold : float, optional
        An output pixel is saturated (+Inf) where the interpolated saturation mask is
        ``> inf_threshold``. The default, 0, is conservative: any output pixel touching a saturated
        input pixel is saturated (a shorter exposure then takes over in the HDR merge).
    dtype : dtype, optional
        Output dtype; default float32 for float32 input, float64 otherwise.
    threads : int, optional
        Number of threads (SciPy releases the GIL in its geometric transforms).

    Returns
    -------
    data : `numpy.ndarray`
        Resampled image of shape ``shape_out``.
    footprint : `numpy.ndarray`
        1 where the output is not missing, 0 elsewhere (same dtype as ``data``), as in ``reproject``.

    Notes
    -----
    Invalid pixels are filled by `fill_invalid` before the spline prefilter, so valid data right up
    to the occulter edge are interpolated with the full cubic accuracy. The data are extended beyond
    the frame edges by mirroring (``mode="reflect"``); the frame boundary is handled through the
    missing mask (``mode="grid-constant"``, ``cval=1``).
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ProcessingError(f"resample_array expects a 2-D image, got shape {array.shape}")
    if dtype is None:
        dtype = np.float32 if array.dtype == np.float32 else np.float64
    shape_out = tuple(int(s) for s in shape_out)
    work_dtype = np.float32 if dtype == np.float32 else np.float64
    finite = np.isfinite(array)
    saturated = np.isposinf(array)
    missing = ~finite & ~saturated
    data = array.astype(work_dtype, copy=False)
    if not finite.all():
        data = fill_invalid(data, ~finite)
    out = _transform(
        data, pixel_map, shape_out, order=order, mode="reflect", cval=0.0, dtype=dtype, threads=threads
    )
    if saturated.any():
        out[_mask_over(saturated, pixel_map, shape_out, inf_threshold, False, threads)] = np.inf
    bad = _mask_over(missing, pixel_map, shape_out, nan_threshold, True, threads)
    out[bad] = fill_value
    footprint = (~bad).astype(dtype)
    return out, footprint


def _mask_over(mask, pmap, shape_out, threshold, outside, threads):
    """
    Where the linearly interpolated 0/1 mask exceeds threshold on the output grid.

    ``outside``: the region beyond the input frame counts as 1 (missing) rather than 0. For an
    affine map only the output block that sees the mask's bounding box is interpolated, and the
    frame boundary is computed analytically (exact along the edges; at the frame corners the
    bilinear value differs slightly, by design of the half-pixel edge rule).
    """
    if not pmap.is_affine:
        return (
            _transform(
                mask.astype(np.float32),
                pmap,
                shape_out,
                order=1,
                mode="grid-constant",
                cval=1.0 if outside else 0.0,
                dtype=np.float32,
                threads=threads,
            )
            > threshold
        )
    ny, nx = shape_out
    m, o = pmap.matrix, pmap.offset
    result = np.zeros(shape_out, dtype=bool)
    if outside:
        edge = min(max(threshold, 0.0), 1.0)
        rows = np.arange(ny, dtype=float)[:, None]
        cols = np.arange(nx, dtype=float)[None, :]
        for axis, n_in in enumerate(mask.shape):
            coord = m[axis, 0] * rows + m[axis, 1] * cols + o[axis]
            result |= (coord < -edge) | (coord > n_in - 1 + edge)
    if mask.any():
        (y0, y1), (x0, x1) = _bbox(mask, 2)
        corners = np.array([[y0, x0], [y0, x1], [y1, x0], [y1, x1]], dtype=float).T
        out_corners = np.linalg.solve(m, corners - o[:, None])
        r0 = max(int(np.floor(out_corners[0].min())) - 2, 0)
        r1 = min(int(np.ceil(out_corners[0].max())) + 3, ny)
        c0 = max(int(np.floor(out_corners[1].min())) - 2, 0)
        c1 = min(int(np.ceil(out_corners[1].max())) + 3, nx)
        if r1 > r0 and c1 > c0:
            block = ndimage.affine_transform(
                mask.astype(np.float32),
                m,
                offset=o + m @ np.array([r0, c0], dtype=float),
                output_shape=(r1 - r0, c1 - c0),
                output=np.float32,
                order=1,
                mode="grid-constant",
                cval=1.0 if outside else 0.0,
                prefilter=False,
            )
            result[r0:r1, c0:c1] |= block > threshold
    return result


def resample_uncertainty(sigma, pixel_map, shape_out, *, valid=None, dtype=None, threads=2):
    """
    Resample a 1-sigma uncertainty map with the same pixel map as the data.

    Parameters
    ----------
    sigma : `numpy.ndarray`
        2-D standard deviation map (NaN/Inf where unknown).
    pixel_map : `PixelMap`
        The map used for the data.
    shape_out : tuple of int
        Output shape.
    valid : `numpy.ndarray` of bool, optional
        Output pixels where the resampled data are valid; sigma is NaN elsewhere.
    dtype : dtype, optional
        Output dtype; default float32 for float32 input, float64 otherwise.
    threads : int, optional
        Number of threads.

    Returns
    -------
    `numpy.ndarray`
        The resampled sigma.

    Notes
    -----
    The sigma map is interpolated linearly (order 1), after filling invalid pixels with the nearest
    valid value. This is the uncertainty of a resampled pixel when the errors of neighbouring
    input pixels are fully correlated, and for a smooth sigma map it equals the input sigma. For
    independent pixel errors the cubic-spline interpolation of a white-noise image has a per-pixel
    standard deviation between ~0.8 sigma (half-pixel phase) and sigma (integer phase): the
    approximation is conservative by at most ~25 % per pixel, and exact for averages over areas
    of several pixels (resampling redistributes the noise into correlated neighbours, it does not
    remove it). Pixel-to-pixel correlations introduced by the resampling are not tracked.
    """
    sigma = np.asarray(sigma)
    if dtype is None:
        dtype = np.float32 if sigma.dtype == np.float32 else np.float64
    finite = np.isfinite(sigma)
    work = _nearest_fill(sigma.astype(dtype, copy=False), ~finite)
    out = _transform(
        work, pixel_map, shape_out, order=1, mode="nearest", cval=0.0, dtype=dtype, threads=threads
    )
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = np.nan
    return out


# ----------------------------------------------------------------------------------------------------
# WCS mapping
# ----------------------------------------------------------------------------------------------------
def _high_level(wcs):
    if isinstance(wcs, BaseHighLevelWCS):
        return wcs
    if isinstance(wcs, BaseLowLevelWCS):
        return HighLevelWCSWrapper(wcs)
    raise TypeError(f"Expected a WCS object, got {type(wcs).__name__}")


def _celestial_frame(wcs):
    try:
        return wcs_to_celestial_frame(wcs.low_level_wcs if hasattr(wcs, "low_level_wcs") else wcs)
    except (ValueError, TypeError, AttributeError):
        return None


def _observer_close(obs_in, obs_out):
    try:
        d_in = obs_in.cartesian
        d_out = obs_out.transform_to(obs_in).cartesian
        sep = (d_in - d_out).norm()
        return bool(sep <= _OBSERVER_RTOL * d_in.norm())
    except Exception:
        return False


def frames_match(wcs_in, wcs_out):
    """
    Whether the world coordinates of two WCS can be compared as plain values.

    True when both WCS have the same world axis types and units, and their celestial frames are
    equivalent; helioprojective frames whose observers differ by less than 1e-5 of the
    observer–Sun distance (~1500 km at 1 AU: a few seconds of Proba-3 orbit) also match, whatever
    their observation times. Helioprojective coordinates are Sun-centred, so this is the
    physically right alignment for coronal structures between the exposures of one acquisition.

    Parameters
    ----------
    wcs_in, wcs_out : `astropy.wcs.wcsapi.BaseHighLevelWCS`
        The two WCS.

    Returns
    -------
    bool
    """
    ll_in, ll_out = wcs_in.low_level_wcs, wcs_out.low_level_wcs
    if ll_in.world_n_dim != ll_out.world_n_dim or ll_in.pixel_n_dim != ll_out.pixel_n_dim:
        return False
    if list(ll_in.world_axis_physical_types) != list(ll_out.world_axis_physical_types):
        return False
    if [str(u) for u in ll_in.world_axis_units] != [str(u) for u in ll_out.world_axis_units]:
        return False
    f_in, f_out = _celestial_frame(wcs_in), _celestial_frame(wcs_out)
    if f_in is None and f_out is None:
        return True
    if f_in is None or f_out is None or type(f_in) is not type(f_out):
        return False
    if f_in.is_equivalent_frame(f_out):
        return True
    obs_in = getattr(f_in, "observer", None)
    obs_out = getattr(f_out, "observer", None)
    if obs_in is None and obs_out is None:
        return False
    if obs_in is None or obs_out is None or isinstance(obs_in, str) or isinstance(obs_out, str):
        return False
    return _observer_close(obs_in, obs_out)


def _pixel_to_pixel(wcs_out, wcs_in, x, y):
    """Map output pixel (x, y) to input pixel (x, y), exactly."""
    if frames_match(wcs_in, wcs_out):
        world = wcs_out.low_level_wcs.pixel_to_world_values(x, y)
        xi, yi = wcs_in.low_level_wcs.world_to_pixel_values(*world)
        return np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)
    log.debug("Celestial frames differ: mapping pixels through astropy coordinates")
    frame = _celestial_frame(wcs_in)
    observer = getattr(frame, "observer", None)
    if observer is not None and not isinstance(observer, str):
        from sunpy.coordinates import Helioprojective
        from sunpy.coordinates.screens import SphericalScreen

        if isinstance(frame, Helioprojective):
            # Off-limb 2-D helioprojective points have no distance: put them on a Sun-centred
            # sphere through the observer of the input (the sunpy convention for coronagraphs).
            with SphericalScreen(observer):
                xi, yi = pixel_to_pixel(wcs_out, wcs_in, x, y)
            return np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)
    xi, yi = pixel_to_pixel(wcs_out, wcs_in, x, y)
    return np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)


def _exact_grid(wcs_in, wcs_out, shape_in, shape_out, n_grid):
    ny, nx = shape_out[-2:]
    gy, gx = np.meshgrid(
        np.linspace(-0.5, ny - 0.5, n_grid), np.linspace(-0.5, nx - 0.5, n_grid), indexing="ij"
    )
    gx, gy = gx.ravel(), gy.ravel()
    xi, yi = _pixel_to_pixel(wcs_out, wcs_in, gx, gy)
    nyi, nxi = shape_in[-2:]
    mx, my = 0.1 * nxi, 0.1 * nyi
    use = (
        np.isfinite(xi)
        & np.isfinite(yi)
        & (xi >= -0.5 - mx)
        & (xi <= nxi - 0.5 + mx)
        & (yi >= -0.5 - my)
        & (yi <= nyi - 0.5 + my)
    )
    return np.column_stack([gy[use], gx[use]]), np.column_stack([yi[use], xi[use]])


def _fit(pts_out, pts_in, degree, centre, scale):
    terms = _poly_terms(degree)
    v = (pts_out[:, 0] - centre[0]) / scale
    u = (pts_out[:, 1] - centre[1]) / scale
    design = np.column_stack([v**i * u**j for i, j in terms])
    coef, *_ = np.linalg.lstsq(design, pts_in, rcond=None)
    residual = float(np.max(np.hypot(*(design @ coef - pts_in).T)))
    return coef, residual


def find_pixel_mapping(wcs_in, wcs_out, shape_in, shape_out, *, tolerance=0.01, n_grid=33, max_degree=3):
    """
    Find a smooth pixel map from the output to the input grid, and check it against the exact one.

    The exact mapping (output pixel -> world -> input pixel, see `frames_match`) is evaluated on an
    ``n_grid`` x ``n_grid`` grid spanning the output frame (pixel edges included). An affine map is
    fitted by least squares to the points that land within the input frame (plus a 10 % margin);
    if it misses any of them by more than ``tolerance`` px, polynomials of degree 2 ... ``max_degree``
    are tried (they absorb the differential TAN distortion of grids with different tangent points,
    e.g. re-centring on the Sun).

    Parameters
    ----------
    wcs_in, wcs_out : WCS
        Input and output WCS (2 pixel dimensions).
    shape_in, shape_out : tuple of int
        Array shapes (ny, nx) of the input and output images.
    tolerance : float, optional
        Largest allowed deviation from the exact mapping (input pixels).
    n_grid : int, optional
        Grid points per axis.
    max_degree : int, optional
        Largest polynomial degree tried (1 = affine only).

    Returns
    -------
    `PixelMap` or None
        The simplest map within ``tolerance``; None if none is (use an exact, per-pixel method).
        The residual of the last map tried is logged.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If fewer than 10 grid points of the output frame map into the input frame (no overlap).
    """
    wcs_in, wcs_out = _high_level(wcs_in), _high_level(wcs_out)
    pts_out, pts_in = _exact_grid(wcs_in, wcs_out, shape_in, shape_out, n_grid)
    if len(pts_out) < 10:
        raise ProcessingError(
            "The output grid does not overlap the input frame: check the WCS of both (CRVAL, CRPIX)."
        )
    design = np.column_stack([pts_out, np.ones(len(pts_out))])
    coef, *_ = np.linalg.lstsq(design, pts_in, rcond=None)
    residual = float(np.max(np.hypot(*(design @ coef - pts_in).T)))
    log.debug("Affine pixel map: max residual %.2g px", residual)
    if residual <= tolerance:
        return PixelMap(coef[:2].T, coef[2], residual=residual)
    centre = np.array(shape_out[-2:], dtype=float) / 2
    scale = float(max(shape_out[-2:])) / 2
    for degree in range(2, max_degree + 1):
        pcoef, residual = _fit(pts_out, pts_in, degree, centre, scale)
        log.debug("Degree-%d polynomial pixel map: max residual %.2g px", degree, residual)
        if residual <= tolerance:
            return PixelMap(poly=(pcoef, degree, centre, scale), residual=residual)
    return None


def find_affine_mapping(wcs_in, wcs_out, shape_in, shape_out, *, n_grid=33):
    """
    Fit an affine map from output to input pixels, and measure how well it fits.

    Parameters
    ----------
    wcs_in, wcs_out : WCS
        Input and output WCS (2 pixel dimensions).
    shape_in, shape_out : tuple of int
        Array shapes (ny, nx) of the input and output images.
    n_grid : int, optional
        Grid points per axis.

    Returns
    -------
    matrix : `numpy.ndarray`, shape (2, 2)
        Output (row, col) to input (row, col) linear part, `scipy.ndimage.affine_transform` order.
    offset : `numpy.ndarray`, shape (2,)
        Offset (row, col).
    residual : float
        Largest distance (input pixels) between the affine and the exact mapping over the grid
        points that map into the input frame (see `find_pixel_mapping`).

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If the grids do not overlap.
    """
    pmap = find_pixel_mapping(wcs_in, wcs_out, shape_in, shape_out, tolerance=np.inf, n_grid=n_grid)
    return pmap.matrix, pmap.offset, pmap.residual


# ----------------------------------------------------------------------------------------------------
# reproject-compatible entry point
# ----------------------------------------------------------------------------------------------------
def _parse_input(input_data, hdu_in):
    from astropy.io import fits

    if isinstance(input_data, tuple) and len(input_data) == 2 and isinstance(input_data[1], fits.Header):
        from astropy.wcs import WCS

        return np.asarray(input_data[0]), WCS(input_data[1])
    if hasattr(input_data, "data") and hasattr(input_data, "wcs") and not isinstance(input_data, tuple):
        return np.asarray(input_data.data), _high_level(input_data.wcs)
    from reproject.utils import parse_input_data

    data, wcs = parse_input_data(input_data, hdu_in=hdu_in)
    return np.asarray(data), _high_level(wcs)


def reproject_affine(
    input_data,
    output_projection,
    shape_out=None,
    *,
    order=3,
    hdu_in=0,
    return_footprint=True,
    tolerance=0.01,
    fill_value=np.nan,
    uncertainty=None,
    nan_threshold=0.5,
    inf_threshold=0.0,
    threads=2,
):
    """
    Reproject an image onto another WCS with an affine pixel map and a NaN-safe cubic spline.

    Drop-in replacement for `reproject.reproject_interp` when the pixel-to-pixel mapping is affine
    (true for the exposures of one ASPIICS acquisition, and for re-centring/de-rotating onto a
    solar-north-up grid of the same plate scale). Typically 10x faster and more accurate than
    ``reproject_interp(..., order="bicubic")``, and it keeps NaN/+Inf regions without poisoning
    their neighbourhood.

    Parameters
    ----------
    input_data : object
        ``(array, WCS)``, ``(array, Header)``, an image HDU or HDUList, a file name, or any
        object with ``.data`` and ``.wcs`` (`~astropy.nddata.NDData`, `sunpy.map.GenericMap`,
        `ndcube.NDCube`). Extra leading array dimensions are looped over with the same map.
        NaN marks missing pixels, +Inf saturated ones.
    output_projection : `~astropy.wcs.WCS` or `~astropy.io.fits.Header`
        Output WCS (a header also gives the shape through NAXISn).
    shape_out : tuple, optional
        Output shape; required if ``output_projection`` is a WCS without ``array_shape``.
    order : int or str, optional
        Interpolation order, as int or as `reproject` name ("bicubic" = 3, "bilinear" = 1, ...).
    hdu_in : int or str, optional
        HDU to use when ``input_data`` is a file or HDUList.
    return_footprint : bool, optional
        Also return the footprint (1 = valid, 0 = missing), as `reproject` does.
    tolerance : float, optional
        Largest allowed difference (pixels) between the affine and the exact mapping over the
        overlapping frame; above it, `reproject.reproject_interp` is used (logged at INFO level).
    fill_value : float, optional
        Value for missing output pixels.
    uncertainty : array-like or `~astropy.nddata.NDUncertainty`, optional
        1-sigma uncertainty of ``input_data`` (same shape). If given, the resampled sigma (see
        `resample_uncertainty`) is returned as an extra, last element.
    nan_threshold, inf_threshold : float, optional
        Mask restoration thresholds, see `affine_resample`.
    threads : int, optional
        Threads for the SciPy transforms.

    Returns
    -------
    array : `numpy.ndarray`
        Reprojected data: float64, or float32 if the input is float32.
    footprint : `numpy.ndarray`
        Only if ``return_footprint``: 1 where valid, 0 where missing (same dtype as ``array``).
    sigma : `numpy.ndarray`
        Only if ``uncertainty`` is given.

    Raises
    ------
    aspiics.exceptions.ProcessingError
        If the output grid does not overlap the input frame.

    Notes
    -----
    The exact mapping (output pixel -> world -> input pixel) is evaluated on a 33x33 grid through
    `astropy.wcs.wcsapi` world *values* when the celestial frames match (see `frames_match`);
    otherwise through astropy coordinates (sunpy frames, Sun-centred spherical screen for
    off-limb helioprojective points). For ASPIICS-to-ASPIICS alignment the TAN non-linearity is
    shared by input and output and the residual of the affine fit is ~1e-4 px.

    The fallback `reproject.reproject_interp` is run on the filled image (so NaN do not poison
    the spline either), and the missing/saturated masks are reprojected bilinearly and restored.
    """
    if isinstance(order, str):
        order = _ORDER_NAMES[order]
    data, wcs_in = _parse_input(input_data, hdu_in)
    from reproject.utils import parse_output_projection

    wcs_out, shape_out = parse_output_projection(output_projection, shape_in=data.shape, shape_out=shape_out)
    wcs_out = _high_level(wcs_out)
    shape_out = tuple(int(s) for s in shape_out)
    if wcs_in.low_level_wcs.pixel_n_dim != 2 or wcs_out.low_level_wcs.pixel_n_dim != 2:
        raise ProcessingError("reproject_affine supports WCS with 2 pixel dimensions only")
    if data.shape[:-2] != shape_out[:-2]:
        raise ProcessingError(
            f"Leading dimensions of the input {data.shape[:-2]} and shape_out {shape_out[:-2]} differ"
        )

    sigma = None
    if uncertainty is not None:
        sigma = np.asarray(getattr(uncertainty, "array", uncertainty))
        if sigma.shape != data.shape:
            raise ProcessingError(f"uncertainty shape {sigma.shape} differs from data shape {data.shape}")

    pmap = find_pixel_mapping(wcs_in, wcs_out, data.shape, shape_out, tolerance=tolerance)

    flat = data.reshape((-1, *data.shape[-2:]))
    flat_sigma = None if sigma is None else sigma.reshape(flat.shape)
    out_dtype = np.float32 if data.dtype == np.float32 else np.float64
    outs, foots, sigs = [], [], []
    if pmap is not None:
        for i, img in enumerate(flat):
            o, f = resample_array(
                img,
                pmap,
                shape_out[-2:],
                order=order,
                fill_value=fill_value,
                nan_threshold=nan_threshold,
                inf_threshold=inf_threshold,
                threads=threads,
            )
            outs.append(o)
            foots.append(f)
            if flat_sigma is not None:
                sigs.append(
                    resample_uncertainty(flat_sigma[i], pmap, shape_out[-2:], valid=f > 0, threads=threads)
                )
    else:
        log.info(
            "Pixel mapping is not smooth to %.3g px (no polynomial of degree <= 3 fits): "
            "falling back to reproject_interp",
            tolerance,
        )
        for i, img in enumerate(flat):
            o, f, s = _fallback(
                img,
                None if flat_sigma is None else flat_sigma[i],
                wcs_in,
                wcs_out,
                shape_out[-2:],
                order,
                fill_value,
                nan_threshold,
                inf_threshold,
            )
            outs.append(o.astype(out_dtype, copy=False))
            foots.append(f.astype(out_dtype, copy=False))
            sigs.append(s)

    array = np.stack(outs).reshape(shape_out)
    result = [array]
    if return_footprint:
        result.append(np.stack(foots).reshape(shape_out))
    if sigma is not None:
        result.append(np.stack(sigs).reshape(shape_out).astype(out_dtype, copy=False))
    return result[0] if len(result) == 1 else tuple(result)


def _fallback(img, sig, wcs_in, wcs_out, shape_out, order, fill_value, nan_threshold, inf_threshold):
    from reproject import reproject_interp

    finite = np.isfinite(img)
    saturated = np.isposinf(img)
    missing = ~finite & ~saturated
    filled = fill_invalid(img.astype(float), ~finite)
    out = reproject_interp(
        (filled, wcs_in), wcs_out, shape_out=shape_out, order=_ORDER_TO_NAME[order], return_footprint=False
    )
    masks = reproject_interp(
        (np.stack([missing, saturated]).astype(float), wcs_in),
        wcs_out,
        shape_out=(2, *shape_out),
        order="bilinear",
        return_footprint=False,
    )
    bad = ~np.isfinite(masks[0]) | (masks[0] > nan_threshold) | ~np.isfinite(out)
    out[masks[1] > inf_threshold] = np.inf
    out[bad] = fill_value
    sig_out = None
    if sig is not None:
        finite_s = np.isfinite(sig)
        work = sig.astype(float)
        if not finite_s.all() and finite_s.any():
            _, (iy, ix) = ndimage.distance_transform_cdt(~finite_s, return_indices=True)
            work = work[iy, ix]
        sig_out = reproject_interp((work, wcs_in), wcs_out, shape_out=shape_out, return_footprint=False)
        sig_out[bad] = np.nan
    return out, (~bad).astype(float), sig_out
