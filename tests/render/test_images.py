import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_xai.render import (
    DEFAULT_SIGNED_CMAP,
    DEFAULT_UNSIGNED_CMAP,
    annotated_grid,
    colormap_lut,
    evolution_strip,
    heatmap_to_rgb,
    image_grid,
    normalize_maps,
    overlay,
    reduce_channels,
    save_png,
    to_display,
    to_uint8_hwc,
)


def _in_unit(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1)


def test_reduce_channels():
    attr = torch.tensor([1.0, -3.0, 0.5]).view(1, 3, 1, 1).expand(2, 3, 4, 5)
    signed = reduce_channels(attr, signed=True)
    unsigned = reduce_channels(attr, signed=False)
    assert signed.shape == unsigned.shape == (2, 1, 4, 5)
    assert torch.allclose(signed, torch.full_like(signed, -1.5))
    assert torch.allclose(unsigned, torch.full_like(unsigned, 4.5))
    with pytest.raises(ValueError, match=r"\(3, 4, 5\)"):
        reduce_channels(torch.rand(3, 4, 5), signed=True)


def test_normalize_maps_ranges_and_degenerate_maps():
    maps = torch.randn(4, 1, 6, 6) * 10
    maps[1] = 0.0  # all zero
    maps[2] = 3.5  # constant
    maps[3, 0, 0, 0] = float("nan")
    signed = normalize_maps(maps, signed=True)
    unsigned = normalize_maps(maps, signed=False)
    for out in (signed, unsigned):
        assert out.shape == maps.shape and torch.isfinite(out).all()
    assert signed.min() >= -1 and signed.max() <= 1
    assert signed[0].abs().max() == pytest.approx(1.0)
    assert torch.equal(torch.sign(signed[0]), torch.sign(maps[0]))  # sign and zero preserved
    assert (signed[1] == 0).all() and torch.allclose(signed[2], torch.ones_like(signed[2]))
    assert unsigned.min() >= 0 and unsigned.max() <= 1
    assert unsigned[0].min() == 0 and unsigned[0].max() == pytest.approx(1.0)
    assert (unsigned[1] == 0).all() and (unsigned[2] == 0).all()


def test_heatmap_sign_convention():
    maps = torch.tensor([1.0, -1.0, 0.0, 0.5]).view(1, 1, 1, 4)
    rgb = heatmap_to_rgb(maps, signed=True)
    assert rgb.shape == (1, 3, 1, 4) and _in_unit(rgb)
    pos, neg, zero = rgb[0, :, 0, 0], rgb[0, :, 0, 1], rgb[0, :, 0, 2]
    assert not torch.allclose(pos, neg)
    assert pos[0] > pos[2] and neg[2] > neg[0]  # bwr: red positive, blue negative
    centre = torch.tensor(matplotlib.colormaps[DEFAULT_SIGNED_CMAP](0.5)[:3], dtype=torch.float32)
    assert torch.allclose(zero, centre, atol=1e-6)
    # the LUT gather agrees with calling matplotlib directly
    expected = torch.tensor(matplotlib.colormaps[DEFAULT_SIGNED_CMAP](0.75)[:3], dtype=torch.float32)
    assert torch.allclose(rgb[0, :, 0, 3], expected, atol=1e-6)
    assert colormap_lut(DEFAULT_SIGNED_CMAP).shape == (257, 3)


def test_heatmap_unsigned_and_options():
    maps = torch.linspace(0, 5, 16).view(1, 1, 4, 4)
    rgb = heatmap_to_rgb(maps, signed=False)
    low = torch.tensor(matplotlib.colormaps[DEFAULT_UNSIGNED_CMAP](0.0)[:3], dtype=torch.float32)
    high = torch.tensor(matplotlib.colormaps[DEFAULT_UNSIGNED_CMAP](1.0)[:3], dtype=torch.float32)
    assert torch.allclose(rgb[0, :, 0, 0], low, atol=1e-6) and torch.allclose(rgb[0, :, 3, 3], high, atol=1e-6)
    gray = heatmap_to_rgb(maps, signed=False, cmap="gray")
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    for constant in (torch.zeros(2, 1, 5, 5), torch.full((2, 1, 5, 5), 7.0)):
        for signed in (True, False):
            assert _in_unit(heatmap_to_rgb(constant, signed=signed))
    raw = heatmap_to_rgb(torch.full((1, 1, 2, 2), 0.5), signed=False, normalize=False)
    mid = torch.tensor(matplotlib.colormaps[DEFAULT_UNSIGNED_CMAP](0.5)[:3], dtype=torch.float32)
    assert torch.allclose(raw[0, :, 0, 0], mid, atol=1e-6)
    with pytest.raises(ValueError, match="no_such_map"):
        heatmap_to_rgb(maps, signed=False, cmap="no_such_map")
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        heatmap_to_rgb(torch.rand(1, 3, 4, 4), signed=False)


def test_to_display():
    gray = to_display(torch.randn(2, 1, 5, 5) * 4)
    assert gray.shape == (2, 3, 5, 5) and _in_unit(gray)
    assert torch.equal(gray[:, 0], gray[:, 1])
    assert gray[0].min() == 0 and gray[0].max() == pytest.approx(1.0)
    rgb = to_display(torch.rand(3, 3, 4, 4))
    assert rgb.shape == (3, 3, 4, 4) and _in_unit(rgb)
    assert to_display(torch.rand(1, 4, 4, 4)).shape == (1, 3, 4, 4)
    assert to_display(torch.rand(1, 2, 4, 4)).shape == (1, 3, 4, 4)
    constant = to_display(torch.full((1, 3, 2, 2), 0.25))
    assert torch.allclose(constant, torch.full_like(constant, 0.25))


def test_overlay():
    images = torch.rand(3, 3, 32, 32)
    maps = torch.randn(3, 1, 8, 8)
    for signed in (True, False):
        out = overlay(images, maps, signed=signed)
        assert out.shape == (3, 3, 32, 32) and _in_unit(out)
    # a zero signed map leaves the (gray) image as it is; alpha 0 too
    base = overlay(images, torch.zeros(3, 1, 32, 32), signed=True)
    assert torch.allclose(base[:, 0], base[:, 1]) and torch.allclose(base[:, 1], base[:, 2])
    colour = overlay(images, torch.zeros(3, 1, 32, 32), signed=True, grayscale=False)
    assert torch.allclose(colour, to_display(images))
    assert torch.allclose(overlay(images, maps, signed=False, alpha=0.0, grayscale=False), to_display(images))
    # positive evidence tints red, negative blue
    signed = torch.cat([torch.ones(1, 1, 32, 16), -torch.ones(1, 1, 32, 16)], dim=3)
    tinted = overlay(torch.full((1, 3, 32, 32), 0.5), signed, signed=True, alpha=1.0)
    assert tinted[0, 0, :, :16].mean() > tinted[0, 2, :, :16].mean()
    assert tinted[0, 2, :, 16:].mean() > tinted[0, 0, :, 16:].mean()
    with pytest.raises(ValueError, match="alpha.*1.5"):
        overlay(images, maps, signed=True, alpha=1.5)
    with pytest.raises(ValueError, match="2 maps for 3 images"):
        overlay(images, maps[:2], signed=True)


def test_image_grid():
    grid = image_grid(torch.rand(10, 3, 8, 8), nrow=4, padding=2)
    assert grid.shape == (3, 3 * 10 + 2, 4 * 10 + 2)
    with pytest.raises(ValueError, match="nrow"):
        image_grid(torch.rand(2, 3, 8, 8), nrow=0)


def test_annotated_grid():
    import matplotlib.pyplot as plt

    images = torch.rand(6, 3, 32, 32)
    captions = [f"true: circle\npred: square (0.{i}3)" for i in range(6)]
    grid = annotated_grid(images, captions, ncols=4, title="Saliency, epoch 3")
    assert grid.ndim == 3 and grid.shape[0] == 3 and _in_unit(grid)
    assert grid.shape[2] >= 4 * 128 and grid.shape[1] >= 2 * 128  # upscaled tiles
    plain = annotated_grid(images, [""] * 6, ncols=4, title="Saliency, epoch 3")
    assert plain.shape[1] < grid.shape[1]  # captions take room

    # the tiles are drawn pixel-exact (nearest upscaling, no resampling blur): tile 0's colours
    # appear unchanged in the figure
    def packed(t: torch.Tensor) -> set[int]:
        q = (t.reshape(3, -1) * 255).round().long()
        return set((q[0] * 65536 + q[1] * 256 + q[2]).tolist())

    tile_colours = packed(images[0])
    assert len(tile_colours & packed(plain)) >= 0.95 * len(tile_colours)
    small = annotated_grid(images[:2], ["a", "b"], scale=1)
    assert small.shape[2] < grid.shape[2]
    assert plt.get_fignums() == []  # no pyplot figure left open
    with pytest.raises(ValueError, match="2 captions"):
        annotated_grid(images[:2], ["only one"])
    with pytest.raises(ValueError, match="scale"):
        annotated_grid(images[:2], ["a", "b"], scale=0)


def test_evolution_strip():
    frames = [torch.rand(3, 16, 16), torch.rand(3, 16, 16), torch.rand(3, 32, 32)]
    strip = evolution_strip(frames, ["epoch 0", "epoch 1", "epoch 2"], title="probe 0")
    assert strip.shape[0] == 3 and strip.shape[2] > strip.shape[1] and _in_unit(strip)
    with pytest.raises(ValueError, match="one label per frame"):
        evolution_strip(frames, ["epoch 0"])
    with pytest.raises(ValueError, match="at least one frame"):
        evolution_strip([], [])


def test_save_png_round_trip(tmp_path):
    image = torch.rand(3, 12, 20)
    path = save_png(image, tmp_path / "a" / "b.png")
    array = np.asarray(Image.open(path).convert("RGB"))
    assert array.shape == (12, 20, 3)
    assert np.array_equal(array, to_uint8_hwc(image))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        save_png(torch.rand(2, 4, 4), tmp_path / "bad.png")


def test_normalize_maps_clip_percentile_saturates_outliers() -> None:
    maps = torch.full((1, 1, 10, 10), 0.1)
    maps[0, 0, 0, 0] = 100.0  # one extreme pixel
    plain = normalize_maps(maps, signed=True)
    clipped = normalize_maps(maps, signed=True, clip_percentile=90.0)
    assert plain[0, 0, 5, 5] < 0.01  # washed out by the outlier
    assert clipped[0, 0, 5, 5] == pytest.approx(1.0)  # the typical value is now at full colour
    assert clipped.max() == 1.0
    unsigned = normalize_maps(maps - 0.1, signed=False, clip_percentile=99.0)
    assert torch.isfinite(unsigned).all() and unsigned.max() <= 1.0
    with pytest.raises(ValueError, match="clip_percentile"):
        normalize_maps(maps, signed=True, clip_percentile=0.0)


# -- legibility: wrapped captions, minimum cell size, colour bars ------------------------------
def test_captions_are_wrapped_to_the_cell_never_wider():
    from lightning_xai.render.images import MIN_CELL_PX, _font, _wrap

    font = _font(17)
    text = "true: Ankle boot\npred: Pullover (1.00) and_a_token_far_longer_than_any_cell_can_hold"
    lines = _wrap(text, font, MIN_CELL_PX)
    assert len(lines) > 3  # the long line was broken
    assert all(font.getlength(line) <= MIN_CELL_PX for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace("\n", "").replace(" ", "")  # nothing dropped


def test_a_grid_of_small_images_has_readable_cells():
    from lightning_xai.render.images import MIN_TILE_PX

    grid = annotated_grid(torch.rand(3, 3, 28, 28), ["a", "b", "c"], ncols=3)
    assert grid.shape[-1] >= 3 * MIN_TILE_PX  # 28 px tiles were scaled up, not left at 28 (or 72)
    captions = ["true: Trouser\npred: Pullover (1.00)"] * 3
    wrapped = annotated_grid(torch.rand(3, 3, 28, 28), captions, ncols=3)
    assert wrapped.shape[-1] == grid.shape[-1]  # long captions wrap: the grid does not widen or overlap


@pytest.mark.parametrize("kind", ["signed", "unsigned"])
def test_colorbar_shows_the_colour_map_under_the_grid(kind: str):
    from lightning_xai.render.images import DEFAULT_SIGNED_CMAP, DEFAULT_UNSIGNED_CMAP, colormap_lut

    plain = annotated_grid(torch.zeros(2, 3, 16, 16), ["", ""], ncols=2)
    with_bar = annotated_grid(torch.zeros(2, 3, 16, 16), ["", ""], ncols=2, colorbar=kind)
    assert with_bar.shape[-2] > plain.shape[-2]
    lut = colormap_lut(DEFAULT_SIGNED_CMAP if kind == "signed" else DEFAULT_UNSIGNED_CMAP)
    bottom = with_bar[:, plain.shape[-2] - 8 :]  # the rows added under the grid
    pixels = bottom.flatten(1).T  # [P, 3]
    for colour in (lut[0], lut[-1]):  # both ends of the colour map are drawn
        assert (pixels - colour).abs().amax(dim=1).min() < 2 / 255


def test_unknown_colorbar_kind_raises():
    with pytest.raises(ValueError, match="colorbar"):
        annotated_grid(torch.zeros(1, 3, 8, 8), [""], colorbar="diverging")


def test_table_image_labels_every_column_and_checks_rows():
    from lightning_xai.render.images import table_image

    one = table_image(["probe", "map"], [[0, torch.zeros(3, 8, 8)]])
    two = table_image(["probe", "map"], [[0, torch.zeros(3, 8, 8)], [1, torch.ones(3, 8, 8)]])
    assert one.shape[-1] == two.shape[-1] and two.shape[-2] > one.shape[-2]  # one row per entry
    assert (two < 0.5).any()  # the header's text and rules are drawn
    with pytest.raises(ValueError, match="row 0 has 1"):
        table_image(["probe", "map"], [[0]])
