"""
Single frames corrected with a banding template built from exposure sets.

Six simulated Wideband acquisitions (0.1, 1 and 10 s; different coronae, noise and roll angles)
are taken to MSB and passed through the exposure-set step
(`aspiics.banding.correct_banding_exposures`); `aspiics.banding.template_from_exposure_sets`
combines their estimates. Each exposure of a seventh acquisition is then calibrated *alone*,
without and with the template, and the banding slope (regression of the per-column residual on the
injected banding; 1 = untouched, target ≤ 0.02) is printed.

The null test repeats this without any banding in the simulator: what the correction removes
from single frames of a banding-free acquisition, with the per-frame step alone and with a
template from banding-free acquisitions, as an RMS over the pixel σ (target ≤ 0.1).

Run: ``python benchmarks/accuracy_banding_template.py [--sets 6] [--gain-cmin 0.03]``. About 2
minutes at 2048 x 2048.
"""

import argparse
import tempfile

import numpy as np
from bench_banding import column_medians, null_measures, to_msb
from bench_banding import regression_slope as slope

from aspiics.banding import correct_banding_exposures, template_from_exposure_sets
from aspiics.calibration import CalibrationSet
from aspiics.map import ASPIICSMap
from aspiics.simulate import make_calibration_set, simulate_acquisition

SHAPE = (2048, 2048)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--gain-cmin", type=float, default=0.03)
    args = parser.parse_args()
    options = {"gain_cmin": args.gain_cmin}
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=SHAPE, seed=2)
        cal = CalibrationSet(release.path)
        template = build_template(release, cal, args.sets, options)
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
        null_template = build_template(release, cal, args.sets, options, banding=False)
        null = simulate_acquisition(
            "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=6, banding=False,
            column_streamer=True,
        )  # fmt: skip
        print("null test (no banding anywhere): RMS removed / pixel sigma (per pixel; over the median")
        print("sigma in brackets) and the per-column RMS over its noise expectation 1.25 sigma/sqrt(n)")
        for fr in null.frames:
            l1 = ASPIICSMap(fr.data, fr.header)
            plain = l1.calibrate(cal, banding=False)
            alone = l1.calibrate(cal, banding=True)
            fixed = l1.calibrate(cal, banding=True, banding_options={"template": null_template})
            cells = [
                "{} {:.3f} ({:.3f}), {:.2f}".format(label, *null_measures(plain, m, fr.truth))
                for label, m in (("alone", alone), ("with the template", fixed))
            ]
            print(f"  {plain.exposure_time.to_value('s'):5.1f} s: " + "; ".join(cells))


def build_template(release, cal, sets, options, banding=True):
    """A template from the exposure-set estimates of ``sets`` acquisitions of different rolls."""
    results = []
    for seed in range(30, 30 + sets):
        acq = simulate_acquisition(
            "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=seed,
            roll=(137 * seed) % 360, banding=banding,
        )  # fmt: skip
        msb = [to_msb(ASPIICSMap(fr.data, fr.header), cal) for fr in acq.frames]
        _, res = correct_banding_exposures(msb, return_result=True, **options)
        results.append(res)
    return template_from_exposure_sets(results)


if __name__ == "__main__":
    main()
