"""
Accuracy of `aspiics.polarization.demodulate` against the photon-noise floor on simulated data.

A polarizer set (one exposure per polarizer, realistic noise, hot pixels, dropped tiles, pointing
jitter, the three polarizers' own IO centres and angle maps; banding off) is simulated with
`aspiics.simulate.simulate_polarized_set`, calibrated to L2 with the synthetic calibration
release and demodulated onto the Sun-centred north-up grid. The products are compared with the
corona model rendered on that grid.

The *noise floor* is what an exact demodulation of equally noisy intensities gives without any
resampling: on the same output pixels, each polarizer's intensity is computed from the true B,
pB and tangential direction with the exact angle map of that polarizer (the detector angle at
the detector pixel that sees the sky point, plus the frame's roll), vignetted with that
polarizer's vignetting, and given Gaussian noise with the simulator's noise model of that
detector pixel: ``σ² = A + G · I · v`` where ``G = gain / (flat · Aphot · t)`` (photon noise
per MSB) and ``A = σ_l2² − G · l2`` (read noise, dark current, hot-pixel excess) are taken from
the frame's truth. The noisy intensity is divided by the vignetting again (the L2 frames are
``I_k × v_k``; between 1.3 and 2.5 R☉ ``v_k = 1`` exactly: the IO vignetting ends at ~1.19 R☉,
so the products are compared with the true, unvignetted B and pB) and demodulated with
`aspiics.polarization.demodulate_arrays`. Both are evaluated over the same pixels (1.3–2.5 R☉,
valid in our products).

Printed: median |relative error| of B and pB, median |angle − tangential| (deg), the floor's
and ours and their ratio (target ≤ 1.1), and the mean pB error over 2–2.5 R☉ (target ±0.2 %),
for the tangential and the norm pB estimators.

Run: ``python benchmarks/accuracy_polarization.py [--size 2048] [--exposure 5] [--seed 5]``
(2048²: ~40 s, ~6 GB peak).
"""

import argparse
import tempfile
import time

import astropy.units as u
import numpy as np
from scipy.ndimage import map_coordinates

__all__ = ["measure"]


def _angle_diff(a, b):
    return np.mod(np.asarray(a) - np.asarray(b) + 90.0, 180.0) - 90.0


def _errors(B, pB, angle, truth, sel):
    """Median |rel err| of B and pB, median |Δangle| (deg) over ``sel``; mean pB error over 2-2.5 R☉."""
    far = sel & (truth.r > 2.0)
    return {
        "B": float(np.median(np.abs(B[sel] / truth.B[sel] - 1.0))),
        "pB": float(np.median(np.abs(pB[sel] / truth.pB[sel] - 1.0))),
        "angle": float(np.median(np.abs(_angle_diff(angle[sel], truth.alpha[sel])))),
        "pB_bias": float(np.mean(pB[far] / truth.pB[far] - 1.0, dtype=np.float64)),
        "B_bias": float(np.mean(B[far] / truth.B[far] - 1.0, dtype=np.float64)),
    }


def noise_floor(acqs, calibration, wcs_out, shape_out, truth, *, seed=0):
    """
    Exact demodulation of noisy intensities on the output grid, without resampling.

    Parameters
    ----------
    acqs : list of `~aspiics.simulate.SimulatedAcquisition`
        Polarizer 0, 60, 120 (first frame of each is used).
    calibration : `~aspiics.simulate.SyntheticCalibration`
    wcs_out, shape_out
        Output grid (that of our products).
    truth : `~aspiics.simulate.RenderedCorona`
        The corona rendered on the output grid.
    seed : int
        Seed of the noise draw.

    Returns
    -------
    `~aspiics.polarization.PolarizationArrays`
    """
    from aspiics.constants import filter_info
    from aspiics.polarization import demodulate_arrays
    from aspiics.resample import find_pixel_mapping

    rng = np.random.default_rng(seed)
    gain = float(calibration.calib_data["gain"])
    intensities, angles = [], []
    ny, nx = shape_out
    for acq in acqs:
        frame = acq.frames[0]
        tr = frame.truth
        info = filter_info(acq.filter)
        resp = calibration.flat(info).astype(np.float64) * float(calibration.calib_data[info.name]["Aphot"])
        g = gain / (resp * tr.exptime)  # photon-noise variance per MSB of signal
        a = np.maximum(tr.sigma_l2.astype(np.float64) ** 2 - g * tr.l2, 0.0)  # signal-independent part
        pmap = find_pixel_mapping(frame.wcs, wcs_out, tr.l2.shape, shape_out)
        rows_cols = pmap.coordinates(0, ny, nx)  # (2, ny, nx): detector (row, col) of each output pixel

        def at(arr, rows_cols=rows_cols):
            return map_coordinates(np.asarray(arr, np.float64), rows_cols, order=1, mode="nearest")

        psi = at(tr.psi) + tr.roll_deg  # detector angle + roll = angle on the north-up grid
        vign = at(tr.vignetting)
        intensity = 0.5 * (truth.B + truth.pB * np.cos(np.radians(2.0 * (psi - truth.alpha))))
        sigma = np.sqrt(at(a) + at(g) * intensity * vign)
        with np.errstate(divide="ignore", invalid="ignore"):
            noisy = (intensity * vign + sigma * rng.standard_normal(shape_out)) / vign
        intensities.append(noisy.astype(np.float32))
        angles.append(psi.astype(np.float32))
    return demodulate_arrays(intensities, angles, pb_estimator="tangential", tangential_angle=truth.alpha)


def measure(shape=(2048, 2048), *, exposure=5.0, seed=5, threads=2, estimators=("tangential",), tmpdir=None):
    """
    Simulate, calibrate and demodulate a polarizer set; compare with the noise floor.

    Parameters
    ----------
    shape : tuple of int
        Detector shape.
    exposure : float
        Exposure time of each polarizer frame (s).
    seed : int
        Seed of the calibration release, the scene and the noise.
    threads : int
        Threads of `demodulate`.
    estimators : sequence of str
        pB estimators to measure.
    tmpdir : path-like, optional
        Where the calibration release is written (default: a temporary directory).

    Returns
    -------
    dict
        ``"floor"`` and, per estimator, our numbers (dicts of ``B``, ``pB``, ``angle``,
        ``pB_bias``, ``B_bias``), ``"n_pixels"`` and ``"timings"`` (s).
    """
    import aspiics
    from aspiics.map import ASPIICSMap
    from aspiics.polarization import demodulate
    from aspiics.simulate import make_calibration_set, simulate_polarized_set

    timings = {}
    with tempfile.TemporaryDirectory(dir=tmpdir) as tmp:
        t0 = time.perf_counter()
        cal = make_calibration_set(f"{tmp}/calibration", shape=shape, seed=seed)
        acqs = simulate_polarized_set((exposure,), seed=seed, shape=shape, calibration=cal, banding=False)
        timings["simulate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cal_set = aspiics.CalibrationSet(cal.path)
        l2 = [ASPIICSMap(a.frames[0].data, a.frames[0].header).calibrate(cal_set) for a in acqs]
        timings["calibrate"] = time.perf_counter() - t0
        out = {}
        for est in estimators:
            t0 = time.perf_counter()
            prods = demodulate(l2, cal_set, pb_estimator=est, threads=threads)
            timings[f"demodulate ({est})"] = time.perf_counter() - t0
            out[est] = prods
        ref = out[estimators[0]].B
        truth = acqs[0].corona.render(ref.wcs, ref.data.shape, rsun_arcsec=l2[0].rsun_obs.to_value(u.arcsec))
        t0 = time.perf_counter()
        floor = noise_floor(acqs, cal, ref.wcs, ref.data.shape, truth, seed=seed + 1)
        timings["floor"] = time.perf_counter() - t0
    sel = (truth.r > 1.3) & (truth.r < 2.5) & np.isfinite(ref.data) & np.isfinite(floor.B)
    for prods in out.values():
        sel &= np.isfinite(prods.pB.data) & np.isfinite(prods.angle.data)
    result = {
        "floor": _errors(floor.B, floor.pB, floor.angle, truth, sel),
        "n_pixels": int(sel.sum()),
        "timings": timings,
    }
    for est, prods in out.items():
        result[est] = _errors(prods.B.data, prods.pB.data, prods.angle.data, truth, sel)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--exposure", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    res = measure(
        (args.size, args.size),
        exposure=args.exposure,
        seed=args.seed,
        threads=args.threads,
        estimators=("tangential", "norm"),
    )
    fl = res["floor"]
    print(f"{args.size}x{args.size}, {args.exposure:g} s polarizer exposures, seed {args.seed}, "
          f"{res['n_pixels']} pixels in 1.3-2.5 Rsun valid in the products")  # fmt: skip
    print(f"{'':24s}{'B |rel err|':>13s}{'pB |rel err|':>14s}{'angle (deg)':>13s}{'pB bias 2-2.5':>15s}")
    print(f"{'noise floor':24s}{fl['B']:13.4%}{fl['pB']:14.4%}{fl['angle']:13.4f}{fl['pB_bias']:+15.4%}")
    for est in ("tangential", "norm"):
        r = res[est]
        print(f"{'ours, pB ' + est:24s}{r['B']:13.4%}{r['pB']:14.4%}{r['angle']:13.4f}{r['pB_bias']:+15.4%}")
        print(f"{'  ratio to the floor':24s}{r['B'] / fl['B']:13.3f}{r['pB'] / fl['pB']:14.3f}"
              f"{r['angle'] / fl['angle']:13.3f}")  # fmt: skip
    print("targets: ratios <= 1.1, |pB bias| <= 0.2 % (tangential estimator)")
    print("timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in res["timings"].items()))


if __name__ == "__main__":
    main()
