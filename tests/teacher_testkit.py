"""Small builders shared by the teacher tests: tiny random CLIPs, small data configs, broken data.

Tiny random CLIPs exercise the open_clip / transformers code paths (loading, tokenising,
preprocessing, normalising) without real weights, which do not exist on these machines. They are
test fixtures only: nothing here is ever used as a teacher outside the tests.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from teacher_cache import CacheDataConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CACHE_SCRIPT = PROJECT_ROOT / "scripts" / "cache_teacher.py"

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def small_data_config(images: int = 4, sentences: int = 24) -> CacheDataConfig:
    """wiki1m sentences + coco2017_mini photos and their 5 captions each: a few seconds to encode."""
    return CacheDataConfig(
        text_sources=("wiki1m", "coco2017_mini"),
        image_sources=("coco2017_mini",),
        limits={"wiki1m": sentences, "coco2017_mini": images},
    )


def make_tiny_open_clip(folder: Path) -> Path:
    """A ``local-dir:`` open_clip folder (config + random weights); returns the folder."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_OPEN_CLIP_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    torch.save(open_clip.CLIP(**TINY_OPEN_CLIP_CFG).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def make_tiny_hf_clip(folder: Path) -> Path:
    """A save_pretrained folder: tiny CLIPModel, a 54-token character vocabulary, the PIL processor."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{letter}</w>" for letter in letters]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, image_size=32, patch_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=37)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    _pil_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _pil_processor_class():
    try:
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def copy_mini_subset(source_data_dir: Path, target: Path, images: int) -> Path:
    """A data dir holding the first ``images`` coco2017_mini records and their JPEGs, to break at will."""
    source = source_data_dir / "images" / "coco2017_mini"
    destination = target / "images" / "coco2017_mini"
    (destination / "images").mkdir(parents=True)
    lines = (source / "captions.jsonl").read_text().splitlines()[:images]
    (destination / "captions.jsonl").write_text("".join(line + "\n" for line in lines))
    for line in lines:
        relative = json.loads(line)["image"]
        shutil.copy(source / relative, destination / relative)
    return target


def directory_bytes(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path: equality means bit-identical caches."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
