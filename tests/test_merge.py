import numpy as np
import pytest
from scipy import ndimage

from aspiics.exceptions import ProcessingError
from aspiics.merge import bounded_distance, merge_arrays


def test_fill_picks_longest_valid_exposure():
    n = 128
    short, mid, long_ = (np.full((n, n), v, dtype=np.float32) for v in (1.0, 2.0, 3.0))
    yy, xx = np.indices((n, n))
    r = np.hypot(yy - 64, xx - 64)
    for f in (short, mid, long_):
        f[r < 10] = np.nan  # occulter in all
    long_[(r >= 10) & (r < 30)] = np.inf  # long saturated out to 30 px
    mid[(r >= 10) & (r < 18)] = np.inf  # mid saturated out to 18 px
    # given in arbitrary order, with exposure times
    res = merge_arrays(np.stack([long_, short, mid]), exptime=[10.0, 0.1, 1.0], blend=0)
    assert np.all(np.isnan(res.data[r < 10]))
    assert np.all(res.data[(r >= 10) & (r < 18)] == 1.0)
    assert np.all(res.data[(r >= 18) & (r < 30)] == 2.0)
    assert np.all(res.data[r >= 30] == 3.0)
    assert res.data.dtype == np.float32
    assert res.weights.shape == (3, n, n)
    np.testing.assert_array_equal(res.weights[0][r >= 30], 1)  # input order kept
    np.testing.assert_allclose(res.weights.sum(axis=0)[np.isfinite(res.data)], 1)
    np.testing.assert_array_equal(res.mask, ~np.isfinite(res.data))


def test_all_saturated_stays_inf_and_default_order():
    a = np.array([[np.inf, 1.0]], dtype=np.float32)
    b = np.array([[np.inf, np.inf]], dtype=np.float32)
    res = merge_arrays(np.stack([a, b]))  # no exptime: shortest first
    assert np.isposinf(res.data[0, 0])
    assert res.data[0, 1] == 1.0
    assert res.mask[0, 0]


def test_small_islands_dropped_only_where_longer_is_nan():
    n = 100
    short = np.ones((n, n), np.float32)
    long_ = np.full((n, n), 5.0, np.float32)
    long_[10:20, 10:20] = np.nan  # 100 px hole: island, dropped
    long_[40:80, 40:80] = np.nan  # 1600 px hole: filled
    long_[5:8, 60:63] = np.inf  # 9 px saturated: always filled
    res = merge_arrays(np.stack([short, long_]), exptime=[1, 10], blend=0, island_size=350)
    assert np.all(np.isnan(res.data[10:20, 10:20]))
    assert np.all(res.data[40:80, 40:80] == 1.0)
    assert np.all(res.data[5:8, 60:63] == 1.0)
    keep = merge_arrays(np.stack([short, long_]), exptime=[1, 10], blend=0, island_size=0)
    assert np.all(keep.data[10:20, 10:20] == 1.0)


def test_blend_weights_linear_over_blend_pixels():
    ny, nx, blend = 8, 120, 30
    short = np.full((ny, nx), 1.0, np.float32)
    long_ = np.full((ny, nx), 2.0, np.float32)
    long_[:, :40] = np.inf
    res = merge_arrays(np.stack([short, long_]), exptime=[1, 10], blend=blend)
    w_short = res.weights[0, 4]
    j = np.arange(nx - 40)
    expected = np.clip(1 - (j + 1) / blend, 0, 1)  # column 40 + j is j + 1 px from the fill region
    np.testing.assert_allclose(w_short[40:], expected, atol=1e-6)
    np.testing.assert_allclose(w_short[:40], 1)
    np.testing.assert_allclose(res.data[4, 40:], expected * 1 + (1 - expected) * 2, rtol=1e-6)


def test_inverse_variance_beats_best_single_exposure():
    rng = np.random.default_rng(42)
    n = 256
    truth = np.linspace(10, 100, n * n, dtype=np.float32).reshape(n, n)
    exptime = np.array([0.5, 2.0, 8.0])
    read = 7.0
    frames, sigmas = [], []
    for t in exptime:
        sig = np.sqrt(read**2 + truth * t) / t  # model sigma in brightness units
        frames.append(truth + rng.standard_normal((n, n)).astype(np.float32) * sig)
        sigmas.append(sig)
    frames, sigmas = np.stack(frames), np.stack(sigmas)
    frames[2][:, : n // 4] = np.inf  # the longest saturates in a quarter of the field
    res = merge_arrays(frames, sigmas, exptime, weighting="inverse-variance")
    err = res.data - truth
    region = np.s_[:, n // 4 :]
    best_single = np.std((frames[2] - truth)[region])
    assert np.std(err[region]) < 0.95 * best_single
    # the propagated sigma matches the scatter
    np.testing.assert_allclose(np.std(err[region] / res.sigma[region]), 1.0, atol=0.03)
    # in the saturated quarter the two shorter ones are combined
    sat = np.s_[:, : n // 4]
    assert np.all(np.isfinite(res.data[sat]))
    assert np.std(err[sat]) < 0.95 * np.std((frames[1] - truth)[sat])
    # fill (longest only, away from seams) is worse than inverse variance
    fill = merge_arrays(frames, sigmas, exptime, weighting="fill")
    assert np.std(err[:, n // 2 :]) < np.std((fill.data - truth)[:, n // 2 :])


def test_inverse_variance_without_sigma_uses_exposure_time():
    a = np.full((4, 4), 1.0, np.float32)
    b = np.full((4, 4), 4.0, np.float32)
    res = merge_arrays(np.stack([a, b]), exptime=[1.0, 3.0], weighting="inverse-variance")
    np.testing.assert_allclose(res.data, 0.25 * 1 + 0.75 * 4)
    assert res.sigma is None


def test_negative_values_kept_and_sigma_propagated():
    a = np.full((4, 4), -0.5, np.float32)
    s = np.full((4, 4), 0.2, np.float32)
    res = merge_arrays(a[None], s[None], exptime=[1.0])
    assert np.all(res.data == -0.5)
    np.testing.assert_allclose(res.sigma, 0.2)


def test_bad_input():
    with pytest.raises(ProcessingError, match="weighting"):
        merge_arrays(np.ones((2, 4, 4)), weighting="max")
    with pytest.raises(ProcessingError, match="sigma shape"):
        merge_arrays(np.ones((2, 4, 4)), np.ones((3, 4, 4)))
    with pytest.raises(ProcessingError, match="exposure times"):
        merge_arrays(np.ones((2, 4, 4)), exptime=[1.0])


def test_mask_argument_marks_missing():
    a = np.ones((2, 6, 6), np.float32)
    a[1] *= 2
    m = np.zeros((2, 6, 6), bool)
    m[1, 2, 2] = True
    res = merge_arrays(a, exptime=[1, 2], blend=0, island_size=0, mask=m)
    assert res.data[2, 2] == 1.0
    assert res.data[0, 0] == 2.0


@pytest.mark.parametrize("seed", [0, 1])
def test_bounded_distance_matches_edt(seed):
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_dilation(rng.random((300, 333)) > 0.9995, iterations=3)
    d = bounded_distance(mask, 30, tile=64)
    np.testing.assert_allclose(d, np.minimum(ndimage.distance_transform_edt(~mask), 30), atol=1e-5)
    assert np.all(bounded_distance(np.zeros((5, 5), bool), 3) == 3)
