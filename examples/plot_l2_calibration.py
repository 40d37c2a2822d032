"""
==============================================
Calibrate a frame to level 2, step by step
==============================================

`aspiics.ASPIICSMap.calibrate` turns a level-1 frame (raw DN) into a level-2 frame in mean solar
brightness (MSB) with an uncertainty and a mask. Each correction is also a method of its own, so
the chain can be run one step at a time to see what each step does. This example uses a simulated
frame and its synthetic calibration set, and compares the result with the simulator's truth.
"""

import tempfile

import matplotlib.pyplot as plt
import numpy as np
import sunpy.map

from aspiics.calibration import CalibrationSet
from aspiics.simulate import simulate_acquisition

###############################################################################
# Simulate a 1 s Wideband exposure and its calibration set, and open both.

outdir = tempfile.mkdtemp()
acquisition = simulate_acquisition("Wideband", exposures=(1.0,), seed=7, outdir=outdir)
frame = acquisition.frames[0]
l1 = sunpy.map.Map(frame.path)
calibration = CalibrationSet(acquisition.calibration.path)

###############################################################################
# Run the steps one by one. Intermediate maps hold electrons (then MSB) with their variance as
# the uncertainty; each step is recorded in the header, and running one twice or out of order
# raises an error.

steps = {"L1 (DN)": l1}
m = l1.subtract_bias(calibration)
steps["bias subtracted (e⁻)"] = m
m = m.correct_nonlinearity(calibration)
m = m.estimate_variance(calibration)
m = m.subtract_dark(calibration)
steps["linearised, dark subtracted (e⁻)"] = m
m = m.flat_field(calibration)
m = m.to_msb(calibration)
steps["flat-fielded, in MSB"] = m
m = m.replace_bad_pixels(calibration)
l2 = m.finalize_l2(calibration)
steps["L2 (MSB)"] = l2
for line in str(l2.meta["history"]).splitlines():
    print(line)

###############################################################################
# The effect of each step on a crop of the frame, just outside the occulter shadow, where the
# brightness changes fastest.

crop = (slice(900, 1150), slice(1380, 1630))
fig, axes = plt.subplots(1, len(steps), figsize=(15, 3.6))
for ax, (label, step_map) in zip(axes, steps.items(), strict=True):
    data = np.asarray(step_map.data, dtype=float)[crop]
    finite = data[np.isfinite(data)]
    vmin, vmax = np.percentile(finite, [1, 99.5])
    ax.imshow(data, origin="lower", cmap="aspiics_wb", vmin=vmin, vmax=vmax)
    ax.set_title(label, fontsize=9)
    ax.set_axis_off()
fig.tight_layout()
plt.show()

###############################################################################
# The level-2 map carries a 1σ uncertainty from the noise model (read noise, dark-current shot
# noise and photon noise, propagated through every step), and a mask of the missing (NaN) and
# saturated (+Inf) pixels.

fig = plt.figure(figsize=(12, 5))
ax1 = fig.add_subplot(1, 2, 1, projection=l2)
l2.plot(axes=ax1, title="L2 brightness (MSB)")
ax2 = fig.add_subplot(1, 2, 2, projection=l2)
relative = l2.sigma / np.abs(l2.data)
im = ax2.imshow(np.log10(relative), origin="lower", cmap="viridis", vmin=-3, vmax=-0.5)
ax2.set_title("log10 relative uncertainty σ/B")
fig.colorbar(im, ax=ax2, shrink=0.8)
plt.show()

###############################################################################
# Against the truth: the normalised residual (L2 − truth)/σ should be a unit Gaussian over the
# valid pixels if the calibration and the noise model are right.

truth = frame.truth.l2
valid = l2.valid_mask & np.isfinite(truth) & (truth > 0)
z = ((l2.data - truth) / l2.sigma)[valid]
print(f"valid pixels: {valid.sum()}, saturated: {int(np.isposinf(l2.data).sum())}")
print(f"normalised residual: mean {z.mean():+.3f}, std {z.std():.3f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.hist(z, bins=np.linspace(-5, 5, 101), density=True, color="0.6", label="(L2 − truth)/σ")
x = np.linspace(-5, 5, 201)
ax.plot(x, np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi), "k", label="unit Gaussian")
ax.set_xlabel("normalised residual")
ax.legend()
plt.show()
