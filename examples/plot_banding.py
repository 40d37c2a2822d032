"""
======================================
Removing column banding from L2 frames
======================================

After flat-fielding, ASPIICS frames keep column-to-column offsets (different on even and odd
rows), stronger in bright areas, and a faint horizontal banding that follows the saturated
areas. `aspiics.banding.correct_banding` removes them; ``calibrate(..., banding=True)`` runs it
inside the level-2 chain, adds the uncertainty of the estimate to the pixel variance and records
its parameters in the header history.

This example simulates a Wideband frame with known banding and a bright streamer running exactly
along one detector column (the case where a destriping filter is most tempted to remove real
structure), calibrates it with and without the correction, and compares both with the
simulator's truth. Multiscale Gaussian normalisation (`sunkit_image.enhance.mgn`) makes the
stripes visible, as in the before/after figure of the reference processor. The last part
calibrates the three exposures of the acquisition together
(`aspiics.calibrate.calibrate_acquisition`), which also removes the banding that is smooth over
many columns, and finally corrects the 10 s frame with a template built from the exposure sets
of three other acquisitions.
"""

import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
import sunpy.map
from scipy import ndimage
from sunkit_image.enhance import mgn

from aspiics.banding import correct_banding_exposures, template_from_exposure_sets
from aspiics.calibrate import calibrate_acquisition
from aspiics.calibration import CalibrationSet
from aspiics.map import ASPIICSMap
from aspiics.simulate import simulate_acquisition

###############################################################################
# Simulate a Wideband acquisition (0.1, 1 and 10 s) with the simulator's default banding model
# (static even/odd column offsets, a few drifting columns, a column gain error and the
# saturation-driven row banding) and a narrow streamer along the detector column nearest to the
# occulter centre. The frames are written as L1 FITS files together with their synthetic
# calibration set. The first parts use the 1 s exposure.

outdir = tempfile.mkdtemp()
acquisition = simulate_acquisition(
    "Wideband", (0.1, 1.0, 10.0), seed=7, banding=True, column_streamer=True, outdir=outdir
)
frame = acquisition.frames[1]
truth = frame.truth
l1 = sunpy.map.Map(frame.path)
calibration = CalibrationSet(acquisition.calibration.path)

###############################################################################
# Calibrate to level 2 twice: the default chain, and the chain with the banding step. The
# removed pattern is the difference of the two.

plain = l1.calibrate(calibration)
fixed = l1.calibrate(calibration, banding=True)
for line in str(fixed.meta["history"]).splitlines():
    if "banding" in line:
        print(line)

before = np.asarray(plain.data, dtype=float)
after = np.asarray(fixed.data, dtype=float)
finite = np.isfinite(before) & np.isfinite(after)
pattern = np.where(finite, before, 0) - np.where(finite, after, 0)
pattern[~finite] = np.nan

###############################################################################
# MGN needs a finite image: fill the occulter shadow, the lost tiles and the saturated pixels
# with the nearest valid value, enhance, and blank them again.


def enhance(img):
    bad = ~np.isfinite(img)
    idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    out = mgn(img[tuple(idx)].astype(np.float32))
    return np.where(bad, np.nan, out)


mgn_before = enhance(before)
mgn_after = enhance(after)

###############################################################################
# The whole frame: MGN-enhanced before and after, and the removed pattern (column stripes,
# different on even and odd rows, plus the horizontal bands next to the saturated areas).

lo, hi = np.nanpercentile(mgn_before, [1, 99.5])
fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), sharex=True, sharey=True)
kw = {"origin": "lower", "cmap": "viridis", "vmin": lo, "vmax": hi}
axes[0].imshow(mgn_before, **kw)
axes[0].set_title("L2 without banding correction (MGN)")
axes[1].imshow(mgn_after, **kw)
axes[1].set_title("L2 with banding correction (MGN)")
lim = 3 * np.nanstd(pattern)
im = axes[2].imshow(pattern, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
axes[2].set_title("removed pattern (MSB)")
fig.colorbar(im, ax=axes[2], shrink=0.8)
for ax in axes:
    ax.set_xlabel("column")
axes[0].set_ylabel("row")
fig.tight_layout()
plt.show()

###############################################################################
# Zoom on the column-aligned streamer above the occulter, in the outer field where the signal is
# faint and the stripes show best. They are gone in the corrected crop, while the streamer (only a
# few columns wide, but limited in radius, whereas banding spans the whole column) keeps its
# contrast: its cross-section is the same before and after.

column = round(truth.sun_center[0])
rows = slice(1500, 1900)
cols = slice(column - 200, column + 200)
extent = (cols.start - 0.5, cols.stop - 0.5, rows.start - 0.5, rows.stop - 0.5)
fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
axes[0].imshow(mgn_before[rows, cols], extent=extent, **kw)
axes[0].set_title("before (MGN)")
axes[1].imshow(mgn_after[rows, cols], extent=extent, **kw)
axes[1].set_title("after (MGN)")
profile_rows = slice(1600, 1700)
x = np.arange(cols.start, cols.stop)
for img, label, style in ((truth.l2, "truth", "k-"), (before, "before", "C0-"), (after, "after", "C1--")):
    axes[2].plot(x, np.nanmean(img[profile_rows, cols], axis=0), style, label=label, lw=1)
axes[2].set_xlim(column - 30, column + 30)
axes[2].set_xlabel("column")
axes[2].set_ylabel(f"mean of rows {profile_rows.start}-{profile_rows.stop - 1} (MSB)")
axes[2].set_title("streamer cross-section")
axes[2].legend()
fig.tight_layout()
plt.show()

###############################################################################
# Against the injected truth: the per-column median of (L2 − truth) over the valid pixels of the
# even rows, before and after, next to the injected banding. The regression slope of the residual
# on the injected pattern is 1 when nothing is removed and 0 for a perfect correction.

valid = finite & np.isfinite(truth.l2) & ~truth.hot & ~truth.unusual


def column_median(img, parity):
    v = np.where(valid[parity::2], img[parity::2], np.nan)
    return np.nanmedian(v, axis=0)


def slope(residual, injected):
    ok = np.isfinite(residual) & np.isfinite(injected)
    xx, yy = injected[ok] - injected[ok].mean(), residual[ok] - residual[ok].mean()
    return (xx * yy).sum() / (xx * xx).sum()


injected = np.stack([column_median(truth.banding_msb, p) for p in (0, 1)])
left_before = np.stack([column_median(before - truth.l2, p) for p in (0, 1)])
left_after = np.stack([column_median(after - truth.l2, p) for p in (0, 1)])
s_before, s_after = slope(left_before, injected), slope(left_after, injected)
print(f"banding left (slope, 1 = untouched): before {s_before:.3f}, after {s_after:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [2.2, 1]})
xs = np.arange(before.shape[1])
window = slice(column - 100, column + 100)
axes[0].plot(xs[window], injected[0, window], "k", lw=1.5, label="injected banding")
axes[0].plot(xs[window], left_before[0, window], lw=1, label="L2 − truth, without correction")
axes[0].plot(xs[window], left_after[0, window], lw=1, label="L2 − truth, with correction")
axes[0].axvline(column, color="0.6", ls=":", label="streamer column")
axes[0].set_xlabel("column")
axes[0].set_ylabel("median over even rows (MSB)")
axes[0].legend(fontsize=8)
axes[1].plot(injected.ravel(), left_before.ravel(), ",", alpha=0.5, label=f"without: slope {s_before:.2f}")
axes[1].plot(injected.ravel(), left_after.ravel(), ",", alpha=0.5, label=f"with: slope {s_after:.2f}")
axes[1].set_xlabel("injected (MSB)")
axes[1].set_ylabel("left in the L2 (MSB)")
axes[1].legend(markerscale=20, fontsize=8)
fig.tight_layout()
plt.show()

###############################################################################
# What stays after the per-frame correction is the part of the pattern that is smooth over many
# columns: a high-pass of one frame cannot tell it from the corona. The exposures of one
# acquisition can: the column offsets are constant in DN, so ``A / t`` in MSB, while the corona is
# the same in all of them, and the difference of two aligned exposures holds only the banding.
# `~aspiics.calibrate.calibrate_acquisition` measures ``A`` that way (the ``expbanding`` step,
# between ``msb`` and the per-frame ``banding`` step), together with the column gain. Compare the
# three exposures calibrated one by one and together.

l1_all = [sunpy.map.Map(f.path) for f in acquisition.frames]
alone = [m.calibrate(calibration, banding=True) for m in l1_all]
together = calibrate_acquisition(l1_all, calibration, banding=True)
print(together[0].meta["calsteps"])


def column_medians(img, use):
    """Per-column median over the ``use`` pixels, for even and odd rows: shape (2, ncols)."""
    with warnings.catch_warnings():  # columns without a usable pixel (image edges) give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmedian(np.where(use[p::2], img[p::2], np.nan), axis=0) for p in (0, 1)])


fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=False)
for ax, fr, m1, m3 in zip(axes, acquisition.frames, alone, together, strict=True):
    tr = fr.truth
    a1, a3 = np.asarray(m1.data, dtype=float), np.asarray(m3.data, dtype=float)
    use = np.isfinite(a1) & np.isfinite(a3) & ~tr.hot & ~tr.unusual
    inj = column_medians(tr.banding_msb, use)
    res1, res3 = column_medians(a1 - tr.l2, use), column_medians(a3 - tr.l2, use)
    s1, s3 = slope(res1, inj), slope(res3, inj)
    print(f"{m3.exposure_time:.1f}: slope frame by frame {s1:.3f}, as a set {s3:.3f}")
    ax.plot(inj.ravel(), res1.ravel(), ",", alpha=0.5, label=f"frame by frame: slope {s1:.2f}")
    ax.plot(inj.ravel(), res3.ravel(), ",", alpha=0.5, label=f"as a set: slope {s3:.2f}")
    ax.set_title(f"{m3.exposure_time:.1f}")
    ax.set_xlabel("injected (MSB)")
    ax.legend(markerscale=20, fontsize=8)
axes[0].set_ylabel("left in the L2 (MSB)")
fig.tight_layout()
plt.show()

###############################################################################
# In the two short exposures the column offsets dominate the banding and the set calibration
# removes them almost completely. In the 10 s exposure the banding in MSB is mostly the column
# *gain* error (proportional to the signal), which is the same in MSB in every exposure and
# cancels in the differences; the set step measures it on the longest exposure from the radial
# structure of the corona (`aspiics.banding.log_polar_gain`) instead, which removes most of it.
# What stays is the error of that measurement on a single corona. A template built from the
# exposure sets of several acquisitions (`aspiics.banding.template_from_exposure_sets`) averages
# it down and reaches a slope of 0.01 on 10 s frames (see the calibration guide, "Exposure sets").

###############################################################################
# A template from several acquisitions
# ------------------------------------
# The detector's pattern (offsets and gain) is static, the corona is not. Combining the
# exposure-set estimates of a few acquisitions of other days and roll angles
# (`aspiics.banding.template_from_exposure_sets`; from the command line, ``aspiics
# banding-template``) averages the coronal leak out of the gain, and the template corrects any
# frame of the filter, also a single exposure. Three acquisitions here; six or more in practice.

results = []
for seed in (30, 31, 32):
    other = simulate_acquisition(
        "Wideband", (0.1, 1.0, 10.0), seed=seed, roll=(137 * seed) % 360, calibration=acquisition.calibration
    )
    msb = [
        ASPIICSMap(fr.data, fr.header).calibrate(
            calibration, steps=("bias", "nonlin", "variance", "dark", "flat", "msb")
        )
        for fr in other.frames
    ]
    results.append(correct_banding_exposures(msb, return_result=True)[1])
template = template_from_exposure_sets(results)
print(f"template of {template.filter} from {template.nframes} acquisitions")

long_frame = acquisition.frames[2]
with_template = l1_all[2].calibrate(calibration, banding=True, banding_options={"template": template})
tr = long_frame.truth
fig, ax = plt.subplots(figsize=(6, 4.5))
for label, m in (("frame alone", alone[2]), ("as a set", together[2]), ("with the template", with_template)):
    a = np.asarray(m.data, dtype=float)
    use = np.isfinite(a) & ~tr.hot & ~tr.unusual
    inj = column_medians(tr.banding_msb, use)
    res = column_medians(a - tr.l2, use)
    s = slope(res, inj)
    print(f"10 s frame, {label}: slope {s:.3f}")
    ax.plot(inj.ravel(), res.ravel(), ",", alpha=0.5, label=f"{label}: slope {s:.2f}")
ax.set_title("10 s exposure")
ax.set_xlabel("injected (MSB)")
ax.set_ylabel("left in the L2 (MSB)")
ax.legend(markerscale=20, fontsize=8)
fig.tight_layout()
plt.show()
