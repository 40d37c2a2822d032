"""
Benchmark: one 2048² frame through `aspiics.calibrate.calibrate_map` (no banding).

Targets (issue 3): ≤ 0.6 s wall with the calibration cached, ≤ 400 MB peak RSS. The reference
processor takes 8.4 s and 690 MB for the same work. A naive baseline in the same run (float64,
calibration files re-read for every frame, full-image scipy median filters and spline) gives the
speed-up ratio.

Usage::

    python benchmarks/bench_calibrate.py [--repeat N] [--shape 2048]

Inputs are made and each measurement runs in a fresh subprocess, so the peak RSS
(``resource.getrusage``) is that of one process that imports aspiics, loads the calibration and
calibrates the frame.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _make_inputs(workdir, n):
    """Write a synthetic release; return (release path, L1 data, header)."""
    import numpy as np

    from aspiics.simulate.calibration import make_calibration_set
    from tests.helpers import l1_header

    sim = make_calibration_set(workdir, shape=(n, n), seed=1)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:n, 0:n]
    r = np.hypot(xx - n / 2, yy - n / 2) / (n / 2)
    signal = 3000.0 / np.maximum(r, 0.25) ** 3  # DN above bias, coronal fall-off
    dn = 200 + rng.poisson(np.minimum(signal, 20000)).astype(np.float64)
    dn = np.clip(np.round(dn), 0, 16383).astype(np.int16)
    dn[:64, :64] = -32768  # one missing tile
    header = l1_header(CRPIX1=(n + 1) / 2, CRPIX2=(n + 1) / 2, EXPTIME=1.000113)
    return sim.path, dn, header


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(mode, workdir, n, repeat):
    import numpy as np

    from aspiics.calibrate import calibrate_map
    from aspiics.calibration import CalibrationSet
    from aspiics.map import ASPIICSMap

    release = Path(workdir) / "release.txt"
    rel = Path(release.read_text())
    dn = np.load(Path(workdir) / "dn.npy")
    header = json.loads((Path(workdir) / "header.json").read_text())
    m = ASPIICSMap(dn, header)
    rss_inputs = _rss_mb()  # interpreter, imports (sunpy.map alone is ~245 MB) and the L1 map
    rss_calibration = rss_inputs
    times = []
    if mode == "aspiics":
        cal = CalibrationSet(rel)
        cal.preload(["Wideband"])
        rss_calibration = _rss_mb()
        calibrate_map(m, cal)  # warm-up: fills the cache (non-linearity table, hot pixels)
        for _ in range(repeat):
            t0 = time.perf_counter()
            calibrate_map(m, cal)
            times.append(time.perf_counter() - t0)
    else:
        for _ in range(repeat):
            t0 = time.perf_counter()
            _naive(m, rel)
            times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result = {"best": min(times), "median": float(np.median(times)), "peak_mb": peak_mb}
    result.update(rss_inputs=rss_inputs, rss_calibration=rss_calibration)
    print(json.dumps(result))


def _naive(m, rel):
    """The reference approach: float64, files read per frame, full-image filters."""
    import numpy as np
    from astropy.io import fits
    from scipy.interpolate import PchipInterpolator
    from scipy.ndimage import median_filter

    from aspiics.constants import default_config

    def read(name):
        with fits.open(rel / name) as hdul:
            return hdul[0].data.astype(np.float64), hdul[0].header

    cfg = default_config()["calib_data"]
    gain, rn = cfg["gain"], cfg["readout_noise"]
    aphot = cfg["Wideband"]["Aphot"]
    t = float(m.meta["exptime"])
    temp = float(m.meta["aps_temp"])
    raw = np.asarray(m.data).astype(np.float64)
    blank = raw == -32768
    bias = read("bias_A.fits")[0] + read("bias_B.fits")[0] * temp
    dark = read("dark_A2.fits")[0] + read("dark_B2.fits")[0] * temp + read("dark_C2.fits")[0] * temp**2
    flat = read("flatfield_WB.fits")[0]
    table, _ = read("detector_nonlin.fits")
    hot = read("hotpixels_list.fits")[0]
    im = (raw - bias) / gain
    im[blank] = np.nan
    spline = PchipInterpolator(table[1] / gain, table[0] / gain)
    sat = (im > table[1].max() / gain) | (raw == 16383)
    im = spline(im)
    var = (rn / gain) ** 2 + dark * t / gain + np.maximum(im, 0)
    im = im - dark * t / gain
    im = im / (flat * aphot / gain * t)
    var = var / (flat * aphot / gain * t) ** 2
    for k in (15.0, 20.0):
        med = median_filter(im, size=3)
        bad = np.abs(im - med) > k * np.sqrt(var)
        im[bad] = med[bad]
    im[hot[1].astype(int), hot[0].astype(int)] = med[hot[1].astype(int), hot[0].astype(int)]
    im[sat] = np.inf
    im[blank] = np.nan
    return im.astype(np.float32)


def _run_child(mode, workdir, n, repeat):
    cmd = [sys.executable, __file__, "--child", mode, "--workdir", str(workdir), "--shape", str(n)]
    cmd += ["--repeat", str(repeat)]
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--child", choices=("prepare", "aspiics", "naive"))
    parser.add_argument("--workdir")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.child == "prepare":
        import numpy as np

        release, dn, header = _make_inputs(args.workdir, args.shape)
        np.save(Path(args.workdir) / "dn.npy", dn)
        (Path(args.workdir) / "release.txt").write_text(str(release))
        (Path(args.workdir) / "header.json").write_text(json.dumps(dict(header)))
        print("{}")
        return
    if args.child:
        _child(args.child, args.workdir, args.shape, args.repeat)
        return
    # The parent stays lean (Linux children inherit the parent's RSS high-water mark at fork).
    with tempfile.TemporaryDirectory() as tmp:
        _run_child("prepare", tmp, args.shape, 1)
        ours = _run_child("aspiics", tmp, args.shape, args.repeat)
        naive = _run_child("naive", tmp, args.shape, max(1, args.repeat // 2))
    n = args.shape
    print(f"calibrate_map, {n}x{n}, calibration cached, no banding:")
    print(
        f"  wall time best of {args.repeat}: {ours['best']:.3f} s "
        f"(median {ours['median']:.3f} s; target <= 0.6 s)"
    )
    print(f"  peak RSS of the process: {ours['peak_mb']:.0f} MB (target <= 400 MB)")
    print(
        f"    of which imports + L1 map {ours['rss_inputs']:.0f} MB, cached calibration arrays "
        f"{ours['rss_calibration'] - ours['rss_inputs']:.0f} MB, processing and the L2 map "
        f"{ours['peak_mb'] - ours['rss_calibration']:.0f} MB"
    )
    print("naive baseline (float64, calibration re-read per frame, full-image median filters):")
    print(f"  wall time best: {naive['best']:.3f} s, peak RSS {naive['peak_mb']:.0f} MB")
    print(f"speed-up: {naive['best'] / ours['best']:.1f}x")


if __name__ == "__main__":
    main()
