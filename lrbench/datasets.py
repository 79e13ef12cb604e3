"""The three benchmarks' facts in one table (importable without torch): folder layout, class names and palette,
label convention, ignore index and the size of the validation split. Everything else reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

from .classes import ADE20K, CITYSCAPES, CITYSCAPES_PALETTE, COCO_STUFF, palette
from .errors import UsageError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    folder: str  # the dataset's own top folder, accepted as --data-root or inside it
    img_dir: str
    ann_dir: str
    img_suffix: str
    ann_suffix: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    reduce_zero_label: bool  # ADE20K: stored 0 ("other") is ignored, 1..150 become 0..149
    val_size: int  # images in the official validation split: a run over fewer is partial
    file_words: str = ""  # regex over a file path in sources._words form: the path names this dataset
    recursive: bool = False  # Cityscapes keeps one sub-folder per city
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: dict[str, DatasetSpec] = {
    "ade20k": DatasetSpec(
        "ade20k",
        "ADE20K val (150 classes)",
        "ADEChallengeData2016",
        "images/validation",
        "annotations/validation",
        ".jpg",
        ".png",
        ADE20K,
        palette(150),
        reduce_zero_label=True,
        val_size=2000,
        file_words=r"-ade(20k)?-",
    ),
    "coco-stuff": DatasetSpec(
        "coco-stuff",
        "COCO-Stuff-164k val (171 classes)",
        "coco_stuff164k",
        "images/val2017",
        "annotations/val2017",
        ".jpg",
        "_labelTrainIds.png",
        COCO_STUFF,
        palette(171),
        reduce_zero_label=False,
        val_size=5000,
        file_words=r"-coco-?stuff(164k)?-",  # not COCO-Stuff-10k, another dataset
    ),
    "cityscapes": DatasetSpec(
        "cityscapes",
        "Cityscapes val (19 classes)",
        "cityscapes",
        "leftImg8bit/val",
        "gtFine/val",
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        CITYSCAPES,
        CITYSCAPES_PALETTE,
        reduce_zero_label=False,
        val_size=500,
        file_words=r"-cityscapes-",
        recursive=True,
    ),
}
DEFAULT_DATASET = "ade20k"


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}, got '{name}'")
    return DATASETS[name]
