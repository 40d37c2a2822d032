"""
Accuracy of the L2 calibration against the simulator's truth, at the full 2048² size.

For each exposure of a simulated Wideband acquisition (0.1, 1 and 10 s) and an Fe XIV one, this
prints the issue-3 figures over the valid pixels (finite L2, not a hot or unusual pixel):

* median |L2 − truth| / truth, and its ratio to the noise-only expectation
  ``median(0.6745 σ / truth)`` (target ≤ 1.2);
* the standard deviation of (L2 − truth)/σ (target within 10 % of 1);
* saturated pixels left finite, and valid pixels marked saturated (targets: 0 and 0).

Usage::

    python benchmarks/accuracy_l2.py [--size 2048] [--banding]

With ``--banding`` the simulator injects banding and the banding step corrects it; the truth
then includes the injected pattern's residual, so the figures measure the whole chain.
"""

import argparse
import tempfile

import numpy as np

from aspiics import ASPIICSMap, CalibrationSet
from aspiics.simulate import make_calibration_set, simulate_acquisition


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--banding", action="store_true", help="inject banding and correct it")
    args = parser.parse_args()
    shape = (args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=shape, seed=11)
        cal = CalibrationSet(release.path)
        print(f"L2 accuracy, {args.size}², banding {'injected and corrected' if args.banding else 'off'}")
        print(f"{'filter':9} {'t [s]':>7} {'n valid':>9} {'med rel err':>12} {'expected':>9} {'ratio':>6} "
              f"{'std z':>6} {'sat finite':>10} {'valid->sat':>10}")  # fmt: skip
        for filter_name, exposures in (("Wideband", (0.1, 1.0, 10.0)), ("Fe XIV", (2.0, 20.0))):
            acq = simulate_acquisition(
                filter_name, exposures, shape=shape, calibration=release, seed=12, banding=args.banding
            )
            for frame in acq.frames:
                truth = frame.truth
                l2 = ASPIICSMap(frame.data, frame.header).calibrate(cal, banding=args.banding)
                data = np.asarray(l2.data)
                saturated = truth.saturated | truth.beyond_nonlin
                valid = np.isfinite(data) & ~truth.hot & ~truth.unusual & (truth.l2 > 0)
                sigma = l2.sigma
                z = (data[valid] - truth.l2[valid]) / sigma[valid]
                rel = np.median(np.abs(data[valid] - truth.l2[valid]) / truth.l2[valid])
                expected = np.median(0.6745 * sigma[valid] / truth.l2[valid])
                sat_finite = int(np.isfinite(data[saturated]).sum())
                wrongly = int(np.isinf(data[~saturated & ~truth.missing]).sum())
                print(f"{filter_name:9} {truth.exptime:7.3f} {valid.sum():9d} {rel:12.5f} {expected:9.5f} "
                      f"{rel / expected:6.3f} {z.std():6.3f} {sat_finite:10d} {wrongly:10d}")  # fmt: skip


if __name__ == "__main__":
    main()
