"""The bundled photographs and the image quality measures (`jaxpde.images`)."""

import builtins

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from jaxpde import images
from jaxpde.images import (
    add_noise,
    centre_crop,
    load_photograph,
    psnr,
    random_patches,
    ssim,
)

from .helpers import few_examples

skimage = pytest.importorskip(
    "skimage", reason="jaxpde.images needs scikit-image (pip install 'jaxpde[images]')"
)


@pytest.mark.parametrize("name", ["camera", "astronaut", "text"])
def test_photographs_load_as_grey_values_in_the_unit_interval(name):
    image = load_photograph(name)
    assert image.dtype == np.float64 and image.ndim == 2
    assert 0.0 <= image.min() < image.max() <= 1.0
    crop = load_photograph(name, crop=(64, 300))
    assert crop.shape == (64, min(300, image.shape[1]))
    np.testing.assert_array_equal(crop, centre_crop(image, (64, 300)))


def test_centre_crop_takes_the_middle_window():
    grid = np.arange(42.0).reshape(6, 7)
    np.testing.assert_array_equal(
        centre_crop(grid, (2, 3)), [[16, 17, 18], [23, 24, 25]]
    )
    np.testing.assert_array_equal(centre_crop(grid, (10, 10)), grid)


def test_camera_is_the_scikit_image_camera_scaled():
    np.testing.assert_array_equal(
        load_photograph("camera"), skimage.data.camera() / 255.0
    )


def test_an_unknown_photograph_is_refused():
    with pytest.raises(ValueError, match="name"):
        load_photograph("lena")


def test_a_missing_scikit_image_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name == "skimage" or name.startswith("skimage."):
            raise ImportError("No module named 'skimage'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(ImportError, match=r"pip install 'jaxpde\[images\]'"):
        images.load_photograph("camera")
    with pytest.raises(ImportError, match=r"jaxpde\[images\]"):
        images.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_noise_is_reproducible_and_has_the_requested_deviation():
    clean = np.full((128, 128), 0.5)
    a = np.asarray(add_noise(clean, 0.1, jax.random.key(0)))
    np.testing.assert_array_equal(
        a, np.asarray(add_noise(clean, 0.1, jax.random.key(0)))
    )
    assert not np.array_equal(a, np.asarray(add_noise(clean, 0.1, jax.random.key(1))))
    assert abs(np.std(a - clean) - 0.1) < 0.005 and abs(np.mean(a - clean)) < 0.005
    with pytest.raises(ValueError, match="sigma"):
        add_noise(clean, 0.0, jax.random.key(0))


def test_patches_are_windows_of_the_images_up_to_flips_and_rotations():
    sources = [np.arange(100.0).reshape(10, 10), 1000 + np.arange(48.0).reshape(6, 8)]
    patches = random_patches(sources, 4, 50, np.random.default_rng(0))
    assert patches.shape == (50, 4, 4)
    # Both images contribute (in proportion to their 49 and 15 window positions).
    assert 5 <= np.sum(patches[:, 0, 0] >= 1000) <= 25
    for patch in patches:
        source = sources[0] if patch[0, 0] < 1000 else sources[1]
        # Some flip / rotation of the patch is the window whose top-left entry (values are
        # unique) sits where it sits in the source.
        candidates = [np.rot90(p, k) for p in (patch, patch[:, ::-1]) for k in range(4)]
        windows = []
        for candidate in candidates:
            row, col = np.argwhere(source == candidate[0, 0])[0]
            windows.append(
                np.array_equal(source[row : row + 4, col : col + 4], candidate)
            )
        assert any(windows)
    with pytest.raises(ValueError, match="images"):
        random_patches([np.zeros((3, 8))], 4, 1, np.random.default_rng(0))


@few_examples(10)
@hypothesis.given(offset=st.floats(1e-3, 0.5), shape=st.sampled_from(((8, 8), (5, 7))))
def test_psnr_of_a_constant_error(offset, shape):
    clean = np.random.default_rng(0).uniform(size=shape)
    assert float(psnr(clean + offset, clean)) == pytest.approx(
        -20 * np.log10(offset), rel=1e-12
    )
    batch = np.stack([clean + offset, clean - 2 * offset])
    np.testing.assert_allclose(
        np.asarray(psnr(batch, np.stack([clean, clean]))),
        -20 * np.log10([offset, 2 * offset]),
        rtol=1e-12,
    )


def test_psnr_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="estimate"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_ssim_is_one_for_the_clean_image_and_drops_with_noise():
    clean = load_photograph("camera", crop=(64, 64))
    assert ssim(clean, clean) == pytest.approx(1.0)
    noisy = np.asarray(add_noise(clean, 0.1, jax.random.key(0)))
    expected = skimage.metrics.structural_similarity(noisy, clean, data_range=1.0)
    assert ssim(noisy, clean) == pytest.approx(expected) and expected < 0.9
    with pytest.raises(ValueError, match="estimate"):
        ssim(clean, clean[:10])
