"""Corrupted validation images for robustness evaluation, made by the ``imagecorruptions`` package (Michaelis et al.;
the code behind Cityscapes-C in Kamann & Rother, CVPR 2020, which the SegFormer paper's robustness study used).

The package is used, not re-implemented: :func:`package` imports it, adapting what its 2019 code meets in a current
environment, all confined to that import and that module: ``pkg_resources`` (gone from current setuptools; it only locates
the frost pictures shipped inside the package) is given for the import alone, and the ``multichannel=True`` argument
scikit-image removed in 0.19 is passed to ``skimage.filters.gaussian`` as ``channel_axis=-1`` by a wrapper bound in
the package's module only; likewise NumPy 2's missing ``np.float_`` and scikit-image's unseeded ``random_noise`` (see
:func:`_adapt`). The package draws from NumPy's global generator; :func:`corrupt_image` seeds it per image
from the corruption, the severity and the image's path inside the dataset (:func:`image_seed`), so two runs -- and
every rank of a torchrun job, and every DataLoader worker -- make byte-identical images.

``glass_blur`` moves every pixel one at a time in a Python loop with a NumPy draw per pixel (about 40x slower than the
other corruptions; minutes per Cityscapes image). :func:`glass_blur_fast` takes the same draws in one call (the same
generator stream) and replays the moves on an index list; it returns the package's bytes exactly (tests compare
them), including the package's quirk that a "swap" of two pixels copies one onto the other.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import types
import warnings

import numpy as np

from ..errors import UsageError

GLASS = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]  # the package's (sigma, max_delta, iterations)


@functools.cache
def package():
    """The ``imagecorruptions`` package, imported as its code is (see the module docstring for the two
    adaptations, both local to it)."""
    try:
        import skimage.filters  # noqa: F401 - the package's own dependency; fails here with a clear name
    except ImportError as e:  # pragma: no cover - a broken install
        raise UsageError(f"corruptions need imagecorruptions and scikit-image ({e}); reinstall lrbench") from None
    shim = None
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:  # setuptools >= 81: only resource_filename is used, for files inside the package
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda module, path: os.path.join(
                os.path.dirname(sys.modules[module].__file__), path
            )  # pkg_resources' meaning: a path beside the module's file
            sys.modules["pkg_resources"] = shim
    try:
        with warnings.catch_warnings():  # its scipy.ndimage.interpolation import is deprecated, not wrong
            warnings.simplefilter("ignore", DeprecationWarning)
            import imagecorruptions
            import imagecorruptions.corruptions as impl
    finally:
        if shim is not None:
            sys.modules.pop("pkg_resources", None)
    if not getattr(impl, "_lrbench_adapted", False):
        _adapt(impl)
    return imagecorruptions


class _Namespace(types.ModuleType):
    """A module standing in for another inside the package only: its own attributes first, then the original's."""

    def __init__(self, original, **own):
        super().__init__(original.__name__)
        self._original = original
        self.__dict__.update(own)

    def __getattr__(self, name):
        return getattr(self._original, name)


def _adapt(impl) -> None:
    """What the package's 2019 code needs from today's NumPy 2 / scikit-image, bound in its module alone:
    ``np.float_`` (removed in NumPy 2.0; used by fog's plasma fractal) is float64; ``gaussian(multichannel=True)``
    (removed in scikit-image 0.19) is ``channel_axis=-1``; and ``skimage.util.random_noise`` (impulse noise) draws
    its seed from NumPy's global generator, as scikit-image <= 0.18 did (it now takes a fresh, unseeded one, so the
    image would differ on every run)."""
    import skimage

    gaussian = impl.gaussian

    def gaussian_compat(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    def random_noise(image, mode="gaussian", **kw):
        kw.setdefault("rng", int(np.random.randint(0, 2**31 - 1)))
        return skimage.util.random_noise(image, mode=mode, **kw)

    impl.np = _Namespace(np, float_=np.float64)
    impl.sk = _Namespace(skimage, util=_Namespace(skimage.util, random_noise=random_noise))
    impl.gaussian = gaussian_compat
    impl._lrbench_adapted = True


def image_seed(corruption: str, severity: int, key: str) -> int:
    """The NumPy seed of one corrupted image: from the corruption, severity and the image's key (its path inside the
    dataset), the same on every machine and process."""
    digest = hashlib.sha256(f"{corruption}/{severity}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def glass_blur_fast(image: np.ndarray, severity: int) -> np.ndarray:
    """The package's ``glass_blur`` (before ``corrupt``'s final ``np.uint8``) with its pixel moves replayed on an
    index list: the same NumPy draws, taken in one call, so the same generator state before and after."""
    from skimage.filters import gaussian

    sigma, delta, iterations = GLASS[severity - 1]
    x = np.uint8(gaussian(np.asarray(image) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    H, W = x.shape[:2]
    hs, ws = range(H - delta, delta, -1), range(W - delta, delta, -1)
    n = len(hs) * len(ws)
    src = list(range(H * W))  # src[p]: which original pixel is at position p now
    for _ in range(iterations):
        draws = np.random.randint(-delta, delta, size=(n, 2)).tolist()  # (dx, dy) per pixel, in the loop's order
        k = 0
        for h in hs:
            row = h * W
            for w in ws:
                dx, dy = draws[k]
                k += 1
                # the package writes x[h, w], x[h', w'] = x[h', w'], x[h, w] on views: (h, w) takes (h', w')'s
                # value and (h', w') keeps it (a copy, not a swap)
                src[row + w] = src[(h + dy) * W + w + dx]
    moved = x.reshape(H * W, -1)[np.asarray(src)].reshape(x.shape)
    return np.clip(gaussian(moved / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def corrupt_image(image: np.ndarray, corruption: str, severity: int, key: str, fast: bool = True) -> np.ndarray:
    """``image`` (H, W, 3 uint8) corrupted by the package at ``severity``, with NumPy seeded from ``key``; the
    generator's previous state is restored afterwards. ``fast``: glass_blur by :func:`glass_blur_fast` (same bytes)."""
    ic = package()
    state = np.random.get_state()
    np.random.seed(image_seed(corruption, severity, key))
    try:
        if fast and corruption == "glass_blur":
            if min(image.shape[:2]) < 32:  # the package's own check
                raise AttributeError("Image width and height must be at least 32 pixels")
            return np.uint8(glass_blur_fast(image, severity))
        return ic.corrupt(np.ascontiguousarray(image), corruption_name=corruption, severity=severity)
    finally:
        np.random.set_state(state)
