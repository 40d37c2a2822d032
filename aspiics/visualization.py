"""
Colormaps and display normalisation for ASPIICS images.

Importing ``aspiics`` registers one colormap per filter with matplotlib, named
``aspiics_wb``, ``aspiics_fe``, ``aspiics_he``, ``aspiics_p1``, ``aspiics_p2``, ``aspiics_p3``
(the three polarizers share one palette) and ``aspiics_pa`` for polarization angles (cyclic).

The palettes are our own: each runs from black through a hue chosen for the passband to white,
with lightness rising monotonically so that brightness reads correctly in print and for
colour-blind readers.
"""

import matplotlib as mpl
import numpy as np
from astropy.visualization import AsinhStretch, ImageNormalize, LogStretch
from matplotlib.colors import LinearSegmentedColormap

__all__ = ["CMAP_NAMES", "coronal_norm", "get_cmap"]

# Control points (position, (r, g, b)) of each palette: black -> passband hue -> white.
_PALETTES = {
    # Wideband (536-566 nm): warm white light, through amber and pale gold.
    "wb": [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.42, 0.16, 0.02)), (0.62, (0.86, 0.55, 0.16)),
           (0.85, (0.99, 0.86, 0.56)), (1.0, (1.0, 1.0, 1.0))],
    # Fe XIV 530.4 nm: the green line.
    "fe": [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.0, 0.22, 0.10)), (0.62, (0.18, 0.62, 0.30)),
           (0.85, (0.70, 0.93, 0.62)), (1.0, (1.0, 1.0, 1.0))],
    # He I D3 587.7 nm: yellow-orange.
    "he": [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.36, 0.18, 0.0)), (0.62, (0.88, 0.62, 0.05)),
           (0.85, (1.0, 0.90, 0.45)), (1.0, (1.0, 1.0, 1.0))],
    # Polarizers: cool violet-blue, so polarized frames are never mistaken for total brightness.
    "pol": [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.16, 0.08, 0.36)), (0.62, (0.36, 0.42, 0.82)),
            (0.85, (0.72, 0.84, 0.98)), (1.0, (1.0, 1.0, 1.0))],
}  # fmt: skip

#: Names of the registered colormaps, keyed by file-name code.
CMAP_NAMES = {
    "wb": "aspiics_wb",
    "fe": "aspiics_fe",
    "he": "aspiics_he",
    "p1": "aspiics_p1",
    "p2": "aspiics_p2",
    "p3": "aspiics_p3",
    "pb": "aspiics_pb",
    "pa": "aspiics_pa",
}


def _build_colormaps():
    cmaps = {}
    for code, name in CMAP_NAMES.items():
        if code == "pa":
            # Cyclic palette for angles (0 and 180 degrees are the same direction).
            base = mpl.colormaps["twilight"]
            cmap = LinearSegmentedColormap.from_list(name, base(np.linspace(0, 1, 256)))
        else:
            key = code if code in _PALETTES else "pol"
            cmap = LinearSegmentedColormap.from_list(name, _PALETTES[key], N=256)
        cmaps[name] = cmap.with_extremes(bad="black", over="white")
    return cmaps


def _register():
    for name, cmap in _build_colormaps().items():
        if name not in mpl.colormaps:
            mpl.colormaps.register(cmap, name=name)


_register()


def get_cmap(code):
    """
    Return the colormap of a filter or product.

    Parameters
    ----------
    code : str
        File-name code: ``wb``, ``fe``, ``he``, ``p1``, ``p2``, ``p3``, ``pb`` or ``pa``.

    Returns
    -------
    `matplotlib.colors.Colormap`
    """
    return mpl.colormaps[CMAP_NAMES[code]]


def coronal_norm(data, *, low=1.0, high=99.7, stretch="log", sample=8):
    """
    A display normalisation for coronal brightness.

    Coronal brightness falls by about three orders of magnitude across the ASPIICS field of view,
    so a logarithmic stretch between robust percentiles of the valid pixels shows the inner and
    the outer corona at once.

    Parameters
    ----------
    data : array-like
        The image; NaN, infinite and non-positive pixels are ignored for the limits.
    low, high : float, optional
        Percentiles of the valid pixels mapped to the ends of the colormap.
    stretch : {'log', 'asinh'}, optional
        The stretch.
    sample : int, optional
        Use every ``sample``-th pixel along each axis for the percentiles (speed).

    Returns
    -------
    `astropy.visualization.ImageNormalize`
    """
    values = np.asarray(data)[::sample, ::sample].astype(np.float32)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = np.percentile(values, [low, high])
        if not vmax > vmin:
            vmax = vmin + 1.0
    chosen = LogStretch(1000) if stretch == "log" else AsinhStretch(0.02)
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=chosen, clip=False)
