"""The 2D IFS renderer: chaos game, rasteriser, weight tables, samplers, category search."""
import numpy as np
import pytest

from fdsl.render import ifs2d


def test_weight_tables_match_the_published_layout():
    table = ifs2d.weight_table(0.1)
    assert table.shape == (25, 6)
    assert table[:5, 0].tolist() == [0.8, 0.9, 1.0, 1.1, 1.2]
    assert np.all(table[2] == 1.0) and np.sum(np.all(table == 1.0, axis=1)) == 1
    assert table[5:9, 1].tolist() == [0.8, 0.9, 1.1, 1.2]
    assert table[-1].tolist() == [1, 1, 1, 1, 1, 1.2]
    assert ifs2d.weight_table(0.4)[:5, 0].tolist() == [0.2, 0.6, 1.0, 1.4, 1.8]
    assert ifs2d.weight_table(0.5)[0, 0] == 0.01  # factor 0 is clamped, as in weights_0.5.csv


def test_chaos_game_matches_a_plain_python_reference():
    maps = ifs2d.with_det_probabilities(np.array([[0.5, 0, 0, 0.5, 0, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0, 0],
                                                  [0.5, 0, 0, 0.5, 0.25, 0.5, 0]]))
    points = ifs2d.chaos_game(maps, 500)
    u = np.random.RandomState(100).random_sample(500)
    cumulative = np.cumsum(maps[:, 6])
    x = y = 0.0
    expected = [(0.0, 0.0)]
    for i in range(499):
        j = int(np.argmax(u[i] <= cumulative))
        a, b, c, d, e, f, _ = maps[j]
        x, y = a * x + b * y + e, c * x + d * y + f
        expected.append((x, y))
    np.testing.assert_allclose(points, np.array(expected), rtol=0, atol=1e-12)


def test_to_pixels_rescales_into_the_padded_square_and_drops_non_finite_tail():
    points = np.column_stack([np.linspace(-3, 5, 1000), np.linspace(2, 4, 1000)])
    xs, ys = ifs2d.to_pixels(points, 64, pad=6)
    assert xs.min() == 6 and xs.max() == 64 - 6 and ys.min() == 6 and ys.max() == 64 - 6
    points[600] = np.inf
    xs, _ = ifs2d.to_pixels(points, 64, pad=6)
    assert len(xs) == 500  # the bad point and the 100 before it are dropped


def test_patch_replaces_the_3x3_block_and_point_draws_gray_127():
    xs, ys = np.array([10, 11]), np.array([10, 10])

    class Masks:  # first point all on, second point only its centre cell on
        def integers(self, *a, **k):
            return np.array([511, 0b000010000])

    image = ifs2d.draw(xs, ys, 32, "patch_gray", Masks())
    flipped = image[::-1]  # back to y-down rows: row = y + 1 + dr
    assert flipped[11:14, 11].tolist() == [127, 127, 127]  # column of the first patch not overlapped
    assert flipped[11:14, 12].tolist() == [0, 0, 0]  # the second patch's off cells erase the first's
    assert flipped[11:14, 13].tolist() == [0, 127, 0]  # its centre cell alone is on
    assert flipped[11:14, 14].tolist() == [0, 0, 0]
    point = ifs2d.draw(xs, ys, 32, "point_gray")
    assert set(np.unique(point)) == {0, 127} and np.count_nonzero(point) == 2
    color = ifs2d.draw(xs, ys, 32, "patch_color", np.random.default_rng(0))
    assert color.shape == (32, 32, 3) and color.max() == round(0.75 * 255)


def test_flips_are_the_four_published_ones():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(ifs2d.flip(image, 0), image)
    assert np.array_equal(ifs2d.flip(image, 1), image[::-1])
    assert np.array_equal(ifs2d.flip(image, 2), image[:, ::-1])
    assert np.array_equal(ifs2d.flip(image, 3), image[::-1, ::-1])


def test_accepted_categories_reach_the_filling_rate():
    for seed in range(4):
        maps = ifs2d.search_category(np.random.default_rng(seed), rate=0.2, points=50_000, size=256)
        assert 2 <= len(maps) <= 7 and np.isclose(maps[:, 6].sum(), 1.0)
        xs, ys = ifs2d.to_pixels(ifs2d.chaos_game(maps, 50_000), 256)
        filled = len(np.unique(ys * 256 + xs)) / 256**2
        assert filled >= 0.2
        assert ifs2d.filling_rate(ifs2d.draw(xs, ys, 256, "point_gray")) == pytest.approx(filled)


def test_sigma_factor_sampler_hits_the_band_with_valid_singular_values():
    for seed in range(20):
        maps = ifs2d.sigma_factor_system(np.random.default_rng(seed), n_maps=2, sigma=4.0, margin=0.1)
        singular = np.array([np.linalg.svd(m[:4].reshape(2, 2), compute_uv=False) for m in maps])
        assert np.all(singular <= 1 + 1e-9)
        alpha = np.sum(singular[:, 0] + 2 * singular[:, 1])
        assert 3.9 - 1e-9 <= alpha <= 4.1 + 1e-9
        assert np.all(np.abs(maps[:, 4:6]) <= 1)
    with pytest.raises(ValueError):
        ifs2d.sigma_factor_system(np.random.default_rng(0), n_maps=1, sigma=4.0)


def test_perturb_stays_within_delta():
    base = ifs2d.sigma_factor_system(np.random.default_rng(1), 2, 4.0)
    out = ifs2d.perturb(base, np.random.default_rng(2), 0.1)
    ratio = out[:, :6] / base[:, :6]
    assert np.all((ratio >= 0.9) & (ratio <= 1.1)) and not np.allclose(ratio, 1)
