"""
HDR merge of aligned ASPIICS exposures (pure array numerics).

An ASPIICS acquisition takes 1–3 exposures of different lengths: the long one saturates near the
occulter, the short ones are noisy far out. `merge_arrays` combines an aligned stack of them into
one image with either the reference processor's "fill" method (longest exposure first, holes
filled from shorter ones with a soft seam) or noise-optimal inverse-variance weighting.

Conventions: NaN marks missing pixels (occulter, outside the frame, bad pixels), +Inf saturated ones.
"""

import logging
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from aspiics.exceptions import ProcessingError

__all__ = ["MergeResult", "bounded_distance", "merge_arrays"]

log = logging.getLogger(__name__)

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


class MergeResult(NamedTuple):
    """
    Result of `merge_arrays`.

    Attributes
    ----------
    data : `numpy.ndarray`
        Merged image (float32); NaN where no exposure has data, +Inf where all are saturated.
    sigma : `numpy.ndarray` or None
        1-sigma uncertainty of ``data`` (float32), None if no sigma was given.
    mask : `numpy.ndarray` of bool
        True where ``data`` is not finite.
    weights : `numpy.ndarray`
        Weight of each input exposure, shape (n_exp, ny, nx), float32, in the order of the input
        stack: ``data = sum(weights * input)`` where the weights are non-zero, and the weights sum
        to 1 at every valid pixel.
    """

    data: np.ndarray
    sigma: np.ndarray | None
    mask: np.ndarray
    weights: np.ndarray


def bounded_distance(mask, max_distance, *, tile=256):
    """
    Euclidean distance to the nearest True pixel of ``mask``, exact up to ``max_distance``.

    The image is processed in tiles extended by ``max_distance`` pixels on each side; tiles with no
    True pixel in their extension are skipped. Any pixel closer than ``max_distance`` to a True
    pixel has that pixel within its tile extension, so clipping the result at ``max_distance``
    gives the exact clipped Euclidean distance transform at a fraction of its cost when ``mask``
    is compact.

    Parameters
    ----------
    mask : `numpy.ndarray` of bool
        2-D mask.
    max_distance : float
        Distances are clipped at this value (in pixels).
    tile : int, optional
        Tile size in pixels.

    Returns
    -------
    `numpy.ndarray`
        float32 distances, 0 on True pixels, ``<= max_distance`` everywhere.
    """
    mask = np.asarray(mask, dtype=bool)
    ny, nx = mask.shape
    out = np.full(mask.shape, max_distance, dtype=np.float32)
    if not mask.any():
        return out
    margin = int(np.ceil(max_distance)) + 1
    # a coarse map of which tiles have True pixels, to skip empty tile extensions quickly
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            ey0, ex0 = max(y0 - margin, 0), max(x0 - margin, 0)
            ey1, ex1 = min(y1 + margin, ny), min(x1 + margin, nx)
            sub = mask[ey0:ey1, ex0:ex1]
            if not sub.any():
                continue
            if sub[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0].all():
                out[y0:y1, x0:x1] = 0
                continue
            dist = ndimage.distance_transform_edt(~sub)
            out[y0:y1, x0:x1] = np.minimum(dist[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0], max_distance)
    return out


def _drop_islands(fill, where_droppable, island_size):
    """Remove 4-connected components of ``fill`` with <= island_size pixels, only where droppable."""
    if island_size <= 0:
        return fill
    rows = np.flatnonzero(fill.any(axis=1))
    if rows.size == 0:
        return fill
    cols = np.flatnonzero(fill.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # components lie inside
    labels, n = ndimage.label(fill[box], structure=_FOUR_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes <= island_size
    small[0] = False
    if not small.any():
        return fill
    drop = np.take(small, labels) & where_droppable[box]
    out = fill.copy()
    out[box] &= ~drop
    return out


def _validate(data, sigma, exptime, mask):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ProcessingError(f"merge_arrays expects a stack of shape (n_exp, ny, nx), got {data.shape}")
    data = data.astype(np.float32, copy=True)
    n = data.shape[0]
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), data.shape)
        data[mask] = np.nan
    data[np.isneginf(data)] = np.nan
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=np.float32)
        if sigma.ndim == 2:
            sigma = sigma[None]
        if sigma.shape != data.shape:
            raise ProcessingError(f"sigma shape {sigma.shape} differs from data shape {data.shape}")
    if exptime is None:
        exptime = np.arange(1, n + 1, dtype=float)
    exptime = np.atleast_1d(np.asarray(exptime, dtype=float))
    if exptime.shape != (n,):
        raise ProcessingError(f"{exptime.size} exposure times given for {n} exposures")
    return data, sigma, exptime


def merge_arrays(data, sigma=None, exptime=None, *, blend=30, weighting="fill", island_size=350, mask=None):
    """
    Merge an aligned stack of exposures into one high-dynamic-range image.

    Parameters
    ----------
    data : array-like, shape (n_exp, ny, nx)
        Aligned images in brightness units (already divided by exposure time, e.g. MSB). NaN marks
        missing pixels, +Inf saturated ones (-Inf counts as missing).
    sigma : array-like, shape (n_exp, ny, nx), optional
        1-sigma uncertainties of ``data``. Required for meaningful ``"inverse-variance"`` weights.
    exptime : array-like, shape (n_exp,), optional
        Exposure times. If omitted, the stack is taken to be ordered from the shortest to the
        longest exposure (the order of the reference processor's command line).
    blend : float, optional
        Width (px) of the soft seam of the ``"fill"`` method; 0 for a hard seam.
    weighting : {"fill", "inverse-variance"}, optional
        Merge method, see Notes.
    island_size : int, optional
        ``"fill"`` only: fill regions of at most this many pixels (4-connected) are dropped where the
        longer exposure is NaN (slivers along the occulter edge after alignment). 0 keeps all.
    mask : array-like of bool, optional
        Extra bad pixels (True = bad), broadcastable to ``data``; treated as missing.

    Returns
    -------
    `MergeResult`
        ``(data, sigma, mask, weights)``, all float32 (``mask`` bool).

    Raises
    ------
    aspiics.exceptions.ProcessingError
        For inconsistent shapes or an unknown ``weighting``.

    Notes
    -----
    ``"fill"`` (the reference processor, SPEC §7): exposures are sorted by exposure time and merged
    from the shortest up, each longer exposure ``U`` over the composite ``C`` of the shorter
    ones. Where ``U`` is invalid (NaN or +Inf) and ``C`` is not NaN, ``C`` fills in; fill regions of
    ``<= island_size`` pixels are dropped where ``U`` is NaN (not where it is saturated). Where both
    are valid, the weight of ``C`` falls linearly from 1 at the fill boundary to 0 at ``blend`` px
    into the valid region of ``U`` (Euclidean distance transform, `bounded_distance`). The result
    is always one of the input values or a convex combination of two, so no seam in the signal
    appears when the exposures are consistently calibrated.

    ``"inverse-variance"`` (Hasinoff et al. 2010): every exposure that is valid and unsaturated at
    a pixel gets the weight ``1 / sigma**2``; this is the minimum-variance unbiased combination.
    Without ``sigma`` the photon-noise limit is used: weights proportional to the exposure time.
    Sigma estimated from the noisy data themselves biases the weighted mean low (negative
    fluctuations get more weight): prefer a sigma computed from a smoothed signal.

    The merged uncertainty is ``sqrt(sum(w_k**2 sigma_k**2))`` with the normalised weights
    ``w_k`` (independent exposures); for inverse-variance weights this is ``1/sqrt(sum 1/sigma_k**2)``.

    Negative values (noise around a faint background, over-subtracted stray light) are kept: the
    reference processor clamped them to 1e-11, which biases averages and hides calibration
    problems. Clip them for display only.

    References
    ----------
    .. [1] S. W. Hasinoff, F. Durand, W. T. Freeman, "Noise-optimal capture for high dynamic range
       photography", CVPR 2010, doi:10.1109/CVPR.2010.5540167.
    """
    data, sigma, exptime = _validate(data, sigma, exptime, mask)
    if weighting == "fill":
        weights, saturated = _fill_weights(data, exptime, blend=blend, island_size=island_size)
    elif weighting in ("inverse-variance", "inverse_variance", "ivar"):
        weights, saturated = _ivar_weights(data, sigma, exptime)
    else:
        raise ProcessingError(f"Unknown weighting {weighting!r}: use 'fill' or 'inverse-variance'")

    merged = np.zeros(data.shape[1:], dtype=np.float32)
    var = None if sigma is None else np.zeros(data.shape[1:], dtype=np.float32)
    for k in range(data.shape[0]):
        w = weights[k]
        used = w > 0
        if not used.any():
            continue
        merged += w * np.where(used, data[k], np.float32(0))
        if var is not None:
            var += np.where(used, w * sigma[k], np.float32(0)) ** 2
    invalid = weights.sum(axis=0) <= 0
    merged[invalid] = np.nan
    merged[invalid & saturated] = np.inf
    merged_sigma = None
    if var is not None:
        merged_sigma = np.sqrt(var)
        merged_sigma[invalid] = np.nan
    return MergeResult(merged, merged_sigma, ~np.isfinite(merged), weights)


def _fill_weights(data, exptime, *, blend, island_size):
    n = data.shape[0]
    order = np.argsort(exptime, kind="stable")  # shortest first
    weights = np.zeros(data.shape, dtype=np.float32)
    first = order[0]
    weights[first] = np.isfinite(data[first])
    c_nan = np.isnan(data[first])
    c_inf = np.isposinf(data[first])
    for k in order[1:]:
        u = data[k]
        u_fin = np.isfinite(u)
        u_nan = np.isnan(u)
        fill = ~c_nan & ~u_fin
        fill = _drop_islands(fill, u_nan, island_size)
        alpha = fill.astype(np.float32)
        if blend > 0 and fill.any():
            both = u_fin & ~c_nan & ~c_inf
            ramp = 1 - bounded_distance(fill, blend) / np.float32(blend)
            alpha = np.where(both, ramp, alpha)
        for j in range(n):
            if j != k and weights[j].any():
                weights[j] *= alpha
        weights[k] = (1 - alpha) * u_fin
        c_inf = np.where(fill, c_inf, np.isposinf(u))
        c_nan = ~fill & u_nan
    return weights, c_inf


def _ivar_weights(data, sigma, exptime):
    if sigma is None:
        log.debug("No sigma given: inverse-variance weights proportional to exposure time")
    weights = np.zeros(data.shape, dtype=np.float32)
    for k in range(data.shape[0]):
        if sigma is None:
            weights[k] = np.isfinite(data[k]) * np.float32(exptime[k])
        else:
            s = sigma[k]
            ok = np.isfinite(data[k]) & np.isfinite(s) & (s > 0)
            np.divide(1, s * s, out=weights[k], where=ok)
    total = weights.sum(axis=0)
    np.divide(weights, total, out=weights, where=total > 0)
    saturated = np.isposinf(data).any(axis=0)
    return weights, saturated
