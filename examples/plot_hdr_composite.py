"""
=====================================================
Merge the exposures of an acquisition (level 3, HDR)
=====================================================

An ASPIICS acquisition takes up to three exposures of one filter: the longest saturates near the
occulter, the shortest is noisy far out. `aspiics.composite.merge_exposures` aligns them on the
official level-3 grid (Sun centre at the image centre, solar north up) and merges them into one
high-dynamic-range map with an uncertainty and a mask. The result is an ordinary sunpy map, so
it combines with other solar data: here it is reprojected onto a wider synthetic field of view
made with `sunpy.map.make_fitswcs_header`.
"""

import tempfile

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np
import sunpy.map
from astropy.coordinates import SkyCoord

from aspiics import ASPIICSMap
from aspiics.calibration import CalibrationSet
from aspiics.composite import composite, reproject_map
from aspiics.simulate import simulate_acquisition

###############################################################################
# Simulate a Wideband acquisition of 0.1, 1 and 10 s (1024 × 1024 pixels to keep this example
# fast; real frames are 2048 × 2048) and calibrate the three frames to level 2.

N = 1024
outdir = tempfile.mkdtemp()
acquisition = simulate_acquisition(
    "Wideband", exposures=(0.1, 1.0, 10.0), shape=(N, N), seed=3, outdir=outdir
)
calibration = CalibrationSet(acquisition.calibration.path)
level2 = [ASPIICSMap(f.data, f.header).calibrate(calibration) for f in acquisition.frames]

###############################################################################
# Merge them. `composite` returns the level-3 map together with the merge weights and the
# aligned `~aspiics.composite.ExposureStack` (an `ndcube.NDCube`). The blend width and island
# size of the reference processor are pixels of the 2048² detector: scale them to the frame.

scale = N / 2048
result = composite(level2, blend=30 * scale, island_size=int(350 * scale**2))
l3 = result.map
print(l3.meta["filename"], "from", l3.meta["parent"])

###############################################################################
# The three aligned exposures: white is saturated (+Inf), missing tiles and the occulter are NaN.

fig, axes = plt.subplots(1, 3, figsize=(12, 4), subplot_kw={"projection": l3})
for ax, exposure in zip(axes, result.stack.maps, strict=True):
    exposure.plot(axes=ax, norm=l3.plot_settings["norm"], title=f"{exposure.exposure_time:.3g}")
    ax.set_facecolor("0.5")
plt.show()

###############################################################################
# The weight of each exposure in the composite (they sum to 1): the long exposure everywhere it is
# valid, the shorter ones where it saturates, with a soft linear blend at the seams.

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, weight, t in zip(axes, result.weights, result.stack.exposure_times, strict=True):
    im = ax.imshow(weight, origin="lower", vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"weight of the {t:.3g} exposure")
    ax.set_axis_off()
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

###############################################################################
# The level-3 map, Sun-centred and solar north up, with its relative uncertainty.

fig = plt.figure(figsize=(11, 5))
ax = fig.add_subplot(1, 2, 1, projection=l3)
l3.plot(axes=ax, title="L3 total brightness")
l3.draw_limb(axes=ax, color="w")
ax = fig.add_subplot(1, 2, 2, projection=l3)
relative = ASPIICSMap(l3.sigma / l3.data, l3.meta)
relative.plot(axes=ax, cmap="magma", norm=None, vmin=0, vmax=0.05, title="σ / B")
plt.colorbar(ax.images[0], ax=ax, shrink=0.8)
plt.show()

###############################################################################
# Combine with another map: a synthetic wide-field coronagraph grid of 6 R☉ at 20″ per pixel,
# built with `sunpy.map.make_fitswcs_header` for the same observer. `reproject_map` puts the
# composite on it, keeping its mask and uncertainty; sunpy's own plotting then overlays the
# ASPIICS field on a model of the outer corona.

observer_frame = l3.coordinate_frame
header = sunpy.map.make_fitswcs_header(
    (360, 360),
    SkyCoord(0 * u.arcsec, 0 * u.arcsec, frame=observer_frame),
    scale=[20, 20] * u.arcsec / u.pix,
    instrument="synthetic",
)
wide = sunpy.map.Map(np.zeros((360, 360), dtype=np.float32), header)
corona = acquisition.corona.render(wide.wcs, wide.data.shape, rsun_arcsec=l3.rsun_obs).B
wide = sunpy.map.Map(np.where(corona > 0, corona, np.nan).astype(np.float32), header)
on_wide = reproject_map(l3, wide)

fig = plt.figure(figsize=(6, 6))
ax = fig.add_subplot(projection=wide)
wide.plot(axes=ax, cmap="gray", norm=l3.plot_settings["norm"], title="ASPIICS L3 inside a wider field")
# same pixel grid as ``wide``: draw the array directly
ax.imshow(on_wide.data, origin="lower", cmap=l3.plot_settings["cmap"], norm=l3.plot_settings["norm"])
ax.contour(np.isfinite(on_wide.data), levels=[0.5], colors="c", linewidths=0.8)
plt.show()
