"""
=====================================================
The F-corona model and its removal
=====================================================

The F-corona (photospheric light scattered by interplanetary dust) is unpolarized and, beyond
~2–2.5 R☉, brighter than the K-corona (electron scattering). `aspiics.fcorona` provides the
Koutchmy (2000) equatorial/polar model and the Allen (1977) polar-symmetric model in mean solar
brightness (MSB). This example compares them, evaluates the model on a map's pixels whatever its
roll, and removes it from a simulated total-brightness image with
`aspiics.fcorona.subtract_f_corona`.
"""

import itertools
import tempfile

import astropy.units as u
import matplotlib.pyplot as plt
import numpy as np

import aspiics
from aspiics.fcorona import allen_f_corona, f_corona_model, koutchmy_f_corona, subtract_f_corona
from aspiics.simulate import make_calibration_set, simulate_acquisition

###############################################################################
# Radial profiles. The Koutchmy model differs between the solar equator (position angle 90°)
# and the poles (0°); in between it is mixed linearly in angle. The Allen model is the same at
# every position angle. For comparison, the background K-corona of the simulator's scene.

r = np.linspace(1.1, 4.0, 200)
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.semilogy(r, koutchmy_f_corona(r, 90 * u.deg), label="Koutchmy (2000), equator")
ax.semilogy(r, koutchmy_f_corona(r, 45 * u.deg), label="Koutchmy (2000), PA 45°", linestyle=":")
ax.semilogy(r, koutchmy_f_corona(r, 0 * u.deg), label="Koutchmy (2000), pole")
ax.semilogy(r, allen_f_corona(r), label="Allen (1977)", linestyle="--")
ax.semilogy(r, aspiics.simulate.CoronaModel.k_radial(r), label="K-corona (simulator background)", color="k")
ax.set_xlabel("r (R☉)")
ax.set_ylabel("brightness (MSB)")
ax.legend()
plt.show()

###############################################################################
# Simulate a Wideband acquisition (one 2 s exposure at a 1024² detector for speed) and
# calibrate it to level 2: its brightness is K + F.

shape = (1024, 1024)
workdir = tempfile.mkdtemp()
synthetic = make_calibration_set(f"{workdir}/calibration", shape=shape, seed=3)
acquisition = simulate_acquisition(
    "Wideband", (2.0,), seed=3, shape=shape, calibration=synthetic, banding=False
)
frame = acquisition.frames[0]
wideband = aspiics.ASPIICSMap(frame.data, frame.header).calibrate(aspiics.CalibrationSet(synthetic.path))
print(
    wideband.filter.name,
    wideband.processing_level,
    wideband.meta["bunit"],
    f"CROTA {wideband.meta['crota']:.2f}",
)

###############################################################################
# The model evaluated on the frame's own pixels. The distance and position angle come from the
# helioprojective coordinates of each pixel, so the equatorial bulge follows solar north even
# though the detector is rolled by ~10°.

model = f_corona_model(wideband, "koutchmy")
fig = plt.figure(figsize=(7, 6))
ax = fig.add_subplot(projection=model)
im = model.plot(axes=ax, title="Koutchmy F-corona model (MSB)")
model.draw_limb(axes=ax, color="white")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

###############################################################################
# Remove it. The result is a level-3 'Total brightness' product (K-corona only) with
# ``FCOR_MOD`` and a HISTORY line; saturated (+Inf) and missing (NaN) pixels stay so.

k_corona = subtract_f_corona(wideband, model="koutchmy")
print(k_corona.meta["prod_id"], k_corona.meta["fcor_mod"])
print(k_corona.meta["history"].splitlines()[-1])

fig = plt.figure(figsize=(12, 5.5))
for i, (m, title) in enumerate(((wideband, "Wideband L2: K + F"), (k_corona, "F-corona removed: K"))):
    ax = fig.add_subplot(1, 2, i + 1, projection=m)
    m.plot(axes=ax, title=title, norm=wideband.plot_settings["norm"])
    ax.coords[0].set_axislabel(" ")
    ax.coords[1].set_axislabel(" ")
plt.show()

###############################################################################
# Against the truth of the simulation: median profiles of an equatorial and a polar sector. The
# simulator's F-corona is the Koutchmy model, so what is left is the K-corona, up to noise.
# (Pixels saturated or not sent, near the occulter, are left out of every profile.)

scene = acquisition.corona.render(wideband.wcs, shape, rsun_arcsec=wideband.rsun_obs)
pa = scene.position_angle % 180  # folded: the model is symmetric about the equator
edges = np.linspace(1.3, 3.0, 18)
centres = 0.5 * (edges[1:] + edges[:-1])
fig, ax = plt.subplots(figsize=(7, 4.5))
for label, sector, colour in (
    ("equator", np.abs(pa - 90) < 15, "C0"),
    ("pole", (pa < 15) | (pa > 165), "C1"),
):
    for data, style, what in (
        (wideband.data, ":", "K + F"),
        (k_corona.data, "-", "F removed"),
        (scene.B_K, "o", "true K"),
    ):
        data = np.where(np.isfinite(k_corona.data), data, np.nan)  # same pixels for all three
        prof = [
            np.nanmedian(data[sector & (scene.r >= a) & (scene.r < b)]) for a, b in itertools.pairwise(edges)
        ]
        ax.semilogy(centres, prof, style, color=colour, label=f"{label}: {what}")
ax.set_xlabel("r (R☉)")
ax.set_ylabel("median brightness (MSB)")
ax.legend(fontsize="small")
plt.show()

ok = np.isfinite(k_corona.data) & (scene.r > 1.5) & (scene.r < 3.0)
error = np.median(np.abs(k_corona.data[ok] / scene.B_K[ok] - 1))
print(f"median |K recovered / K true - 1| over 1.5-3 R☉: {error:.2%}")
