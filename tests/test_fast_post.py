"""The fast post-processing (one sparse map per axis, bands, consensus labels) against the straightforward protocol
(:func:`lrbench.inference.predict_logits`): equal scores up to float rounding, equal labels except near-ties."""

import pytest
import torch
import torch.nn as nn

from lrbench.inference import merged_labels, merged_scores, predict_labels, predict_logits, protocol_views


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
    for smooth in (False, True):  # noisy logits (bands) and smooth ones (consensus + boundary pixels)
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


def test_consensus_is_used_and_exact_on_smooth_maps():
    """Smooth predictions: most pixels take their label from the consensus of their sources, the rest are scored;
    the result equals the argmax of the full scores."""
    images = torch.randint(0, 256, (1, 120, 160, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    model = StrideNet(k=5, smooth=True).eval()
    test = {"resize": None, "size_divisor": 1}
    with torch.inference_mode():
        views = protocol_views(model, images, test)
        from lrbench.inference import _consensus, _score_pixels

        agreed = _consensus(views)
        full = merged_scores(views).argmax(1)
        assert 0.5 < float((agreed >= 0).float().mean()) < 1  # both paths are exercised
        assert torch.equal(agreed[agreed >= 0], full[agreed >= 0]) and torch.equal(merged_labels(views), full)
        b, y, x = (agreed < 0).nonzero(as_tuple=True)  # the boundary pixels, scored one by one
        assert torch.equal(_score_pixels(views, b, y, x, "logits").argmax(-1), full[b, y, x])
