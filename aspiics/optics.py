"""
Geometric optics of ASPIICS: the vignetting by the internal occulter (IO).

The IO sits in a plane conjugated with the external occulter (EO). Seen from the entrance
aperture, its edge projects onto the plane of the EO, and a point of the sky at angle ``w``
from the IO axis is transmitted only through the part of the circular aperture that the IO
does not hide. The transmission therefore rises from 0 to 1 over a narrow annulus
(≈ 1.10–1.18 R☉ for the release-1.0 geometry). The functions here are pure NumPy and are
shared by the simulator (`aspiics.simulate`) and the optional L2 vignetting correction.
"""

import numpy as np

__all__ = ["vignetting", "vignetting_limits"]


def vignetting_limits(*, r_io_mm=1.758, isd_mm=144348.0, aperture_mm=25.0, conjugate_mm=331.108, factor=1.0):
    """
    Angular limits of the IO vignetting zone.

    Parameters
    ----------
    r_io_mm : float
        Physical radius of the internal occulter (mm).
    isd_mm : float
        Distance from the aperture to the plane onto which the IO is projected (the nominal
        inter-satellite distance, mm).
    aperture_mm : float
        Radius of the entrance aperture (mm).
    conjugate_mm : float
        Distance that maps the IO onto the plane of the external occulter (mm).
    factor : float or array_like
        Multiplicative factor of the IO radius (the polar dependence ``f(phi)``).

    Returns
    -------
    w_min, w_max : float or `numpy.ndarray`
        Angles (arcsec) from the IO centre inside which the transmission is 0 and outside which
        it is 1.

    Notes
    -----
    ``R1 = factor * r_io * isd / conjugate`` is the radius of the projected IO;
    ``w_min = atan((R1 - r_ap) / isd)`` and ``w_max = atan((R1 + r_ap) / isd)``. For the
    release-1.0 numbers ``w_min ≈ 1059.4″`` and ``w_max ≈ 1130.9″``.
    """
    r1 = np.asarray(factor, dtype=float) * r_io_mm * isd_mm / conjugate_mm
    rad2arcsec = np.degrees(1.0) * 3600.0
    w_min = np.arctan((r1 - aperture_mm) / isd_mm) * rad2arcsec
    w_max = np.arctan((r1 + aperture_mm) / isd_mm) * rad2arcsec
    return w_min, w_max


def vignetting(
    shape,
    x_io,
    y_io,
    *,
    plate_scale_arcsec,
    r_io_mm=1.758,
    polar_fit=None,
    isd_mm=144348.0,
    aperture_mm=25.0,
    conjugate_mm=331.108,
):
    """
    Geometric vignetting (transmission) of the internal occulter on the detector.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the detector array.
    x_io, y_io : float
        Centre of the IO shadow, 0-based pixel coordinates (column, row).
    plate_scale_arcsec : float
        Plate scale in arcsec per pixel (assumed equal along both axes).
    r_io_mm : float, optional
        Physical radius of the IO (mm); release 1.0: 1.758.
    polar_fit : array_like, shape (2, N), optional
        The content of ``vign_polar_fit.fits``: row 0 = polar angle (deg, 0..358), row 1 =
        multiplicative factor of the IO radius. Interpolated linearly and periodically (period
        360°). None means a circular IO (factor 1).
    isd_mm : float, optional
        Nominal inter-satellite distance (mm).
    aperture_mm : float, optional
        Radius of the entrance aperture (mm).
    conjugate_mm : float, optional
        Distance that maps the IO onto the plane of the external occulter (mm).

    Returns
    -------
    `numpy.ndarray`
        float32 array of ``shape`` with values in [0, 1]: 0 in the IO shadow, 1 in the
        unvignetted field.

    Notes
    -----
    For a pixel at angle ``w`` from the IO centre and polar angle
    ``phi = atan2(y - y_io, x - x_io)`` (degrees, [0, 360), from detector +x towards +y), the IO
    seen from the aperture projects to ``R1 = f(phi) r_io isd / conjugate`` in the occulter
    plane; with ``w_min``, ``w_max`` from `vignetting_limits`, the transmitted fraction of the
    circular aperture of radius ``r_ap`` is the area of the circular segment beyond the chord
    at ``h = r_ap - isd * tan(w - w_min)``: ``beta = 2 arccos(h / r_ap)``,
    ``T = (beta - sin beta) / (2 pi)``, with ``h`` clipped to ``[-r_ap, r_ap]``; ``T = 0`` for
    ``w <= w_min`` and ``1`` for ``w >= w_max``.

    The reference processor (Shestov et al. 2020) applies two empirical fudges (a shifted
    ``w_min`` and a 0.91 factor on the ISD); this implementation is the plain geometric model.

    References
    ----------
    Shestov, S. V. et al. 2020, SPIE 11443, "Scientific processing pipeline for ASPIICS".

    Examples
    --------
    >>> from aspiics.optics import vignetting
    >>> v = vignetting((64, 64), 31.5, 31.5, plate_scale_arcsec=40.0)
    >>> float(v[32, 32]), float(v[0, 0])
    (0.0, 1.0)
    """
    ny, nx = (int(s) for s in shape)
    ps = float(plate_scale_arcsec)
    dx = ((np.arange(nx, dtype=np.float64) - x_io) * ps)[np.newaxis, :]
    dy = ((np.arange(ny, dtype=np.float64) - y_io) * ps)[:, np.newaxis]
    w = np.sqrt(dx * dx + dy * dy)  # arcsec, (ny, nx)

    if polar_fit is not None:
        fit = np.asarray(polar_fit, dtype=np.float64)
        if fit.ndim != 2 or fit.shape[0] != 2:
            raise ValueError(f"polar_fit must have shape (2, N), got {fit.shape}")
        fmin, fmax = float(fit[1].min()), float(fit[1].max())
    else:
        fit = None
        fmin = fmax = 1.0
    kw = dict(r_io_mm=r_io_mm, isd_mm=isd_mm, aperture_mm=aperture_mm, conjugate_mm=conjugate_mm)
    lo, _ = vignetting_limits(factor=fmin, **kw)
    _, hi = vignetting_limits(factor=fmax, **kw)

    out = np.ones((ny, nx), dtype=np.float32)
    out[w <= lo] = 0.0
    zone = (w > lo) & (w < hi)
    if not zone.any():
        return out
    wz = w[zone]
    if fit is None:
        factor = 1.0
    else:
        yy, xx = np.nonzero(zone)
        phi = np.degrees(np.arctan2(yy - y_io, xx - x_io)) % 360.0
        factor = np.interp(phi, fit[0], fit[1], period=360.0)
    w_min, w_max = vignetting_limits(factor=factor, **kw)
    arcsec2rad = np.radians(1.0 / 3600.0)
    h = aperture_mm - isd_mm * np.tan((wz - w_min) * arcsec2rad)
    h = np.clip(h, -aperture_mm, aperture_mm)
    beta = 2.0 * np.arccos(h / aperture_mm)
    t = (beta - np.sin(beta)) / (2.0 * np.pi)
    t = np.where(wz <= w_min, 0.0, np.where(wz >= w_max, 1.0, t))
    out[zone] = np.clip(t, 0.0, 1.0)
    return out
