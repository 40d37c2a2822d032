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

The work scales with the valid area and the length of the mask boundaries, not with the frame:
only a band of ~16 px around the valid data is mirrored (deeper pixels cannot influence the
spline at a valid pixel), the output is computed in tiles that are skipped when they see only
missing input, and the mask transforms run only on the small sub-tiles that contain a boundary.
"""

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
# Box counts of masks, and the nearest valid pixels within a band
# ----------------------------------------------------------------------------------------------------
class _BoxCounter:
    """
    Number of True pixels of a 2-D mask in rectangular boxes, at the resolution of square blocks.

    A box is grown outwards to whole blocks before counting, so the answers are conservative:
    ``none`` (no True pixel in the grown box) and ``full`` (every pixel of the grown box True) are
    exact statements about the box itself; anything else is "mixed".
    """

    def __init__(self, mask, block=16):
        mask = np.asarray(mask, dtype=bool)
        self.shape = mask.shape
        self.block = block
        ny, nx = mask.shape
        by, bx = -(-ny // block), -(-nx // block)
        self.total = int(np.count_nonzero(mask)) if mask.size else 0
        if self.total == 0 or self.total == mask.size:
            self.table = None
            return
        view = mask.view(np.uint8)
        if (by * block, bx * block) != (ny, nx):
            padded = np.zeros((by * block, bx * block), dtype=np.uint8)
            padded[:ny, :nx] = view
            view = padded
        counts = view.reshape(by, block, bx, block).sum(axis=(1, 3), dtype=np.int32)
        table = np.zeros((by + 1, bx + 1), dtype=np.int64)
        np.cumsum(np.cumsum(counts, axis=0), axis=1, out=table[1:, 1:])
        self.table = table

    def count(self, y0, y1, x0, x1):
        """(count, area) of the box ``[y0, y1) x [x0, x1)`` grown to blocks (array arguments allowed)."""
        ny, nx = self.shape
        b = self.block
        y0, x0 = np.clip(y0, 0, ny), np.clip(x0, 0, nx)
        y1, x1 = np.clip(y1, y0, ny), np.clip(x1, x0, nx)
        i0, j0 = y0 // b, x0 // b
        i1, j1 = -(-y1 // b), -(-x1 // b)
        area = (np.minimum(i1 * b, ny) - i0 * b) * (np.minimum(j1 * b, nx) - j0 * b)
        area = np.where((y1 > y0) & (x1 > x0), area, 0)
        if self.table is None:
            return (area if self.total else np.zeros_like(area)), area
        t = self.table
        return t[i1, j1] - t[i0, j1] - t[i1, j0] + t[i0, j0], area

    def state(self, y0, y1, x0, x1):
        """ "empty", "none", "full" or "mixed" for one box (see the class notes)."""
        count, area = self.count(y0, y1, x0, x1)
        if area == 0:
            return "empty"
        if count == 0:
            return "none"
        return "full" if count == area else "mixed"


def _band_nearest(invalid, depth, *, tile=64, counter=None):
    """
    The invalid pixels within ``depth`` px (chessboard) of a valid one, and their nearest valid pixel.

    Only tiles of ``tile`` px that hold invalid pixels and see a valid one within ``depth`` px are
    searched, each with a chessboard distance transform of the tile grown by ``depth`` px (exact:
    a valid pixel within ``depth`` of a tile pixel lies in the grown tile).

    Returns
    -------
    iy, ix, qy, qx : `numpy.ndarray` of intp
        Band pixels and their nearest valid pixels (global array indices).
    """
    ny, nx = invalid.shape
    counter = _BoxCounter(invalid) if counter is None else counter
    ty0 = np.arange(0, ny, tile)[:, None]
    tx0 = np.arange(0, nx, tile)[None, :]
    ty1, tx1 = np.minimum(ty0 + tile, ny), np.minimum(tx0 + tile, nx)
    n_inv, _ = counter.count(ty0, ty1, tx0, tx1)
    n_ext, a_ext = counter.count(ty0 - depth, ty1 + depth, tx0 - depth, tx1 + depth)
    todo = np.argwhere((n_inv > 0) & (n_ext < a_ext))
    parts = []
    for i, j in todo:
        y0, y1, x0, x1 = int(ty0[i, 0]), int(ty1[i, 0]), int(tx0[0, j]), int(tx1[0, j])
        ey0, ey1 = max(y0 - depth, 0), min(y1 + depth, ny)
        ex0, ex1 = max(x0 - depth, 0), min(x1 + depth, nx)
        sub = invalid[ey0:ey1, ex0:ex1]
        if sub.all():
            continue
        dist, (qy, qx) = ndimage.distance_transform_cdt(sub, metric="chessboard", return_indices=True)
        core = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        iy, ix = np.nonzero(sub[core] & (dist[core] <= depth))
        if iy.size == 0:
            continue
        iy += y0 - ey0
        ix += x0 - ex0
        parts.append((iy + ey0, ix + ex0, qy[iy, ix] + ey0, qx[iy, ix] + ex0))
    if not parts:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, empty, empty
    return tuple(np.concatenate([p[k] for p in parts]).astype(np.intp, copy=False) for k in range(4))


# ----------------------------------------------------------------------------------------------------
# Filling invalid pixels
# ----------------------------------------------------------------------------------------------------
def fill_invalid(array, invalid=None, *, depth=16, band=None):
    """
    Fill NaN/Inf pixels so that a spline prefilter is not poisoned by them.

    Each invalid pixel ``p`` within ``depth`` px of the valid data gets the point reflection of the
    valid data across its nearest valid pixel ``q``: ``2 v(q) - v(q + (q - p))`` (an odd mirror,
    which continues the local gradient, so the spline sees a smooth, C1-like extension across the
    boundary of the valid region). Where the reflected point is itself invalid (concave boundaries,
    thin valid strips), the nearest valid value ``v(q)`` is used. Invalid pixels farther than
    ``depth`` px from every valid pixel get one constant, the mean of ``v(q)`` over the filled band.
    If there is no valid pixel at all, the array is filled with zeros.

    Parameters
    ----------
    array : `numpy.ndarray`
        2-D image.
    invalid : `numpy.ndarray` of bool, optional
        Pixels to fill. Default: ``~np.isfinite(array)``.
    depth : int, optional
        Width (px, chessboard metric) of the mirrored band. The cubic-spline prefilter forgets a
        value after ``d`` pixels as ``0.268**d`` (``7e-10`` at 16 px), so what lies deeper than
        ~16 px does not influence the interpolation of valid pixels.
    band : tuple of `numpy.ndarray`, optional
        ``(iy, ix, qy, qx)`` of a previous call on the same ``invalid`` mask and ``depth`` (from
        ``_band_nearest``), to skip the search.

    Returns
    -------
    `numpy.ndarray`
        A finite copy of ``array`` (same dtype).

    Notes
    -----
    The nearest valid pixel is found with a chessboard distance transform
    (`scipy.ndimage.distance_transform_cdt` with indices), only in the tiles of 64 px that hold
    invalid pixels within ``depth`` px of valid ones, so the cost scales with the length of the
    boundary of the valid region, not with the invalid area. The odd mirror along the line
    ``p -> q`` is a correct first-order extrapolation whatever the direction of that line, so an
    exactly Euclidean nearest pixel is not needed.
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
    iy, ix, qy, qx = _band_nearest(invalid, depth) if band is None else band
    ny, nx = array.shape
    vq = array[qy, qx]
    my = np.clip(2 * qy - iy, 0, ny - 1)
    mx = np.clip(2 * qx - ix, 0, nx - 1)
    mirror_ok = ~invalid[my, mx]
    filled = np.where(mirror_ok, 2 * vq - array[my, mx], vq)
    out[invalid] = vq.mean(dtype=np.float64) if vq.size else 0
    out[iy, ix] = filled
    return out


def _nearest_fill(array, invalid, band=None, depth=2):
    """
    Copy of ``array`` with invalid pixels within ``depth`` px of a valid one set to the nearest
    valid value (chessboard metric); invalid pixels deeper than that become NaN.
    """
    out = array.copy()
    if not invalid.any():
        return out
    if invalid.all():
        out[...] = np.nan
        return out
    iy, ix, qy, qx = _band_nearest(invalid, depth) if band is None else band
    out[invalid] = np.nan
    out[iy, ix] = array[qy, qx]
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

    def points(self, rows, cols):
        """Input (row, col) of output pixel array coordinates ``rows``, ``cols`` (broadcast arrays)."""
        rows = np.asarray(rows, dtype=float)
        cols = np.asarray(cols, dtype=float)
        if self.is_affine:
            m, o = self.matrix, self.offset
            return m[0, 0] * rows + m[0, 1] * cols + o[0], m[1, 0] * rows + m[1, 1] * cols + o[1]
        coef, degree, centre, scale = self.poly
        v = (rows - centre[0]) / scale
        u = (cols - centre[1]) / scale
        y = np.zeros(np.broadcast(v, u).shape)
        x = np.zeros_like(y)
        for k, (i, j) in enumerate(_poly_terms(degree)):
            term = v**i * u**j
            y += coef[k, 0] * term
            x += coef[k, 1] * term
        return y, x

    def shifted(self, dy, dx):
        """The same map to input coordinates relative to input pixel ``(dy, dx)`` (a cropped input)."""
        if self.is_affine:
            return PixelMap(
                self.matrix, self.offset - np.array([dy, dx], dtype=float), residual=self.residual
            )
        coef, degree, centre, scale = self.poly
        coef = np.array(coef, dtype=float)
        coef[0] -= [dy, dx]  # the constant term comes first in _poly_terms
        return PixelMap(poly=(coef, degree, centre, scale), residual=self.residual)

    def coordinates(self, r0, r1, nx, c0=0):
        """Input (row, col) of output rows ``r0:r1``, columns ``c0:c0 + nx``: shape (2, r1 - r0, nx)."""
        rows = np.arange(r0, r1, dtype=float)[:, None]
        cols = np.arange(c0, c0 + nx, dtype=float)[None, :]
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

    def apply(self, coeffs, out, r0, r1, *, order, mode, cval, c0=0, coords=None):
        """
        Interpolate the (prefiltered) ``coeffs`` at output rows ``r0:r1`` (columns from ``c0``) into ``out``.

        ``coords``: the input coordinates of that block (from `coordinates`), if already known.
        """
        if self.is_affine:
            ndimage.affine_transform(
                coeffs,
                self.matrix,
                offset=self.offset + self.matrix @ np.array([r0, c0], dtype=float),
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
                self.coordinates(r0, r1, out.shape[1], c0) if coords is None else coords,
                output=out,
                order=order,
                mode=mode,
                cval=cval,
                prefilter=False,
            )


def _poly_terms(degree):
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _run_tiles(work, items, threads):
    if threads <= 1 or len(items) < 2:
        for t in items:
            work(t)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, items))


def _boxes(r0, r1, c0, c1, size):
    """Arrays (r0, r1, c0, c1) of the boxes of ``size`` px that tile ``[r0, r1) x [c0, c1)``."""
    rs = np.arange(r0, r1, size)
    cs = np.arange(c0, c1, size)
    br0, bc0 = np.meshgrid(rs, cs, indexing="ij")
    br0, bc0 = br0.ravel(), bc0.ravel()
    return br0, np.minimum(br0 + size, r1), bc0, np.minimum(bc0 + size, c1)


#: Output tile size (px) of the tiled resampler, and of the sub-tiles on which masks are interpolated.
_TILE = 128
_SUBTILE = 32
#: Input pixels around a box's input coordinates that its interpolation can touch (cubic: -1..+2).
_SUPPORT = 2
#: Box states with respect to a mask (see `_box_states`).
_NONE, _MIXED, _FULL, _EMPTY = 0, 1, 2, 3


def _box_bounds(pmap, r0, r1, c0, c1):
    """(ymin, ymax, xmin, xmax) of the input coordinates of output boxes (arrays of box edges)."""
    if pmap.is_affine:
        rr = np.stack([r0, r0, r1 - 1, r1 - 1]).astype(float)
        cc = np.stack([c0, c1 - 1, c0, c1 - 1]).astype(float)
        y, x = pmap.points(rr, cc)
        return y.min(axis=0), y.max(axis=0), x.min(axis=0), x.max(axis=0)
    # a smooth polynomial map: sample each box on a 5 x 5 grid, with a safety margin
    f = np.linspace(0.0, 1.0, 5)
    rr = r0[:, None, None] + (r1 - 1 - r0)[:, None, None] * f[None, :, None]
    cc = c0[:, None, None] + (c1 - 1 - c0)[:, None, None] * f[None, None, :]
    y, x = pmap.points(rr, cc)
    return (
        y.min(axis=(1, 2)) - 0.5,
        y.max(axis=(1, 2)) + 0.5,
        x.min(axis=(1, 2)) - 0.5,
        x.max(axis=(1, 2)) + 0.5,
    )


def _box_states(counter, bounds, shape_in):
    """State of each box's input support with respect to a mask: _NONE, _MIXED, _FULL or _EMPTY."""
    ymin, ymax, xmin, xmax = bounds
    y0 = np.floor(ymin).astype(np.int64) - _SUPPORT
    y1 = np.floor(ymax).astype(np.int64) + _SUPPORT + 2
    x0 = np.floor(xmin).astype(np.int64) - _SUPPORT
    x1 = np.floor(xmax).astype(np.int64) + _SUPPORT + 2
    if counter is None:
        ny, nx = shape_in
        inside = (np.minimum(y1, ny) > np.maximum(y0, 0)) & (np.minimum(x1, nx) > np.maximum(x0, 0))
        return np.where(inside, _NONE, _EMPTY)
    count, area = counter.count(y0, y1, x0, x1)
    return np.select([area == 0, count == 0, count == area], [_EMPTY, _NONE, _FULL], _MIXED)


def _prefilter(data, order, threads, dtype=np.float64):
    """
    Cubic (or other order) B-spline coefficients of ``data`` (``dtype``, mirror boundaries).

    Same result as `scipy.ndimage.spline_filter`, computed in place: the row pass directly, the
    column pass on transposed copies of column slabs (contiguous lines are ~3x faster).
    """
    coeffs = np.array(data, dtype=dtype, order="C")
    ny, nx = coeffs.shape
    slab = 256

    def rows(a):
        v = coeffs[a : a + slab]
        ndimage.spline_filter1d(v, order=order, axis=1, output=v, mode="reflect")

    def cols(a):
        v = np.ascontiguousarray(coeffs[:, a : a + slab].T)
        ndimage.spline_filter1d(v, order=order, axis=1, output=v, mode="reflect")
        coeffs[:, a : a + slab] = v.T

    _run_tiles(rows, range(0, ny, slab), threads)
    _run_tiles(cols, range(0, nx, slab), threads)
    return coeffs


def _resample(
    array,
    sigma,
    pmap,
    shape_out,
    *,
    order=3,
    fill_value=np.nan,
    nan_threshold=0.5,
    inf_threshold=0.0,
    dtype=np.float64,
    threads=2,
    valid=None,
    depth=16,
):
    """
    Tiled NaN/Inf-safe resampling of an image and/or its sigma with one pixel map.

    The output is cut in tiles of `_TILE` px. The box of input pixels that a tile's interpolation
    can touch is classified with block counts of the missing and saturated masks: tiles that see
    only missing input are set to ``fill_value`` without any interpolation; the bilinear mask
    transforms (which place the missing/saturated boundaries) run only on sub-tiles of `_SUBTILE` px
    that see both kinds of pixels; the frame edges are handled analytically from the coordinates.
    The spline coefficients are computed on the bounding box of the valid input only (plus a
    margin beyond which the filled values cannot influence a valid output pixel).

    Returns (data or None, footprint (bool) or None, sigma or None).
    """
    shape_in = (array if array is not None else sigma).shape
    ny_in, nx_in = shape_in
    shape_out = tuple(int(s) for s in shape_out)
    work_dtype = np.float32 if dtype == np.float32 else np.float64
    edge = min(max(float(nan_threshold), 0.0), 1.0)
    coeffs = missing = saturated = miss_count = sat_count = None
    band = finite = None
    data_map, origin = pmap, (0, 0)
    if array is not None:
        finite = np.isfinite(array)
        invalid = ~finite
        data = array.astype(work_dtype, copy=False)
        if invalid.any():
            saturated = np.isposinf(array)
            missing = invalid & ~saturated
            band = _band_nearest(invalid, depth)
            miss_count = _BoxCounter(missing)
            sat_count = _BoxCounter(saturated)
            if sat_count.total == 0:
                saturated = sat_count = None
            if miss_count.total == 0:
                missing = miss_count = None
            if finite.any():
                # only the valid pixels and ~depth px around them matter for the valid output
                (y0, y1), (x0, x1) = _bbox(finite, depth + _SUPPORT + 2)
                if (y1 - y0) * (x1 - x0) < 0.9 * array.size:
                    data_map, origin = pmap.shifted(y0, x0), (y0, x0)
                    # every band pixel lies within depth px of a valid one, hence inside the box
                    iy, ix, qy, qx = band
                    data = fill_invalid(
                        data[y0:y1, x0:x1],
                        invalid[y0:y1, x0:x1],
                        depth=depth,
                        band=(iy - y0, ix - x0, qy - y0, qx - x0),
                    )
                else:
                    data = fill_invalid(data, invalid, depth=depth, band=band)
            else:
                data = fill_invalid(data, invalid, depth=depth, band=band)
        coeffs = _prefilter(data, order, threads) if order > 1 else data
        del data
    sig_work = None
    if sigma is not None:
        sig_fin = np.isfinite(sigma)
        sig_work = sigma.astype(work_dtype, copy=False)
        if not sig_fin.all():
            same = band is not None and np.array_equal(sig_fin, finite)
            sig_work = _nearest_fill(sig_work, ~sig_fin, band=band if same else None, depth=depth)

    out = None if array is None else np.empty(shape_out, dtype=dtype)
    foot = None if array is None else np.empty(shape_out, dtype=bool)
    sig_out = None if sigma is None else np.empty(shape_out, dtype=dtype)
    m_u8 = None if missing is None else missing.view(np.uint8)
    s_u8 = None if saturated is None else saturated.view(np.uint8)

    tr0, tr1, tc0, tc1 = _boxes(0, shape_out[0], 0, shape_out[1], _TILE)
    bounds = _box_bounds(pmap, tr0, tr1, tc0, tc1)
    ymin, ymax, xmin, xmax = bounds
    hi_y, hi_x = ny_in - 1 + edge, nx_in - 1 + edge
    outside_all = (ymax < -edge) | (ymin > hi_y) | (xmax < -edge) | (xmin > hi_x)
    outside_any = (ymin < -edge) | (ymax > hi_y) | (xmin < -edge) | (xmax > hi_x)
    miss_state = _box_states(miss_count, bounds, shape_in)
    sat_state = _box_states(sat_count, bounds, shape_in)
    skip = outside_all | (miss_state == _EMPTY) | ((miss_state == _FULL) & (edge < 1))

    def masks(o_t, bad, r0, r1, c0, c1):
        """Interpolate the saturated and missing masks on the sub-tiles that need it."""
        sr0, sr1, sc0, sc1 = _boxes(r0, r1, c0, c1, _SUBTILE)
        sb = _box_bounds(pmap, sr0, sr1, sc0, sc1)
        s_miss = _box_states(miss_count, sb, shape_in)
        s_sat = _box_states(sat_count, sb, shape_in)
        for j in np.flatnonzero((s_miss == _MIXED) | ((s_miss == _FULL) & (edge < 1)) | (s_sat % 3 != 0)):
            a0, a1, b0, b1 = int(sr0[j]), int(sr1[j]), int(sc0[j]), int(sc1[j])
            sub = (slice(a0 - r0, a1 - r0), slice(b0 - c0, b1 - c0))
            tmp = np.empty((a1 - a0, b1 - b0), dtype=np.float32)
            if s_sat[j] in (_MIXED, _FULL):
                pmap.apply(s_u8, tmp, a0, a1, c0=b0, order=1, mode="grid-constant", cval=0.0)
                o_t[sub][tmp > inf_threshold] = np.inf
            if s_miss[j] == _FULL:
                bad[sub] = True
            elif s_miss[j] == _MIXED:
                pmap.apply(m_u8, tmp, a0, a1, c0=b0, order=1, mode="grid-constant", cval=1.0)
                bad[sub] |= tmp > nan_threshold

    def work(i):
        r0, r1, c0, c1 = int(tr0[i]), int(tr1[i]), int(tc0[i]), int(tc1[i])
        block = (slice(r0, r1), slice(c0, c1))
        if skip[i] or (array is None and valid is not None and not valid[block].any()):
            if out is not None:
                out[block] = fill_value
                foot[block] = False
            if sig_out is not None:
                sig_out[block] = np.nan
            return
        coords = None if pmap.is_affine else pmap.coordinates(r0, r1, c1 - c0, c0)
        bad = None
        if array is not None:
            o_t = out[block]
            data_coords = coords
            if coords is not None and origin != (0, 0):
                data_coords = coords - np.array(origin, dtype=float)[:, None, None]
            data_map.apply(
                coeffs, o_t, r0, r1, c0=c0, coords=data_coords, order=order, mode="reflect", cval=0.0
            )
            bad = np.zeros((r1 - r0, c1 - c0), dtype=bool)
            if outside_any[i]:
                if coords is None:
                    coords = pmap.coordinates(r0, r1, c1 - c0, c0)
                for axis, n_in in enumerate(shape_in):
                    bad |= (coords[axis] < -edge) | (coords[axis] > n_in - 1 + edge)
            if miss_state[i] == _MIXED or sat_state[i] in (_MIXED, _FULL):
                masks(o_t, bad, r0, r1, c0, c1)
            o_t[bad] = fill_value
            foot[block] = ~bad
        if sig_out is not None:
            g_t = sig_out[block]
            pmap.apply(sig_work, g_t, r0, r1, c0=c0, coords=coords, order=1, mode="nearest", cval=0.0)
            if bad is not None:
                g_t[bad] = np.nan
            if valid is not None:
                g_t[~valid[block]] = np.nan

    _run_tiles(work, range(len(tr0)), threads)
    return out, foot, sig_out


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
    the frame edges by mirroring (``mode="reflect"``); beyond the frame edges the output is missing
    where an input coordinate lies more than ``min(nan_threshold, 1)`` px outside the outermost pixel
    centres (the half-pixel frame edge for the default threshold).

    The output is computed in tiles of 128 px: tiles that see only missing input pixels are set to
    ``fill_value`` without interpolation, and the missing and saturated masks are interpolated only
    on tiles that contain their boundary, so the cost scales with the valid area and the length of
    the mask boundaries.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise ProcessingError(f"resample_array expects a 2-D image, got shape {array.shape}")
    if dtype is None:
        dtype = np.float32 if array.dtype == np.float32 else np.float64
    out, foot, _ = _resample(
        array,
        None,
        pixel_map,
        shape_out,
        order=order,
        fill_value=fill_value,
        nan_threshold=nan_threshold,
        inf_threshold=inf_threshold,
        dtype=dtype,
        threads=threads,
    )
    return out, foot.astype(dtype)


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
        Output pixels where the resampled data are valid; sigma is NaN elsewhere (and not computed
        in output tiles without any valid pixel).
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
    The sigma map is interpolated linearly (order 1), after setting its unknown pixels within 16 px
    of a known one to the nearest known value (deeper unknown pixels stay unknown: NaN). This is the
    uncertainty of a resampled pixel when the errors of neighbouring input pixels are fully
    correlated, and for a smooth sigma map it equals the input sigma. For independent pixel errors
    the cubic-spline interpolation of a white-noise image has a per-pixel standard deviation between
    ~0.8 sigma (half-pixel phase) and sigma (integer phase): the approximation is conservative by at
    most ~25 % per pixel, and exact for averages over areas of several pixels (resampling
    redistributes the noise into correlated neighbours, it does not remove it). Pixel-to-pixel
    correlations introduced by the resampling are not tracked.
    """
    sigma = np.asarray(sigma)
    if dtype is None:
        dtype = np.float32 if sigma.dtype == np.float32 else np.float64
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
    _, _, out = _resample(None, sigma, pixel_map, shape_out, dtype=dtype, threads=threads, valid=valid)
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
            o, f, sg = _resample(
                img,
                None if flat_sigma is None else flat_sigma[i],
                pmap,
                shape_out[-2:],
                order=order,
                fill_value=fill_value,
                nan_threshold=nan_threshold,
                inf_threshold=inf_threshold,
                dtype=out_dtype,
                threads=threads,
            )
            outs.append(o)
            foots.append(f.astype(out_dtype))
            if sg is not None:
                sigs.append(sg)
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

    def _join(parts):
        return (parts[0] if len(parts) == 1 else np.stack(parts)).reshape(shape_out)

    result = [_join(outs)]
    if return_footprint:
        result.append(_join(foots))
    if sigma is not None:
        result.append(_join(sigs).astype(out_dtype, copy=False))
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
