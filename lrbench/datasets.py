"""The three benchmarks' facts in one table (importable without torch): folder layout, class names and palette,
label convention, ignore index and the size of the validation split. Everything else reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

from .classes import ADE20K, CITYSCAPES, CITYSCAPES_PALETTE, COCO_STUFF, palette
from .errors import UsageError

IGNORE_INDEX = 255

# Cityscapes gtFine_labelIds -> the 19 train ids (cityscapesscripts' labels.py; every other id 0..33 is ignored).
_CITYSCAPES_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12}
_CITYSCAPES_TRAIN |= {26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_LOOKUP = tuple(_CITYSCAPES_TRAIN.get(i, IGNORE_INDEX) if i <= 33 else -1 for i in range(256))
# COCO-Stuff-164k raw stuffthingmaps ids 0..181 (mmseg's coco_stuff164k.py): the used ids in order become 0..170, the
# 11 unused thing ids and 255 (unlabeled) are ignored; 182..254 do not exist.
COCO_STUFF_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
_used = [i for i in range(182) if i not in COCO_STUFF_UNUSED]
COCO_STUFF_LOOKUP = tuple(
    _used.index(i) if i in _used else IGNORE_INDEX if i in COCO_STUFF_UNUSED or i == 255 else -1 for i in range(256)
)


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
    raw_ann_suffix: str | None = None  # the labels as the official archive ships them, read through raw_lookup
    raw_lookup: tuple[int, ...] | None = None  # stored raw id -> train id (255 = ignore, -1 = not a valid raw id)
    raw_form: str | None = None  # what the raw labels are called, for messages
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
        raw_ann_suffix=".png",
        raw_lookup=COCO_STUFF_LOOKUP,
        raw_form="raw stuffthingmaps ids",
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
        raw_ann_suffix="_gtFine_labelIds.png",
        raw_lookup=CITYSCAPES_LOOKUP,
        raw_form="gtFine_labelIds",
        recursive=True,
    ),
}
DEFAULT_DATASET = "ade20k"


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}, got '{name}'")
    return DATASETS[name]
