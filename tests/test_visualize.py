"""The CAM galleries read on their own: column titles, and each row's label and prediction."""

import numpy as np

from megl.visualize import LINE, overlay_grid


def dark(region: np.ndarray) -> bool:
    return bool((region.min(axis=-1) < 100).any())


def test_gallery_has_titles_and_row_labels():
    rng = np.random.default_rng(0)
    images = np.full((2, 16, 16, 3), 255, np.uint8)
    grid = overlay_grid(images, rng.random((2, 4, 4)), rng.random((2, 16, 16)), np.array([True, False]),
                        ["red circle", "blue square"], ["red circle", "red circle"], scale=4)
    side = 64
    left = grid.shape[1] - 3 * side
    assert grid.shape[0] == LINE + 2 * side and left > 40  # a title band on top, a label strip on the left
    for col in range(3):  # every column has a title
        assert dark(grid[:LINE, left + col * side : left + (col + 1) * side])
    for row in range(2):  # every row has its label and prediction
        assert dark(grid[LINE + row * side : LINE + (row + 1) * side, :left])
    # a wrong prediction is written in red
    strip = grid[LINE + side : LINE + 2 * side, :left].reshape(-1, 3).astype(int)
    assert ((strip[:, 0] > 150) & (strip[:, 1] < 80)).any()
    again = overlay_grid(images, rng.random((2, 4, 4)) * 0, np.zeros((2, 16, 16)), np.array([True, False]),
                         ["red circle", "blue square"], ["red circle", "red circle"], scale=4)
    assert again.shape == grid.shape
