"""
Benchmark the L3 exposure composite numerics: align 3 exposures of 2048x2048 onto a Sun-centred,
solar-north-up grid with `aspiics.resample.reproject_affine` (data and sigma), then merge them
with `aspiics.merge.merge_arrays`. Targets: <= 1.5 s and <= 1 GB peak memory.

Run: ``python benchmarks/bench_merge.py [--size 2048] [--weighting fill]``
"""

import argparse
import resource
import time
import tracemalloc

import numpy as np
from astropy.wcs import WCS

from aspiics.merge import merge_arrays
from aspiics.resample import reproject_affine

PLATE = 2.8172


def header(n, crval, rot_deg, shift):
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    return {
        "NAXIS": 2,
        "NAXIS1": n,
        "NAXIS2": n,
        "CTYPE1": "HPLN-TAN",
        "CTYPE2": "HPLT-TAN",
        "CUNIT1": "arcsec",
        "CUNIT2": "arcsec",
        "CDELT1": PLATE,
        "CDELT2": PLATE,
        "CRPIX1": (n + 1) / 2 + shift[0],
        "CRPIX2": (n + 1) / 2 + shift[1],
        "CRVAL1": crval[0],
        "CRVAL2": crval[1],
        "PC1_1": c,
        "PC1_2": -s,
        "PC2_1": s,
        "PC2_2": c,
    }


def simulate(n, rng):
    """Three exposures (0.1, 1, 10 s) of a smooth corona with occulter, saturation and noise."""
    frames, sigmas, wcss = [], [], []
    for t, jit in zip(
        (0.1, 1.0, 10.0), ((0.3, -0.2, 0.05), (-0.4, 0.1, -0.03), (0.0, 0.0, 0.0)), strict=True
    ):
        w = WCS(header(n, (30.0 + jit[0] * PLATE, -20.0 + jit[1] * PLATE), 10.0 + jit[2], (0, 0)))
        yy, xx = np.indices((n, n), dtype=np.float32)
        lon, lat = w.pixel_to_world_values(xx, yy)
        lon = ((lon + 180) % 360 - 180) * 3600
        lat = lat * 3600
        r = np.hypot(lon, lat) / 960.0
        sig = 1e3 * (r + 0.1) ** -4  # brightness per second
        counts = sig * t
        sat = counts > 4e3
        noise_sigma = np.sqrt(counts + 49.0) / t
        img = (sig + rng.standard_normal((n, n)).astype(np.float32) * noise_sigma).astype(np.float32)
        img[r < 1.15] = np.nan
        img[sat] = np.inf
        frames.append(img)
        sigmas.append(noise_sigma.astype(np.float32))
        wcss.append(w)
    return frames, sigmas, wcss


def main(n=2048, weighting="fill"):
    rng = np.random.default_rng(1)
    frames, sigmas, wcss = simulate(n, rng)
    target = WCS(header(n, (0.0, 0.0), 0.0, (0, 0)))
    tracemalloc.start()
    t0 = time.perf_counter()
    aligned, asig = [], []
    for img, sig, w in zip(frames, sigmas, wcss, strict=True):
        out, _, s = reproject_affine((img, w), target, shape_out=(n, n), uncertainty=sig)
        aligned.append(out)
        asig.append(s)
    t_align = time.perf_counter() - t0
    res = merge_arrays(np.stack(aligned), np.stack(asig), exptime=[0.1, 1.0, 10.0], weighting=weighting)
    t_total = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"3 exposures of {n}x{n}, weighting={weighting!r}")
    print(
        f"  alignment (data + sigma) {t_align:.3f} s, merge {t_total - t_align:.3f} s, total {t_total:.3f} s"
    )
    print(f"  peak traced memory during align+merge {peak / 2**20:.0f} MiB; process max RSS {rss:.0f} MiB")
    print(f"  merged valid fraction {np.isfinite(res.data).mean():.3f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--weighting", default="fill")
    a = p.parse_args()
    main(a.size, a.weighting)
