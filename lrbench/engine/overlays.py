"""``lrbench analyze --worst K --overlays DIR``: look at the worst images instead of reading about them.

For each named image of an eval, one PNG: the image as the model saw it (corrupted too, for a ``--corruption`` eval)
| the ground truth | the prediction, colour-coded with the dataset's palette (the one ``lrbench predict`` uses;
ignored pixels black). The prediction is made again with the eval's model, weights and protocol (through
:func:`lrbench.engine.predictions.load_predictor`, the pipeline eval scores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import LrbenchError, OutputError, ResultError
from ..fileio import atomic_write_bytes
from ..results import read_eval
from .loader import SegDataset
from .predictions import load_predictor


def colour(labels: np.ndarray, palette, ignore: int = 255) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 in the palette's colours; ``ignore`` (and any id past it) black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = np.asarray(palette, np.uint8)
    out = table[np.clip(labels, 0, 255).astype(np.int64)]
    out[labels == ignore] = 0
    return out


def side_by_side(panels: list[np.ndarray], titles: list[str]) -> Image.Image:
    """The panels left to right with a title strip above each (small images enlarged, nearest neighbour, so that
    a pixel stays a pixel and the titles fit)."""
    scale = -(-240 // panels[0].shape[1])
    if scale > 1:
        panels = [p.repeat(scale, 0).repeat(scale, 1) for p in panels]
    h, w = panels[0].shape[:2]
    strip = 14
    canvas = Image.new("RGB", (w * len(panels), h + strip), (0, 0, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, (panel, title) in enumerate(zip(panels, titles)):
        canvas.paste(Image.fromarray(panel), (i * w, strip))
        draw.text((i * w + 3, 1), title, fill=(255, 255, 255), font=font)
    return canvas


def write_overlays(
    result: str, images: list[str], out_dir: str, device: str = "cpu", overwrite: bool = False
) -> list[dict]:
    """One PNG per image (``NN_<stem>.png``, NN its rank in ``images``) under ``out_dir``; returns what was written."""
    res = read_eval(result)
    if res.get("weights") == "module":
        raise ResultError(f"{result}: made from a model object; overlays need a model name (run them from Python)")
    outs = [Path(out_dir) / f"{i:02d}_{Path(name).stem}.png" for i, name in enumerate(images)]
    existing = [p for p in outs if p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{existing[0]} already exists; pass --overwrite to replace it, or choose another --overlays")
    corruption = res.get("corruption")
    try:
        ds = SegDataset(
            res["dataset"], res["data_root"], (corruption["name"], corruption["severity"]) if corruption else None
        )
    except LrbenchError as e:
        raise ResultError(f"{result}: the eval's images are not where it ran ({e}); analyze on that machine") from None
    index = {p.name: i for i, (p, _) in enumerate(ds.items)}
    missing = [n for n in images if n not in index]
    if missing:
        raise ResultError(f"{result}: {missing[0]} is not in {ds.root} any more; analyze where the eval ran")
    predictor = load_predictor(
        res["model"],
        dataset=res["dataset"],
        checkpoint=res["checkpoint"] if res.get("weights") == "file" else None,
        protocol=res["protocol"],
        mode=res["mode"],
        device=device,
    )
    spec = ds.spec
    written = []
    for name, path in zip(images, outs):
        item = ds.load(index[name])
        if "error" in item:
            raise ResultError(item["error"])
        image, label = item["image"].numpy(), item["label"].numpy()
        pred = predictor(image)
        panel = side_by_side(
            [image, colour(label, spec.palette, spec.ignore_index), colour(pred, spec.palette)],
            [name, "ground truth", f"prediction ({res['model']})"],
        )
        atomic_write_bytes(path, lambda tmp, im=panel: im.save(tmp, format="PNG"))
        written.append({"image": name, "file": str(path)})
    return written
