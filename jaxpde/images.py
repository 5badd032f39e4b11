r"""Real photographs for denoising experiments: the test images that ship with
scikit-image, as float64 grey values in $[0, 1]$, with Gaussian noise, patches and the
quality measures PSNR and SSIM.

scikit-image is an optional dependency (`pip install 'jaxpde[images]'`); nothing here is
downloaded (`skimage.data` bundles these images). Noise is added with a JAX key, so an
experiment is reproducible across machines:

$$y = x + \sigma\,\xi, \qquad \xi_{ij} \sim \mathcal N(0, 1) \text{ i.i.d.},$$

not clipped to $[0, 1]$ (the usual additive white Gaussian noise model; $\sigma = 25/255$
gives an input PSNR near 20 dB).

Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004 (SSIM).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import check_int, check_positive_float

_EXTRA = "pip install 'jaxpde[images]'"

# The photographs of `skimage.data` that load without a download (greyscale, RGB converted
# with ITU-R BT.709 luma weights, binary images as 0 / 1).
PHOTOGRAPHS = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "rocket",
    "text",
)


def require_skimage():
    """The `skimage` module, or an `ImportError` that names the optional extra."""
    try:
        import skimage
        import skimage.color
        import skimage.data
        import skimage.metrics
    except ImportError as error:
        raise ImportError(
            f"jaxpde.images needs scikit-image, an optional dependency: {_EXTRA}"
        ) from error
    return skimage


def load_photograph(name: str, *, crop: tuple[int, int] | None = None) -> np.ndarray:
    """The bundled photograph `name` (one of `PHOTOGRAPHS`) as float64 grey values in $[0, 1]$,
    shape `(H, W)`; with `crop=(h, w)` its centre `min(h, H) x min(w, W)` window."""
    if name not in PHOTOGRAPHS:
        raise ValueError(f"`name` must be one of {PHOTOGRAPHS}, got {name!r}.")
    skimage = require_skimage()
    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = skimage.color.rgb2gray(image[..., :3])
    elif image.dtype == np.bool_:
        image = image.astype(np.float64)
    else:
        image = image.astype(np.float64) / np.iinfo(image.dtype).max
    image = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    return image if crop is None else centre_crop(image, crop)


def centre_crop(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The centre window of `image` (last two axes) of size `min(shape, image size)`."""
    h, w = (check_int(f"shape[{i}]", s, minimum=1) for i, s in enumerate(shape))
    height, width = image.shape[-2:]
    h, w = min(h, height), min(w, width)
    top, left = (height - h) // 2, (width - w) // 2
    return image[..., top : top + h, left : left + w]


def add_noise(
    image: ArrayLike, sigma: float, key: PRNGKeyArray
) -> Float[Array, "*shape"]:
    r"""`image` plus white Gaussian noise of standard deviation `sigma` (not clipped)."""
    sigma = check_positive_float("sigma", sigma)
    image = jnp.asarray(image, jnp.result_type(float))
    return image + sigma * jax.random.normal(key, image.shape, image.dtype)


def random_patches(
    images, size: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` square patches of `size x size` cut at uniformly random positions from
    `images` (a sequence of 2-D arrays, each at least `size` on both axes; the image of
    each patch is chosen with probability proportional to its number of positions),
    randomly flipped and rotated by multiples of 90 degrees. Shape `(count, size, size)`."""
    size = check_int("size", size, minimum=1)
    count = check_int("count", count, minimum=1)
    images = [np.asarray(image, np.float64) for image in images]
    if not images or any(
        image.ndim != 2 or min(image.shape) < size for image in images
    ):
        raise ValueError(
            f"`images` must be 2-D arrays of at least {size} x {size} pixels (the patch size)."
        )
    positions = np.array(
        [(image.shape[0] - size + 1) * (image.shape[1] - size + 1) for image in images],
        float,
    )
    which = rng.choice(len(images), size=count, p=positions / positions.sum())
    patches = np.empty((count, size, size))
    for index, source in enumerate(which):
        image = images[source]
        top = rng.integers(image.shape[0] - size + 1)
        left = rng.integers(image.shape[1] - size + 1)
        patch = np.rot90(
            image[top : top + size, left : left + size], k=int(rng.integers(4))
        )
        patches[index] = patch[:, ::-1] if rng.integers(2) else patch
    return patches


def psnr(
    estimate: ArrayLike, clean: ArrayLike, peak: float = 1.0
) -> Float[Array, "*batch"]:
    r"""Peak signal-to-noise ratio per image, $10\log_{10}(\text{peak}^2/\text{MSE})$ in dB
    (the mean over the last two axes)."""
    estimate, clean = jnp.asarray(estimate), jnp.asarray(clean)
    if estimate.shape != clean.shape or estimate.ndim < 2:
        raise ValueError(
            f"`estimate` and `clean` must be images of one shape, got {estimate.shape} and {clean.shape}."
        )
    mse = jnp.mean((estimate - clean) ** 2, axis=(-2, -1))
    return 10 * jnp.log10(peak**2 / mse)


def ssim(estimate: ArrayLike, clean: ArrayLike) -> float:
    """Structural similarity of one image against the clean one (`skimage.metrics`,
    Gaussian-free 7 x 7 windows, data range 1)."""
    skimage = require_skimage()
    estimate, clean = np.asarray(estimate, np.float64), np.asarray(clean, np.float64)
    if estimate.shape != clean.shape or estimate.ndim != 2:
        raise ValueError(
            f"`estimate` and `clean` must be one image each, of one shape; got {estimate.shape} and {clean.shape}."
        )
    return float(skimage.metrics.structural_similarity(estimate, clean, data_range=1.0))
