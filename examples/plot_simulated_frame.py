"""
===========================================
Simulate an ASPIICS frame and plot it
===========================================

This example simulates one Wideband acquisition with `aspiics.simulate`, opens the longest
exposure with `sunpy.map.Map` (which returns an `~aspiics.ASPIICSMap` once ``aspiics`` is
imported), and plots it with the ASPIICS colormap, the solar limb and a heliographic grid.
"""

import tempfile

import astropy.units as u
import matplotlib.pyplot as plt
import sunpy.map

import aspiics  # noqa: F401  (registers the ASPIICS map source)
from aspiics.simulate import simulate_acquisition

###############################################################################
# Simulate one Wideband acquisition of three exposures (0.1 s, 1 s and 10 s) and write it as
# level-1 FITS files. The simulator also writes the matching synthetic calibration set.

outdir = tempfile.mkdtemp()
acquisition = simulate_acquisition("Wideband", exposures=(0.1, 1.0, 10.0), seed=42, outdir=outdir)
for frame in acquisition.frames:
    print(frame.path.name, frame.header["EXPTIME"], "s")

###############################################################################
# Open the 1 s exposure. The map knows the instrument, the filter, the exposure and the observer
# (Proba-3 flies in a highly elliptical Earth orbit, and its position comes from the header).

m = sunpy.map.Map(acquisition.frames[1].path)
print(type(m).__name__, m.filter.name, m.exposure_time, m.processing_level)
print("observer:", m.observer_coordinate)
print("missing pixels (tiles not telemetered):", int(m.mask.sum()))

###############################################################################
# Plot the raw counts. The colormap (``aspiics_wb``) and the logarithmic norm are the defaults of
# the map. The dark disc is the shadow of the internal occulter; the square holes are tiles the
# on-board quality flag did not send (saturated near the occulter, under-exposed far out).

fig = plt.figure(figsize=(7, 6.5))
ax = fig.add_subplot(projection=m)
im = m.plot(axes=ax)
m.draw_limb(axes=ax, color="white", linewidth=1)
m.draw_grid(axes=ax, grid_spacing=15 * u.deg, color="white", alpha=0.4)
fig.colorbar(im, ax=ax, shrink=0.8, label="DN")
plt.show()

###############################################################################
# The ground truth is returned too: here the brightness the calibration should recover, in mean
# solar brightness (MSB), shown with the same colormap.

meta = m.meta.copy()
meta.update({"level": "L2", "bunit": "MSB"})
truth = sunpy.map.Map(acquisition.frames[1].truth.l2, meta)
fig = plt.figure(figsize=(7, 6.5))
ax = fig.add_subplot(projection=truth)
im = truth.plot(axes=ax, title="Simulated truth (MSB)")
truth.draw_limb(axes=ax, color="white", linewidth=1)
fig.colorbar(im, ax=ax, shrink=0.8, label="MSB")
plt.show()
