"""The training corpora the teacher encodes, as plain typed records with stable row ids.

One place knows each file layout; callers never open data files themselves. The data directory is
resolved by ``resolve_data_dir`` (``--data-dir``, ``$DISTILL_DATA_DIR``, ``../shared/data``).
"""
from .builtin import (
    load_coco2017_mini,
    load_coco_captions,
    load_coco_images,
    load_coco_val2017_captions,
    load_flickr30k_captions,
    load_flickr30k_images,
    load_wiki1m,
)
from .paths import ENV_VAR, resolve_data_dir
from .records import BadRow, CaptionRow, DataFormatError, ImageCheck, ImageRow, TextRow, read_data_lines

__all__ = [
    "BadRow", "CaptionRow", "DataFormatError", "ENV_VAR", "ImageCheck", "ImageRow", "TextRow", "load_coco2017_mini",
    "load_coco_captions", "load_coco_images", "load_coco_val2017_captions", "load_flickr30k_captions",
    "load_flickr30k_images", "load_wiki1m", "read_data_lines", "resolve_data_dir",
]
