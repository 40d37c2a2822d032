"""
Where the column-gain banding of long exposures is left, and what could be reached.

On simulated Wideband 10 s frames (2048², default banding model, column-aligned streamer), the
additive static pattern is removed exactly (from the simulator's truth), so that only the
multiplicative column gain ``g`` (``BandingModel.column_gain``) and the per-frame residue are left.
The frame is divided by ``1 + ĝ`` for several estimates ``ĝ`` and then corrected by the per-frame
`aspiics.banding.correct_banding`; the banding slope (regression of the per-column residual on
the injected banding; 1 = untouched, target ≤ 0.02) is printed for each:

* ``none``: no gain correction (the per-frame step alone);
* ``exact``: the true gain (the floor of the per-frame step);
* ``exact, high-passed N``: the true gain minus its N-column running mean (what an estimator
  blind to scales above N columns could reach);
* ``exact outside the centre band``: the true gain except on the columns where
  `aspiics.banding.log_polar_gain` has no estimate (radii run along the columns there), for its
  default ``cmin=0.03`` and for ``cmin=0.1``;
* ``log_polar_gain`` with its defaults, with the true gain inserted in the centre band, and
  without ``leave_column_out`` (with ``cmin=0.1``: the estimator before it).

It also prints, per distance from the Sun-centre column, the fraction of the gain that
``log_polar_gain`` recovers (regression slope of ĝ on g) and that bin's share of the injected
per-column variance.

Run: ``python benchmarks/limits_banding_gain.py [--seeds 5 50]``. About 15 s per seed.
"""

import argparse
import itertools
import tempfile

import numpy as np
from astropy.nddata import VarianceUncertainty
from bench_banding import column_medians, to_msb
from bench_banding import regression_slope as slope
from scipy import ndimage

from aspiics.banding import correct_banding, log_polar_gain
from aspiics.calibration import CalibrationSet
from aspiics.map import ASPIICSMap
from aspiics.simulate import make_calibration_set, simulate_acquisition
from aspiics.simulate.detector import BandingModel

SHAPE = (2048, 2048)


def frame_without_static(frame, cal):
    """MSB data with the simulator's additive static pattern removed exactly, its variance, valid."""
    m = to_msb(ASPIICSMap(frame.data, frame.header), cal)
    tr = frame.truth
    data = np.asarray(m.data, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        response = tr.banding_dn / np.where(tr.banding_msb != 0, tr.banding_msb, np.nan)
        static = np.nan_to_num(tr.banding_components["static"] / response)
    var = np.asarray(m.uncertainty.represent_as(VarianceUncertainty).array, np.float32)
    valid = np.isfinite(data) & ~tr.hot & ~tr.unusual
    return data - static.astype(np.float32), var, valid


def recovered(g, est, sel):
    """Regression slope of the estimate on the true gain over ``sel`` (0 without 3 columns)."""
    return np.polyfit(g[sel], est[sel], 1)[0] if np.count_nonzero(sel) > 2 else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 50])
    args = parser.parse_args()
    nx = SHAPE[1]
    g = BandingModel().column_gain(nx).astype(float)
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=SHAPE, seed=2)
        cal = CalibrationSet(release.path)
        for seed in args.seeds:
            acq = simulate_acquisition(
                "Wideband", (10.0,), shape=SHAPE, calibration=release, seed=seed, column_streamer=True
            )
            frame = acq.frames[0]
            data, var, valid = frame_without_static(frame, cal)
            center = frame.truth.sun_center
            injected = column_medians(frame.truth.banding_msb, valid)

            def left(gain, data=data, var=var, frame=frame, valid=valid, injected=injected):
                corr = correct_banding(data / (1 + gain)[None, :].astype(np.float32), variance=var)
                return slope(column_medians(corr.corrected - frame.truth.l2, valid), injected)

            est, est_var = log_polar_gain(data, var, center, valid=valid)
            old, old_var = log_polar_gain(data, var, center, valid=valid, cmin=0.1, leave_column_out=False)
            known = est_var > 0
            band = np.flatnonzero(~known)
            print(
                f"seed {seed}: Sun centre column {center[0]:.1f}; {band.size} columns without a "
                f"log_polar_gain estimate ({band.min()}-{band.max()})"
            )
            rows = [
                ("none", np.zeros(nx)),
                ("exact", g),
                *[
                    (f"exact, high-passed {n}", g - ndimage.uniform_filter1d(g, n, mode="nearest"))
                    for n in (64, 128, 256)
                ],
                ("exact outside the centre band", np.where(known, g, 0.0)),
                ("exact outside the cmin=0.1 band", np.where(old_var > 0, g, 0.0)),
                ("log_polar_gain", est),
                ("log_polar_gain, exact gain in the band", np.where(known, est, g)),
                ("without leave_column_out, cmin=0.1", old),
            ]
            for name, gain in rows:
                print(f"  {name:42s} slope {left(gain):7.4f}")
            dist = np.abs(np.arange(nx) - center[0])
            share = np.nanmean(injected, axis=0)
            share = (share - np.nanmean(share)) ** 2
            print("  |x - x_sun| (columns)   share of injected variance   fraction of g recovered (before)")
            edges = [0, 52, 70, 100, 150, 250, 400, 600, nx]
            for a, b in itertools.pairwise(edges):
                sel = (dist >= a) & (dist < b)
                rec = [recovered(g, e, sel & (v > 0)) for e, v in ((est, est_var), (old, old_var))]
                print(
                    f"  {a:5d}-{b:<5d}               {np.nansum(share[sel]) / np.nansum(share):6.3f}"
                    f"                      {rec[0]:6.3f} ({rec[1]:.3f})"
                )


if __name__ == "__main__":
    main()
