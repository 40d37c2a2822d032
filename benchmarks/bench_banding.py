"""
Benchmark of the banding correction on a simulated 2048x2048 frame.

Times `aspiics.banding.correct_banding` (and its peak extra memory), a baseline in the style of the
reference processor (size-31 median high-pass + per-column median for even and odd rows), and the
full L2 `calibrate()` with and without the banding step. The frame comes from `aspiics.simulate`
(Wideband, 1 s, with injected banding and a column-aligned streamer); the regression slope of the
per-column residual on the injected banding is printed too (1 = untouched).

`correct_banding` is timed with its defaults (stage 1 only) and with the optional polar stage 2
(``polar=True``), given the internal-occulter centre of the calibration set as ``center`` (as
`calibrate()` passes it) or estimating it from the occulter.

The exposure-set step (`aspiics.calibrate.calibrate_acquisition`, which adds
`aspiics.banding.correct_banding_exposures` between the ``msb`` and ``banding`` steps) is timed on a
Wideband 0.1/1/10 s acquisition, with the slope of every frame, once with the simulator's default
banding and once without its gain (multiplicative) component, which exposure differences cannot see.

Run: ``python benchmarks/bench_banding.py``. Targets (issue 5): correct_banding ≤ 1.0 s and
≤ 300 MB extra, calibrate() with banding ≤ 1.5 s per frame.
"""

import tempfile
import time
import tracemalloc
import warnings

import numpy as np
from scipy import ndimage

from aspiics.banding import correct_banding, correct_banding_exposures, correct_banding_step
from aspiics.calibrate import calibrate_acquisition
from aspiics.calibration import CalibrationSet
from aspiics.map import ASPIICSMap
from aspiics.simulate import make_calibration_set, simulate_acquisition
from aspiics.simulate.detector import BandingModel

SHAPE = (2048, 2048)


def baseline(img):
    """Reference-style correction: size-31 median high-pass, per-column median per row parity."""
    f = np.where(np.isfinite(img), img, np.nan).astype(np.float32)
    filled = np.where(np.isfinite(f), f, np.nanmedian(f))
    hp = f - ndimage.median_filter(filled, size=31)
    pattern = np.zeros_like(f)
    for p in (0, 1):
        pattern[p::2] = np.nanmedian(hp[p::2], axis=0)[None]
    return img - pattern


def measure(fn, *args, repeat=1, **kw):
    """Best wall time over ``repeat`` runs and the peak traced memory (MB)."""
    best, peak = np.inf, 0.0
    for _ in range(repeat):
        tracemalloc.start()
        t = time.perf_counter()
        fn(*args, **kw)
        best = min(best, time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return best, peak


def timed(fn, *args, repeat=3, **kw):
    """Best wall time over ``repeat`` runs, without memory tracing (which slows NumPy down)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args, **kw)
        best = min(best, time.perf_counter() - t)
    return best


def column_medians(img, valid):
    """Per-column medians of ``img`` over the ``valid`` pixels, for even and odd rows: (2, nx)."""
    with warnings.catch_warnings():  # columns without a valid pixel give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmedian(np.where(valid[p::2], img[p::2], np.nan), axis=0) for p in (0, 1)])


def regression_slope(left, injected):
    """Regression slope of the per-column residual on the injected banding (1 = untouched)."""
    ok = np.isfinite(left) & np.isfinite(injected)
    x, y = injected[ok] - injected[ok].mean(), left[ok] - left[ok].mean()
    return float((x * y).sum() / (x * x).sum())


def slope(l2, truth, valid):
    """Regression slope of per-column (per-parity) medians of (l2 - truth.l2) on the injected banding."""
    left = column_medians(np.asarray(l2, float) - truth.l2, valid)
    return regression_slope(left, column_medians(truth.banding_msb, valid))


def to_msb(m, cal):
    """The calibration steps up to ``msb`` of an L1 map (the input of the exposure-set step)."""
    m = m.subtract_bias(cal).correct_nonlinearity(cal).estimate_variance(cal)
    return m.subtract_dark(cal).flat_field(cal).to_msb(cal)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=SHAPE, seed=2)
        acq = simulate_acquisition(
            "Wideband", (1.0,), shape=SHAPE, calibration=release, seed=5, column_streamer=True
        )
        frame = acq.frames[0]
        cal = CalibrationSet(release.path)
        l1 = ASPIICSMap(frame.data, frame.header)
        center = cal.io_center(l1.filter)
        plain = l1.calibrate(cal)
        fixed = l1.calibrate(cal, banding=correct_banding_step)
        t_plain = timed(l1.calibrate, cal)
        t_band = timed(l1.calibrate, cal, banding=correct_banding_step)

    data = np.asarray(plain.data, dtype=np.float32)
    var = np.asarray(plain.uncertainty.array, dtype=np.float32) ** 2
    correct_banding(data)  # warm-up
    dt = timed(correct_banding, data)
    dtv = timed(correct_banding, data, variance=var)
    _, mem = measure(correct_banding, data)
    res = correct_banding(data, polar=True, center=center)
    dtp = timed(correct_banding, data, polar=True, center=center)
    dtc = timed(correct_banding, data, polar=True)
    _, memp = measure(correct_banding, data, polar=True, center=center)
    dtb, memb = measure(baseline, data)
    valid = np.isfinite(np.asarray(fixed.data)) & ~frame.truth.hot & ~frame.truth.unusual
    print(f"correct_banding 2048x2048 (variance estimated): {dt:.3f} s, peak extra memory {mem:.0f} MB")
    print(f"correct_banding 2048x2048 (variance given):     {dtv:.3f} s")
    print(f"  + polar stage (centre {res.params['center']}): {dtp:.3f} s, peak extra memory {memp:.0f} MB")
    print(f"  + polar stage, centre estimated from the occulter: {dtc:.3f} s")
    print(f"baseline median_filter(31) + column median:     {dtb:.3f} s, peak extra memory {memb:.0f} MB")
    print(f"speed-up vs baseline: {dtb / dt:.1f}x")
    print(f"calibrate() without banding: {t_plain:.3f} s; with banding: {t_band:.3f} s")
    s_plain = slope(plain.data, frame.truth, valid)
    s_fixed = slope(fixed.data, frame.truth, valid)
    s_polar = slope(res.corrected, frame.truth, valid)
    print(
        f"banding slope (1 = untouched): without {s_plain:.3f}, with {s_fixed:.3f}, "
        f"with the polar stage {s_polar:.3f}"
    )


def exposure_set(release, cal, banding, label, seed=5):
    """Slopes of the frames of a Wideband 0.1/1/10 s acquisition, calibrated alone and as a set."""
    acq = simulate_acquisition(
        "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=seed, column_streamer=True,
        banding=banding,
    )  # fmt: skip
    l1 = [ASPIICSMap(fr.data, fr.header) for fr in acq.frames]
    per_frame = calibrate_acquisition(l1, cal, banding=True, exposure_banding=False)
    together = calibrate_acquisition(l1, cal, banding=True)
    print(f"exposure set ({label}): banding slope per frame, calibrated alone -> as a set")
    for fr, a, b in zip(acq.frames, per_frame, together, strict=True):
        valid = np.isfinite(np.asarray(b.data)) & np.isfinite(np.asarray(a.data))
        valid &= ~fr.truth.hot & ~fr.truth.unusual
        t = b.exposure_time.to_value("s")
        print(f"  {t:5.1f} s: {slope(a.data, fr.truth, valid):.3f} -> {slope(b.data, fr.truth, valid):.3f}")
    return l1  # not the frames: keeping their truth arrays alive slows the timings below by ~35 %


def null_measures(plain, corrected, truth):
    """
    What a banding correction removed from a banding-free frame, in units of the pixel noise.

    Returns the RMS of the removed component over the per-pixel sigma, its RMS over the median
    sigma, and the RMS over columns (both row parities) of its per-column median over the noise
    expectation ``1.25 sigma / sqrt(n)`` of a median of the ``n`` valid rows.
    """
    p0 = np.asarray(plain.data)
    sig = plain.sigma
    d = np.asarray(corrected.data)
    ok = np.isfinite(p0) & ~truth.hot & ~truth.unusual & np.isfinite(d)
    rem = np.where(ok, p0 - np.where(ok, d, 0), np.nan)
    per_pixel = np.sqrt(np.nanmean((rem / sig) ** 2))
    over_median = np.sqrt(np.nanmean(rem**2)) / np.nanmedian(sig[ok])
    ratios = []
    for par in (0, 1):
        v = np.where(ok[par::2], rem[par::2], np.nan)
        n = ok[par::2].sum(axis=0)
        s_col = np.sqrt(np.nanmedian(np.where(ok[par::2], sig[par::2] ** 2, np.nan), axis=0))
        use = n > 0
        med = np.nanmedian(v[:, use], axis=0)
        ratios.append(med / (1.25 * s_col[use] / np.sqrt(n[use])))
    return per_pixel, over_median, np.sqrt(np.nanmean(np.concatenate(ratios) ** 2))


def null_set(release, cal):
    """Banding-free acquisition: what each stage removes, in units of the pixel noise."""
    acq = simulate_acquisition(
        "Wideband", (0.1, 1.0, 10.0), shape=SHAPE, calibration=release, seed=6, column_streamer=True,
        banding=False,
    )  # fmt: skip
    l1 = [ASPIICSMap(fr.data, fr.header) for fr in acq.frames]
    plain = calibrate_acquisition(l1, cal, banding=False)
    runs = {
        "stage 1": calibrate_acquisition(l1, cal, banding=True, exposure_banding=False),
        "+ offsets": calibrate_acquisition(l1, cal, banding=True, exposure_options={"column_gain": False}),
        "+ offsets + gain": calibrate_acquisition(l1, cal, banding=True),
    }
    print("null test (no banding injected): RMS of the removed pattern / pixel sigma (per pixel; over the")
    print("median sigma in brackets) and the per-column RMS over its noise expectation 1.25 sigma/sqrt(n)")
    for k, fr in enumerate(acq.frames):
        cells = []
        for name, maps in runs.items():
            per_pixel, over_median, col = null_measures(plain[k], maps[k], fr.truth)
            cells.append(f"{name} {per_pixel:.3f} ({over_median:.3f}), {col:.2f}")
        print(f"  {plain[k].exposure_time.to_value('s'):5.1f} s: " + "; ".join(cells))


def main_set():
    with tempfile.TemporaryDirectory() as tmp:
        release = make_calibration_set(tmp, shape=SHAPE, seed=2)
        cal = CalibrationSet(release.path)
        l1 = exposure_set(release, cal, True, "default banding model, seed 5")
        for seed in (50, 51):
            exposure_set(release, cal, True, f"default banding model, seed {seed}", seed=seed)
        exposure_set(release, cal, BandingModel(column_gain_rms=0.0), "without the gain component")
        null_set(release, cal)
        t_frames = timed(lambda: [m.calibrate(cal, banding=True) for m in l1], repeat=2)
        t_set = timed(calibrate_acquisition, l1, cal, banding=True, repeat=2)
        msb = [to_msb(m, cal) for m in l1]
        t_step = timed(correct_banding_exposures, msb, repeat=2)
        _, mem = measure(correct_banding_exposures, msb)
    n = len(l1)
    print(
        f"calibrate, 3 x 2048x2048 with banding: per frame {t_frames / n:.3f} s/frame; as a set "
        f"(calibrate_acquisition) {t_set / n:.3f} s/frame; the exposure-set step alone "
        f"{t_step:.3f} s per set ({t_step / n:.3f} s/frame), peak traced memory {mem:.0f} MB"
    )


if __name__ == "__main__":
    main()
    main_set()
