"""
Benchmark `aspiics.polarization.demodulate`: three 2048² polarizer frames to B, pB and angle.

The frames are L2-like (float32 MSB, σ, NaN occulter, per-pixel angle maps) taken at a 10° roll
with the Sun off-centre, so the run includes the alignment onto the Sun-centred north-up grid
(data, σ and angle maps) and the closed-form solve. Prints wall time and peak traced memory
(tracemalloc, NumPy allocations) of

1. ``demodulate`` (closed form, target <= 2 s and <= 1.5 GB),
2. the solve alone: closed form versus ``method="linalg"`` (per-pixel ``numpy.linalg.solve``),
   measured in the same run.

Run: ``python benchmarks/bench_polarization.py [--size 2048] [--threads 2]``
"""

import argparse
import resource
import time
import tracemalloc

import numpy as np
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from aspiics.map import ASPIICSMap
from aspiics.polarization import demodulate, demodulate_arrays

NAMES = ("Polarizer 0", "Polarizer 60", "Polarizer 120")


def make_frames(n, roll=10.0):
    scale = 2.8172 * 2048 / n
    th = np.radians(roll)
    pc = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    sun = np.array([0.489 * n, 0.502 * n])
    crval = pc @ (np.array([(n - 1) / 2, (n - 1) / 2]) - sun) * scale
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = xx - sun[0], yy - sun[1]
    r = np.hypot(dx, dy) * scale / 948.2
    B = (1e-6 * r**-3).astype(np.float32)
    pB = 0.4 * B
    alpha = np.degrees(np.arctan2(dy, dx)) + 90
    psi = [5.26 + 0.5 * np.sin(xx / n * 3), 64.65 + 0.4 * np.cos(yy / n * 2), 124.8 + 0.3 * xx / n]
    maps = []
    for k, name in enumerate(NAMES):
        h = fits.Header()
        h.update(
            {
                "INSTRUME": "ASPIICS", "TELESCOP": "PROBA-3", "LEVEL": "L2", "BUNIT": "MSB", "FILTER": name,
                "DATE-OBS": "2025-08-12T18:14:24", "CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN",
                "CUNIT1": "arcsec", "CUNIT2": "arcsec", "CDELT1": scale, "CDELT2": scale,
                "CRPIX1": (n + 1) / 2, "CRPIX2": (n + 1) / 2, "CRVAL1": crval[0], "CRVAL2": crval[1],
                "PC1_1": pc[0, 0], "PC1_2": pc[0, 1], "PC2_1": pc[1, 0], "PC2_2": pc[1, 1],
                "HGLN_OBS": 0.0, "HGLT_OBS": 6.4, "DSUN_OBS": 1.5135e11, "RSUN_ARC": 948.2,
                "FILENAME": f"aspiics_p{k + 1}_l2_1320404D00021{k + 1}_20250812T181424.fits",
            }
        )  # fmt: skip
        data = (0.5 * (B + pB * np.cos(np.radians(2 * (psi[k] - alpha + roll))))).astype(np.float32)
        data[r < 1.1] = np.nan
        sigma = np.sqrt(np.abs(data) * 1e-9).astype(np.float32) + np.float32(1e-10)
        maps.append(ASPIICSMap(data, h, uncertainty=StdDevUncertainty(sigma)))
    return maps, [p.astype(np.float32) for p in psi]


def timed(func, *args, **kwargs):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, dt, peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.size
    maps, psi = make_frames(n)
    demodulate(maps, angle_maps=psi, threads=args.threads)  # warm-up (imports, FFTW-free but caches)
    best = None
    for _ in range(args.repeat):
        prods, dt, peak = timed(demodulate, maps, angle_maps=psi, threads=args.threads)
        best = (dt, peak) if best is None or dt < best[0] else best
    print(f"demodulate ({n}x{n}, 3 frames, alignment + closed form, {args.threads} threads): "
          f"{best[0]:.2f} s, peak traced memory {best[1]:.0f} MiB (target <= 2 s, <= 1536 MiB)")  # fmt: skip

    # the solve alone, on the aligned-size inputs, closed form vs numpy.linalg.solve per pixel
    inten = [np.nan_to_num(m.data, nan=1e-9) for m in maps]
    sig = [m.sigma for m in maps]
    _, t_cf, m_cf = timed(demodulate_arrays, inten, psi, sig, threads=args.threads)
    _, t_la, m_la = timed(demodulate_arrays, inten, psi, sig, method="linalg", threads=args.threads)
    print(f"solve only: closed form {t_cf:.2f} s ({m_cf:.0f} MiB), numpy.linalg.solve per pixel "
          f"{t_la:.2f} s ({m_la:.0f} MiB): {t_la / t_cf:.1f}x")  # fmt: skip
    _, t_full_la, m_full_la = timed(demodulate, maps, angle_maps=psi, method="linalg", threads=args.threads)
    print(f"demodulate with method='linalg' (baseline): {t_full_la:.2f} s, {m_full_la:.0f} MiB")
    valid = np.isfinite(prods.B.data)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"products: {valid.mean() * 100:.1f} % valid pixels; max RSS of the process {rss:.0f} MiB "
          "(includes making the inputs)")  # fmt: skip


if __name__ == "__main__":
    main()
