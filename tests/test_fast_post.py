"""The fast post-processing (one sparse map per axis; bands of matrix products, windows' survivors) against the straightforward protocol
(:func:`lrbench.engine.pipeline.predict_logits`): equal scores up to float rounding, equal labels except near-ties."""

import pytest
import torch
import torch.nn as nn

from lrbench.engine.pipeline import predict_labels, predict_logits, protocol_views
from lrbench.engine.postprocess import merged_labels, merged_scores


class StrideNet(nn.Module):
    """A random stride-4 conv: logits at about 1/4 of the input, depending on the input (so every view differs)."""

    def __init__(self, k=7, seed=0, smooth=False):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 5, stride=4, padding=2)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * (0.05 if smooth else 1))
            self.conv.bias.copy_(torch.randn(k, generator=g) * (3 if smooth else 1))

    def forward(self, x):
        return self.conv(x)


CASES = [
    # (image H, W, test settings, protocol, mode, merge)
    (97, 131, {"resize": None, "size_divisor": 1}, "ss", "whole", "logits"),  # odd sides, no resize
    (97, 131, {"resize": [2048, 512], "size_divisor": 32}, "ss", "whole", "logits"),  # upscale + AlignResize
    (201, 333, {"resize": [128, 64], "size_divisor": 1}, "ss", "whole", "logits"),  # downscale
    (75, 101, {"resize": [2048, 96], "size_divisor": 1, "pad_divisor": 32}, "ms", "whole", "logits"),  # pad, ms, flips
    (
        75,
        101,
        {"resize": [2048, 96], "size_divisor": 1, "pad_divisor": 32, "ms_max_long": 300},
        "ms",
        "whole",
        "softmax",
    ),
    (90, 150, {"resize": None, "size_divisor": 1, "crop": [64, 64], "stride": [40, 40]}, "ss", "slide", "logits"),
    (90, 150, {"resize": [256, 80], "size_divisor": 8, "crop": [64, 64], "stride": [40, 40]}, "ms", "slide", "softmax"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}-{c[3]}-{c[4]}-{c[5]}" for c in CASES])
def test_fast_equals_reference(case):
    H, W, test, protocol, mode, merge = case
    images = torch.randint(0, 256, (2, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for smooth in (False, True):  # noisy logits and smooth ones (ss: many windows with one survivor)
        model = StrideNet(smooth=smooth).eval()
        with torch.inference_mode():
            ref = predict_logits(model, images, test, protocol, mode, merge)
            views = protocol_views(model, images, test, protocol, mode)
            fast = merged_scores(views, merge)
            labels = merged_labels(views, merge)
            direct = predict_labels(model, images, test, protocol, mode, merge)
        span = float(ref.max() - ref.min())
        assert fast.shape == ref.shape and float((fast - ref).abs().max()) <= 1e-5 * span
        top2 = ref.topk(2, dim=1).values
        near_tie = (top2[:, 0] - top2[:, 1]) <= 1e-4 * span
        differ = labels != ref.argmax(1)
        assert not (differ & ~near_tie).any() and float(differ.float().mean()) <= 1e-3
        assert torch.equal(direct, labels)


def test_survivors_are_the_classes_the_window_can_elect():
    """Every class that wins at some convex combination of a window's sources survives; the survivors are exactly
    the classes neither certificate beats at every source (a loop over windows, sources and classes)."""
    from lrbench.engine.postprocess import _survivors

    torch.manual_seed(0)  # the convex combinations drawn below
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 8, 9, generator=g)
    first, surv = _survivors(logits, 2, 3)
    for b in range(2):
        for y in range(5):
            for x in range(6):
                src = logits[b, y : y + 2, x : x + 3].reshape(6, 9)  # (sources, classes)
                top = src.sum(0).topk(2).indices
                certificates = [src[:, int(src.min(0).values.argmax())], src[:, top].mean(1)]
                beaten = [any(bool((g_ > src[:, c]).all()) for g_ in certificates) for c in range(9)]
                assert surv[b, y, x].tolist() == [not t for t in beaten]
                assert int(first[b, y, x]) == beaten.index(False)
                mix = torch.distributions.Dirichlet(torch.ones(6)).sample((500,)) @ src  # convex combinations
                assert surv[b, y, x][mix.argmax(-1)].all()


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [(83, 121), (29, 40)])  # upscale by a non-integer factor, downscale
def test_window_labels_equal_full_scores(flip, size):
    """One view (ss): labels from the windows' survivors equal the argmax of the full scores, on maps of regions
    (one survivor inside, two at boundaries) under growing noise (ever more survivors)."""
    from lrbench.engine.postprocess import _survivors, _window, _window_labels, view_of

    g = torch.Generator().manual_seed(4)
    K, seen = 40, set()
    for noise in (0.3, 1.0, 3.0):
        regions = torch.randint(0, K, (2, 4, 5), generator=g)
        base = 4 * torch.nn.functional.one_hot(regions, K).permute(0, 3, 1, 2).float()
        logits = torch.nn.functional.interpolate(base, size=(13, 17)) + noise * torch.randn(2, K, 13, 17, generator=g)
        v = view_of(logits, (52, 68), (50, 66), size, flip)
        assert torch.equal(_window_labels(v), merged_scores([v]).argmax(1))
        (_, wy), (_, wx) = _window(*v.rows, 13), _window(*v.cols, 17)
        m = _survivors(v.logits, wy.shape[1], wx.shape[1])[1].sum(-1)
        seen |= {min(int(k), 5) for k in m.unique()}
    assert seen == {1, 2, 3, 4, 5}  # every branch: one survivor, and tiles of 2, 4 and 8 or more classes
