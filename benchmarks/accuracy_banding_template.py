"""
Single frames corrected with a banding template built from exposure sets.

Six simulated Wideband acquisitions (0.1, 1 and 10 s; different coronae, noise and roll angles)
are taken to MSB and passed through the exposure-set step
(`aspiics.banding.correct_banding_exposures`); `aspiics.banding.template_from_exposure_sets`
combines their estimates. Each exposure of a seventh acquisition is then calibrated *alone*,
without and with the template, and the banding slope (regression of the per-column residual on the
injected banding; 1 = untouched, target ≤ 0.02) is printed.

Run: ``python benchmarks/accuracy_banding_template.py [--sets 6] [--gain-iterations 1]
[--gain-cmin 0.1]``. About 2 minutes at 2048 x 2048.
"""

import argparse
import tempfile
import warnings

import numpy as np

from aspiics.banding import correct_banding_exposures, template_from_exposure_sets
from aspiics.calibration import CalibrationSet
from aspiics.map import ASPIICSMap
from aspiics.simulate import make_calibration_set, simulate_acquisition

SHAPE = (2048, 2048)


def to_msb(frame, cal):
    """The calibration steps up to ``msb`` (the input of the exposure-set step)."""
    m = ASPIICSMap(frame.data, frame.header)
    m = m.subtract_bias(cal).correct_nonlinearity(cal).estimate_variance(cal)
    return m.subtract_dark(cal).flat_field(cal).to_msb(cal)


def column_medians(img, valid):
    with warnings.catch_warnings():  # columns without a valid pixel give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmedian(np.where(valid[p::2], img[p::2], np.nan), axis=0) for p in (0, 1)])


def slope(left, injected):
    ok = np.isfinite(left) & np.isfinite(injected)
    x, y = injected[ok] - injected[ok].mean(), left[ok] - left[ok].mean()
    return float((x * y).sum() / (x * x).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--gain-iterations", type=int, default=1)
    parser.add_argument("--gain-cmin", type=float, default=0.1)
    args = parser.parse_args()
    options = {"gain_iterations": args.gain_iterations, "gain_cmin": args.gain_cmin}
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=SHAPE, seed=2)
        cal = CalibrationSet(release.path)
        results = []
        for seed in range(30, 30 + args.sets):
            acq = simulate_acquisition(
                "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=seed,
                roll=(137 * seed) % 360,
            )  # fmt: skip
            msb = [to_msb(fr, cal) for fr in acq.frames]
            _, res = correct_banding_exposures(msb, return_result=True, **options)
            results.append(res)
        template = template_from_exposure_sets(results)
        test = simulate_acquisition(
            "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=5, column_streamer=True
        )
        print(f"template from {args.sets} acquisitions ({options}); single frames of another one:")
        for fr in test.frames:
            l1 = ASPIICSMap(fr.data, fr.header)
            alone = l1.calibrate(cal, banding=True)
            fixed = l1.calibrate(cal, banding=True, banding_options={"template": template})
            truth = fr.truth
            valid = np.isfinite(np.asarray(alone.data)) & np.isfinite(np.asarray(fixed.data))
            valid &= ~truth.hot & ~truth.unusual
            injected = column_medians(truth.banding_msb, valid)
            s0 = slope(column_medians(np.asarray(alone.data) - truth.l2, valid), injected)
            s1 = slope(column_medians(np.asarray(fixed.data) - truth.l2, valid), injected)
            t = alone.exposure_time.to_value("s")
            print(f"  {t:5.1f} s: banding slope {s0:.3f} alone, {s1:.3f} with the template")


if __name__ == "__main__":
    main()
