"""
Benchmark of aspiics.banding.correct_banding on a synthetic 2048x2048 frame.

Prints the run time and the peak extra memory of `correct_banding`, and the same for a baseline in
the style of the reference processor (scipy median_filter of size 31 high-pass + per-column median
for even and odd rows). Run: ``python benchmarks/bench_banding.py``.
"""

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_banding import make_frame

from aspiics.banding import correct_banding


def baseline(img):
    """Reference-style correction: size-31 median high-pass, per-column median per row parity."""
    f = np.where(np.isfinite(img), img, np.nan).astype(np.float32)
    filled = np.where(np.isfinite(f), f, np.nanmedian(f))
    hp = f - ndimage.median_filter(filled, size=31)
    pattern = np.zeros_like(f)
    for p in (0, 1):
        pattern[p::2] = np.nanmedian(hp[p::2], axis=0)[None]
    return img - pattern


def measure(fn, *args, **kw):
    tracemalloc.start()
    t = time.perf_counter()
    fn(*args, **kw)
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak / 2**20


def main():
    frame = make_frame(2048, seed=1)
    correct_banding(frame.data)  # warm-up
    times = [measure(correct_banding, frame.data) for _ in range(3)]
    dt = min(t for t, _ in times)
    mem = max(m for _, m in times)
    dtv, memv = measure(correct_banding, frame.data, variance=np.ones_like(frame.data))
    dtb, memb = measure(baseline, frame.data)
    print(f"correct_banding 2048x2048 (variance estimated): {dt:.3f} s, peak extra memory {mem:.0f} MB")
    print(f"correct_banding 2048x2048 (variance given):     {dtv:.3f} s, peak extra memory {memv:.0f} MB")
    print(f"baseline median_filter(31) + column median:     {dtb:.3f} s, peak extra memory {memb:.0f} MB")
    print(f"speed-up vs baseline: {dtb / dt:.1f}x")


if __name__ == "__main__":
    main()
