"""
A seedable model of the white-light corona (K + F) that can be rendered on any helioprojective WCS.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from scipy.ndimage import gaussian_filter1d

from aspiics.fcorona import koutchmy_f_corona

__all__ = ["LINE_FILTERS", "CoronaModel", "RenderedCorona", "helioprojective_geometry"]

log = logging.getLogger(__name__)

_RAY_SAMPLES = 3600  # 0.1° grid of the fine-ray pattern
_BLOCK = 1 << 16  # elements per evaluation block
#: FITS filter names whose passband holds a coronal emission line rendered by `CoronaModel.line_brightness`.
LINE_FILTERS = ("Fe XIV", "He I")


@dataclass(frozen=True)
class RenderedCorona:
    """
    The corona evaluated on a pixel grid.

    Attributes
    ----------
    B : `numpy.ndarray`
        Total brightness K + F (MSB, float32).
    pB : `numpy.ndarray`
        Polarized brightness (MSB, float32); the F-corona is unpolarized.
    alpha : `numpy.ndarray`
        Direction of the electric vector (tangential, perpendicular to the radius vector from
        Sun centre) in degrees in [0, 180), measured in the pixel frame of the WCS from +x
        (columns) counter-clockwise towards +y (rows).
    B_K, B_F : `numpy.ndarray`
        K- and F-corona brightness (MSB, float32).
    r : `numpy.ndarray`
        Projected distance from Sun centre in solar radii (float32).
    position_angle : `numpy.ndarray`
        Solar position angle (deg, from solar north counter-clockwise through east, [0, 360)).
    sun_pixel : tuple of float
        0-based pixel (x, y) of Sun centre (helioprojective (0, 0)).
    """

    B: np.ndarray
    pB: np.ndarray
    alpha: np.ndarray
    B_K: np.ndarray
    B_F: np.ndarray
    r: np.ndarray
    position_angle: np.ndarray
    sun_pixel: tuple


def _interp_matrix(n, step):
    """(n, m) matrix of linear-interpolation weights from nodes at 0, step, 2 step, ... to 0..n-1."""
    m = (n - 1) // step + 2
    i = np.arange(n)
    j0 = i // step
    f = (i - j0 * step) / step
    w = np.zeros((n, m))
    w[i, j0] = 1.0 - f
    w[i, j0 + 1] = f
    return w, np.arange(m) * step


def helioprojective_geometry(wcs, shape, *, step=None):
    """
    Sun-centred geometry of every pixel of a helioprojective WCS.

    Parameters
    ----------
    wcs : `astropy.wcs.WCS`
        Celestial WCS with helioprojective longitude/latitude axes (any projection astropy
        supports; the pixel→world transform of the WCS is used).
    shape : tuple of int
        ``(ny, nx)`` of the pixel grid.
    step : int, optional
        The WCS is evaluated exactly on a grid of nodes every ``step`` pixels and the Sun-centred
        gnomonic coordinates are interpolated bilinearly in between (for a TAN WCS this map is a
        projective transform: the interpolation error is < 1e-4 arcsec for ``step`` ≤ 32 over a
        1° field). Default: 1 (exact) up to 512² pixels, 32 above.

    Returns
    -------
    rho_arcsec : `numpy.ndarray`
        Angular distance from Sun centre (arcsec, float32).
    position_angle : `numpy.ndarray`
        Solar position angle (rad, from north counter-clockwise through east, [0, 2π), float32).
    sun_pixel : tuple of float
        0-based pixel coordinates (x, y) of Sun centre.
    """
    ny, nx = (int(s) for s in shape)
    if step is None:
        step = 1 if ny * nx <= 512 * 512 else 32
    unit_x = u.Unit(wcs.wcs.cunit[0] or "deg")
    unit_y = u.Unit(wcs.wcs.cunit[1] or "deg")
    to_rad_x, to_rad_y = unit_x.to(u.rad), unit_y.to(u.rad)

    def gnomonic(px, py):
        tx, ty = wcs.pixel_to_world_values(px, py)
        tx = (np.asarray(tx, dtype=float) * to_rad_x + np.pi) % (2 * np.pi) - np.pi
        ty = np.asarray(ty, dtype=float) * to_rad_y
        return np.tan(tx), np.tan(ty) / np.cos(tx)

    if step <= 1:
        py, px = np.mgrid[0:ny, 0:nx].astype(float)
        gx, gy = gnomonic(px, py)
    else:
        wy, ny_nodes = _interp_matrix(ny, step)
        wx, nx_nodes = _interp_matrix(nx, step)
        py, px = np.meshgrid(ny_nodes.astype(float), nx_nodes.astype(float), indexing="ij")
        cx, cy = gnomonic(px, py)
        wy32 = wy.astype(np.float32)
        gx = wy32 @ (cx @ wx.T).astype(np.float32)
        gy = wy32 @ (cy @ wx.T).astype(np.float32)
    gx = gx.astype(np.float32)
    gy = gy.astype(np.float32)
    rho = np.arctan(np.hypot(gx, gy)) * np.float32(np.degrees(1.0) * 3600.0)
    pa = np.arctan2(-gx, gy)
    pa[pa < 0] += np.float32(2 * np.pi)
    sx, sy = wcs.world_to_pixel_values(0.0, 0.0)
    return rho.astype(np.float32), pa.astype(np.float32), (float(sx), float(sy))


@dataclass(frozen=True)
class CoronaModel:
    """
    A seedable white-light corona: K-corona with streamers, coronal holes and rays, plus F-corona.

    Parameters
    ----------
    seed : int
        Seed of the random structure (streamer positions and amplitudes, ray pattern).
    n_streamers : int
        Number of helmet streamers, placed around the equatorial position angles 90° and 270°.
    streamer_amplitude : tuple of float
        Range of the peak brightness of a streamer relative to the background K-corona.
    streamer_width_deg : float
        Gaussian sigma (deg of position angle) of a streamer at 1.1 R☉; it narrows as
        ``(r / 1.1) ** -streamer_narrowing``.
    streamer_narrowing : float
        Exponent of the narrowing with height.
    hole_depth : float
        Relative dimming at the poles (polar coronal holes), 0 = none.
    hole_width_deg : float
        Gaussian sigma (deg) of the polar holes in position angle.
    ray_amplitude : float
        RMS relative modulation by the fine radial rays (constant along r).
    ray_scale_deg : float
        Correlation length of the ray pattern in position angle (deg).
    f_corona : bool
        Add the Koutchmy (2000) F-corona (unpolarized).
    column_streamer : bool
        Add a narrow, straight bright streamer: a line at position angle
        ``column_streamer_pa`` (deg) offset perpendicularly by ``column_streamer_offset``
        (arcsec; positive towards position angle ``column_streamer_pa - 90°``, i.e. towards west
        for PA = 0) from Sun centre, on the side of that position angle only, with a Gaussian
        cross-section of sigma ``column_streamer_width`` (arcsec) and a peak of
        ``column_streamer_amplitude`` × the background K-corona. `simulate_acquisition` aligns it
        with one detector column.
    column_streamer_pa, column_streamer_offset, column_streamer_width, column_streamer_amplitude : float
        See ``column_streamer``.
    lines : bool
        Render the emission lines of the narrowband filters (`line_brightness`): Fe XIV
        530.4 nm and He I D3 587.7 nm. False gives the continuum only in every filter (the
        behaviour before the lines were added).
    fe_xiv_amplitude : float
        Fe XIV line brightness at 1.1 R☉ per unit of streamer enhancement, as a fraction of the
        unstructured K-corona ``k_radial(1.1)``.
    fe_xiv_index : float
        Power-law index of the radial fall-off of the Fe XIV line (emission ∝ n_e²).
    fe_xiv_quiet : float
        Fe XIV emission of the quiet corona outside streamers, in units of a streamer enhancement.
    he_i_amplitude : float
        Peak He I D3 brightness of a prominence at 1.1 R☉, fraction of ``k_radial(1.1)``.
    he_i_scale_height : float
        Exponential scale height (R☉) of the He I D3 emission above 1.1 R☉.
    n_prominences : int
        Number of prominences (He I D3 sources) at random position angles.
    prominence_width_deg : float
        Gaussian sigma (deg of position angle) of a prominence.

    Notes
    -----
    With ``r`` the projected distance in R☉ and ``PA`` the solar position angle:

    - K-corona: ``B_K = 1e-6 (1.425 r^-7 + 2.565 r^-17) · M(r, PA)`` MSB (the Baumbach K terms),
      with ``M = H(PA) · (1 + Σ_i (A_i - 1) exp(-ΔPA_i² / 2σ_i(r)²)) · (1 + ray(PA))``: polar holes
      ``H``, streamers of peak ``A_i`` and the fine ray pattern (a Gaussian-smoothed random series
      on a 0.1° grid, linearly interpolated).
    - Polarization degree of the K-corona ``p(r) = 0.62 - 0.32 exp(-(r - 1.1) / 0.6)``
      (0.30 at 1.1 R☉, 0.59 at 2.5 R☉); ``pB = p · B_K``; the F-corona is unpolarized.
    - ``B = B_K + B_F`` with ``B_F = koutchmy_f_corona(r, PA)``.
    - ``r`` is clipped to ≥ 1 (the model is not meant for the disc).
    - The direction of polarization is tangential. For any gnomonic (TAN) WCS, great circles
      through Sun centre are straight lines through the Sun-centre pixel, so the tangential
      direction in the pixel frame is ``atan2(y - y_sun, x - x_sun) + 90°``.
    - Emission lines (`line_brightness`, unpolarized, added by the simulator to the Fe XIV and
      He I scenes only), in MSB of the narrowband filter:
      ``L_Fe = a_Fe k_radial(1.1) (r / 1.1)^-n_Fe (q + S(r, PA))`` with ``S = Σ_i (A_i - 1)
      exp(-ΔPA_i² / 2σ_i(r)²)`` the streamer enhancement of the K-corona: the green line is
      concentrated in the streamers and falls off steeply (``n_Fe = 12``; ~1–4 % of the
      continuum at 1.1 R☉ in a streamer, < 0.1 % at 2 R☉);
      ``L_He = a_He k_radial(1.1) exp(-(r - 1.1) / h) Σ_j exp(-ΔPA_j² / 2w²)``: He I D3 from
      a few prominences close to the limb. The random positions use their own random stream,
      so the continuum of a given seed is the same with or without lines.
    - The simulator's narrowband and wideband frames are calibrated in MSB of their own
      passband, so the continuum (K + F) has the same value ``B`` in every filter: the
      continuum ratio of `aspiics.lines.line_emission` is exactly 1 for simulated data.
    """

    seed: int = 0
    n_streamers: int = 4
    streamer_amplitude: tuple = (2.0, 5.0)
    streamer_width_deg: float = 12.0
    streamer_narrowing: float = 0.8
    hole_depth: float = 0.6
    hole_width_deg: float = 30.0
    ray_amplitude: float = 0.15
    ray_scale_deg: float = 0.4
    f_corona: bool = True
    column_streamer: bool = False
    column_streamer_pa: float = 0.0
    column_streamer_offset: float = 0.0
    column_streamer_width: float = 2.0
    column_streamer_amplitude: float = 1.5
    lines: bool = True
    fe_xiv_amplitude: float = 0.03
    fe_xiv_index: float = 12.0
    fe_xiv_quiet: float = 0.15
    he_i_amplitude: float = 0.03
    he_i_scale_height: float = 0.06
    n_prominences: int = 3
    prominence_width_deg: float = 3.0
    _streamers: tuple = field(init=False, repr=False, compare=False)
    _rays: np.ndarray = field(init=False, repr=False, compare=False)
    _prominences: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 0xC020A]))
        centres = []
        for i in range(self.n_streamers):
            base = 90.0 if i % 2 == 0 else 270.0
            centres.append((base + rng.uniform(-35.0, 35.0)) % 360.0)
        amps = rng.uniform(*self.streamer_amplitude, self.n_streamers)
        widths = self.streamer_width_deg * rng.uniform(0.7, 1.3, self.n_streamers)
        object.__setattr__(self, "_streamers", tuple(zip(centres, amps, widths, strict=True)))
        noise = rng.normal(0.0, 1.0, _RAY_SAMPLES)
        sigma = max(self.ray_scale_deg * _RAY_SAMPLES / 360.0, 0.5)
        rays = gaussian_filter1d(noise, sigma, mode="wrap")
        rays /= rays.std()
        rays = np.clip(self.ray_amplitude * rays, -0.9, 3.0)
        # position-angle-only factor (polar holes x rays) sampled on the 0.1° grid
        grid = np.arange(_RAY_SAMPLES) * (360.0 / _RAY_SAMPLES)
        d_pole = np.minimum(np.abs((grid + 180.0) % 360.0 - 180.0), np.abs(grid - 180.0))
        holes = 1.0 - self.hole_depth * np.exp(-0.5 * (d_pole / self.hole_width_deg) ** 2)
        pa_factor = holes * (1.0 + rays)
        object.__setattr__(self, "_rays", np.append(pa_factor, pa_factor[0]).astype(np.float32))
        # prominences: their own stream, so that the continuum does not depend on the line settings
        rng_lines = np.random.default_rng(np.random.SeedSequence([int(self.seed), 0x11E5]))
        object.__setattr__(self, "_prominences", rng_lines.uniform(0.0, 360.0, int(self.n_prominences)))

    def replace(self, **changes):
        """Return a copy with some parameters changed (same seed → same random structure)."""
        return dataclasses.replace(self, **changes)

    # --- pure profiles ------------------------------------------------------------------------

    @staticmethod
    def k_radial(r):
        """Background (unstructured) K-corona, ``1e-6 (1.425 r^-7 + 2.565 r^-17)`` MSB."""
        r = np.maximum(np.asarray(r, dtype=np.float32), np.float32(1.0))
        inv = np.float32(1.0) / r
        i2 = inv * inv
        i7 = i2 * i2 * i2 * inv
        i17 = i7 * i7 * i2 * inv
        return np.float32(1e-6) * (np.float32(1.425) * i7 + np.float32(2.565) * i17)

    @staticmethod
    def polarization_degree(r):
        """Degree of polarization of the K-corona, rising from 0.30 (1.1 R☉) to 0.59 (2.5 R☉)."""
        r = np.maximum(np.asarray(r, dtype=np.float32), np.float32(1.0))
        return np.float32(0.62) - np.float32(0.32) * np.exp((np.float32(1.1) - r) / np.float32(0.6))

    def modulation(self, r, position_angle_deg):
        """
        Structure factor ``M(r, PA)`` of the K-corona (holes × rays × streamers).

        The position-angle-only part (polar holes × rays) is sampled on a 0.1° grid and
        interpolated linearly; the streamers are evaluated exactly.
        """
        r = np.maximum(np.asarray(r, dtype=np.float32), np.float32(1.0))
        pa = np.asarray(position_angle_deg, dtype=np.float32)
        pa = pa - np.float32(360.0) * np.floor(pa * np.float32(1.0 / 360.0))
        x = pa * np.float32(_RAY_SAMPLES / 360.0)
        i = np.clip(x.astype(np.int32), 0, _RAY_SAMPLES - 1)
        f = x - i
        m = self._rays[i] * (np.float32(1.0) - f) + self._rays[i + 1] * f
        if self.n_streamers:
            m *= np.float32(1.0) + self.streamer_enhancement(r, pa)
        return m

    def streamer_enhancement(self, r, position_angle_deg):
        """
        Relative brightness excess of the streamers, ``Σ_i (A_i - 1) exp(-ΔPA_i² / 2σ_i(r)²)``.

        Zero far from every streamer; the K-corona structure factor is
        ``holes × rays × (1 + streamer_enhancement)``.
        """
        r = np.maximum(np.asarray(r, dtype=np.float32), np.float32(1.0))
        pa = np.asarray(position_angle_deg, dtype=np.float32)
        inv_narrow = (r * np.float32(1.0 / 1.1)) ** np.float32(self.streamer_narrowing)
        acc = np.zeros(np.broadcast_shapes(r.shape, pa.shape), dtype=np.float32)
        for centre, amp, width in self._streamers:
            d = pa - np.float32(centre)
            d -= np.float32(360.0) * np.rint(d * np.float32(1.0 / 360.0))
            d *= inv_narrow * np.float32(1.0 / width)
            d *= d
            d *= np.float32(-0.5)
            acc += np.float32(amp - 1.0) * np.exp(d)
        return acc

    def line_brightness(self, r, position_angle, filter):
        """
        Emission-line brightness seen through a narrowband filter (MSB of that filter).

        Parameters
        ----------
        r : array_like
            Projected distance from Sun centre (R☉).
        position_angle : array_like or `~astropy.units.Quantity`
            Solar position angle (rad if a plain number).
        filter : str
            FITS filter name or code. 'Fe XIV' gives the green line, 'He I' the D3 line, any
            other filter zeros.

        Returns
        -------
        `numpy.ndarray`
            float32, broadcast shape of the inputs; zeros when ``lines`` is False or the filter
            has no line.

        Notes
        -----
        See the class notes for the formulae. ``r`` is clipped to ≥ 1.
        """
        from aspiics.constants import filter_info

        pa = (
            position_angle.to_value(u.rad)
            if isinstance(position_angle, u.Quantity)
            else np.asarray(position_angle, dtype=np.float32)
        )
        r, pa = np.broadcast_arrays(np.asarray(r, dtype=np.float32), np.asarray(pa, dtype=np.float32))
        name = filter_info(filter).name
        if not self.lines or name not in LINE_FILTERS:
            return np.zeros(r.shape, dtype=np.float32)
        r = np.maximum(r, np.float32(1.0))
        pa_deg = np.degrees(pa).astype(np.float32)
        k0 = float(self.k_radial(1.1))
        if name == "Fe XIV":
            radial = np.float32(self.fe_xiv_amplitude * k0) * (r * np.float32(1.0 / 1.1)) ** np.float32(
                -self.fe_xiv_index
            )
            return (radial * (np.float32(self.fe_xiv_quiet) + self.streamer_enhancement(r, pa_deg))).astype(
                np.float32
            )
        radial = np.float32(self.he_i_amplitude * k0) * np.exp(
            (np.float32(1.1) - r) * np.float32(1.0 / self.he_i_scale_height)
        )
        acc = np.zeros(r.shape, dtype=np.float32)
        for centre in self._prominences:
            d = pa_deg - np.float32(centre)
            d -= np.float32(360.0) * np.rint(d * np.float32(1.0 / 360.0))
            acc += np.exp(np.float32(-0.5) * (d * np.float32(1.0 / self.prominence_width_deg)) ** 2)
        return (radial * acc).astype(np.float32)

    def column_streamer_brightness(self, rho_arcsec, pa_rad, rsun_arcsec):
        """Brightness (MSB) of the straight ``column_streamer`` at the given polar coordinates."""
        th = np.radians(self.column_streamer_pa)
        # unit vectors on the sky (x = west, y = north): along the streamer and across it
        along = np.float32(-np.sin(th)), np.float32(np.cos(th))
        across = np.float32(np.cos(th)), np.float32(np.sin(th))
        sx = -rho_arcsec * np.sin(pa_rad)
        sy = rho_arcsec * np.cos(pa_rad)
        a = sx * along[0] + sy * along[1]
        c = sx * across[0] + sy * across[1] - np.float32(self.column_streamer_offset)
        r = rho_arcsec / np.float32(rsun_arcsec)
        prof = np.exp(np.float32(-0.5) * (c / np.float32(self.column_streamer_width)) ** 2)
        return np.where(
            a > 0, np.float32(self.column_streamer_amplitude) * self.k_radial(r) * prof, 0
        ).astype(np.float32)

    def evaluate(self, r, position_angle):
        """
        Brightness of the corona at given polar coordinates (no column streamer).

        Parameters
        ----------
        r : array_like
            Projected distance from Sun centre (R☉).
        position_angle : array_like or `~astropy.units.Quantity`
            Solar position angle (rad if a plain number).

        Returns
        -------
        B_K, B_F, p : `numpy.ndarray`
            K-corona, F-corona (MSB) and K polarization degree, float32.
        """
        pa = (
            position_angle.to_value(u.rad)
            if isinstance(position_angle, u.Quantity)
            else np.asarray(position_angle, dtype=np.float32)
        )
        r, pa = np.broadcast_arrays(np.asarray(r, dtype=np.float32), np.asarray(pa, dtype=np.float32))
        shape = r.shape
        r, pa = r.ravel(), pa.ravel()
        b_k = np.empty(r.size, dtype=np.float32)
        b_f = np.zeros(r.size, dtype=np.float32)
        p = np.empty(r.size, dtype=np.float32)
        # evaluate in cache-sized blocks: the many element-wise steps are memory bound
        for s in range(0, r.size, _BLOCK):
            rb, pb = r[s : s + _BLOCK], pa[s : s + _BLOCK]
            b_k[s : s + _BLOCK] = self.k_radial(rb) * self.modulation(rb, np.degrees(pb))
            if self.f_corona:
                b_f[s : s + _BLOCK] = koutchmy_f_corona(np.maximum(rb, np.float32(1.0)), pb)
            p[s : s + _BLOCK] = self.polarization_degree(rb)
        return b_k.reshape(shape), b_f.reshape(shape), p.reshape(shape)

    def render(self, wcs, shape, *, rsun_arcsec, step=None):
        """
        Render the corona on a pixel grid described by a helioprojective WCS.

        Parameters
        ----------
        wcs : `astropy.wcs.WCS`
            Helioprojective WCS (e.g. an L1 frame's or an L3 Sun-centred north-up grid).
        shape : tuple of int
            ``(ny, nx)``.
        rsun_arcsec : float or `~astropy.units.Quantity`
            Apparent solar radius for the observer (arcsec), to convert angles to R☉.
        step : int, optional
            Node spacing of the exact WCS evaluation (see `helioprojective_geometry`).

        Returns
        -------
        `RenderedCorona`
        """
        if isinstance(rsun_arcsec, u.Quantity):
            rsun_arcsec = rsun_arcsec.to_value(u.arcsec)
        rho, pa, (sx, sy) = helioprojective_geometry(wcs, shape, step=step)
        r = rho / np.float32(rsun_arcsec)
        b_k, b_f, p = self.evaluate(r, pa)
        if self.column_streamer:
            b_k = b_k + self.column_streamer_brightness(rho, pa, rsun_arcsec)
        ny, nx = shape
        theta = np.arctan2(
            np.arange(ny, dtype=np.float32)[:, None] - np.float32(sy),
            np.arange(nx, dtype=np.float32)[None, :] - np.float32(sx),
        )
        alpha = (np.degrees(theta) + np.float32(90.0)) % np.float32(180.0)
        return RenderedCorona(
            B=(b_k + b_f).astype(np.float32),
            pB=(p * b_k).astype(np.float32),
            alpha=alpha.astype(np.float32),
            B_K=b_k.astype(np.float32),
            B_F=b_f,
            r=r,
            position_angle=np.degrees(pa).astype(np.float32),
            sun_pixel=(sx, sy),
        )
