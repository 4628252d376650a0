"""Teacher backends: the real offline towers, tiny random CLIPs through open_clip and transformers."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from teacher_cache import (
    CrossModalUnavailableError,
    MissingCheckpointError,
    Teacher,
    TeacherConfig,
    build_teacher,
    cross_modal_similarity,
)
from teacher_cache.towers.composite import TimmImageTower
from teacher_cache.towers.efficientnet_lite0 import WeightMappingError, map_lukemelas_to_timm
from teacher_testkit import TINY_OPEN_CLIP_CFG, make_tiny_hf_clip, make_tiny_open_clip

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def offline_teacher() -> Teacher:
    return build_teacher(TeacherConfig(device="cpu"))


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(skimage_data.chelsea()), Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))]


def _assert_unit_rows(embeddings: torch.Tensor, rows: int, dim: int) -> None:
    assert embeddings.shape == (rows, dim) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(rows), atol=1e-5, rtol=0)


def test_efficientnet_lite0_recognises_the_cat():
    """The key mapping is only right if the network still classifies: chelsea() is a tabby cat."""
    tower = TimmImageTower.from_name("offline:efficientnet-lite0", None, torch.device("cpu"), "fp32")
    with torch.inference_mode():
        logits = tower.model(tower.preprocess([Image.fromarray(skimage_data.chelsea())]))
    top5 = set(logits.topk(5).indices[0].tolist())
    assert top5 & CAT_CLASSES, f"top-5 classes {sorted(top5)} contain no cat"
    assert logits.argmax().item() in CAT_CLASSES


def test_weight_mapping_fails_loudly_on_a_shape_mismatch():
    source = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_bn0.weight": torch.zeros(32)}
    target = {"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.zeros(16)}
    with pytest.raises(WeightMappingError, match=r"tensor #1: _bn0.weight \(32,\) != bn1.weight \(16,\)"):
        map_lukemelas_to_timm(source, target)
    with pytest.raises(WeightMappingError, match="not the same kind"):
        map_lukemelas_to_timm({"a.weight": torch.zeros(3)}, {"b.bias": torch.zeros(3)})


def test_offline_default_teacher(offline_teacher, photos):
    assert isinstance(offline_teacher, Teacher)
    assert (offline_teacher.text_dim, offline_teacher.image_dim) == (384, 1280)
    assert offline_teacher.shared_space is False
    text = offline_teacher.encode_text(["A cat sits on a car.", "A kitten is on top of a vehicle.", "Stock prices fell."])
    _assert_unit_rows(text, 3, 384)
    assert text[0] @ text[1] > text[0] @ text[2]
    _assert_unit_rows(offline_teacher.encode_image(photos), 2, 1280)
    identity = offline_teacher.identity
    assert identity["backend"] == "composite" and len(identity["text"]["weights_sha256"]) == 64
    assert "0.5000" in identity["image"]["preprocessing"]


def test_composite_refuses_cross_modal_similarity(offline_teacher):
    with pytest.raises(CrossModalUnavailableError, match="unrelated spaces"):
        cross_modal_similarity(offline_teacher, torch.ones(1, 384), torch.ones(1, 1280))


def test_tiny_open_clip_local_dir(tmp_path, photos):
    folder = make_tiny_open_clip(tmp_path / "tiny_open_clip")
    teacher = build_teacher(TeacherConfig(backend="open_clip", clip_model=f"local-dir:{folder}", device="cpu"))
    assert teacher.shared_space and teacher.text_dim == teacher.image_dim == 16
    _assert_unit_rows(teacher.encode_text(["a cat", "two dogs", "a car"]), 3, 16)
    _assert_unit_rows(teacher.encode_image(photos), 2, 16)
    assert cross_modal_similarity(teacher, teacher.encode_text(["a cat"]), teacher.encode_image(photos)).shape == (1, 2)


def test_tiny_open_clip_registered_name_and_checkpoint_file(tmp_path, photos):
    config_file = tmp_path / "tiny-test-clip.json"
    config_file.write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(config_file)
    checkpoint = make_tiny_open_clip(tmp_path / "weights") / "open_clip_pytorch_model.bin"
    cfg = TeacherConfig(backend="open_clip", clip_model="tiny-test-clip", clip_pretrained=str(checkpoint), device="cpu")
    teacher = build_teacher(cfg)
    _assert_unit_rows(teacher.encode_image(photos), 2, 16)
    assert teacher.identity["pretrained_tag"] is None and teacher.identity["model"] == "tiny-test-clip"


def test_tiny_transformers_clip(tmp_path, photos):
    folder = make_tiny_hf_clip(tmp_path / "tiny_hf_clip")
    teacher = build_teacher(TeacherConfig(backend="hf_clip", clip_model=str(folder), device="cpu", precision="fp32"))
    assert teacher.shared_space and teacher.text_dim == teacher.image_dim == 16
    _assert_unit_rows(teacher.encode_text(["a cat", "two dogs"]), 2, 16)
    _assert_unit_rows(teacher.encode_image(photos), 2, 16)
    processor_class = teacher.identity["preprocessing"]["class"]
    assert processor_class.startswith("CLIPImageProcessor") and "Fast" not in processor_class  # the PIL one


def test_identity_tracks_precision_and_weights(tmp_path):
    folder = make_tiny_open_clip(tmp_path / "tiny_open_clip")
    base = TeacherConfig(backend="open_clip", clip_model=f"local-dir:{folder}", device="cpu", precision="fp32")
    first, again = build_teacher(base), build_teacher(base)
    assert first.identity == again.identity
    assert build_teacher(TeacherConfig(**{**base.to_dict(), "precision": "bf16"})).identity != first.identity


@pytest.mark.parametrize(
    "cfg, expected",
    [
        (TeacherConfig(backend="open_clip", clip_model="ViT-B-32", clip_pretrained="openai"), r"(?s)tag 'openai'.*local checkpoint file"),
        (TeacherConfig(backend="open_clip", clip_model="ViT-B-32", clip_pretrained="/no/such/ckpt.bin"), r"/no/such/ckpt.bin does not exist"),
        (TeacherConfig(backend="open_clip", clip_model="ViT-B-32", clip_pretrained=None), r"no weights.*random weights"),
        (TeacherConfig(backend="open_clip", clip_model="local-dir:/no/such/dir"), r"open_clip_config.json"),
        (TeacherConfig(backend="hf_clip", clip_model="/no/such/clip"), r"CLIP folder /no/such/clip does not exist.*hub id"),
        (TeacherConfig(backend="hf_clip", clip_model="openai/clip-vit-large-patch14"), r"(?s)read as a hub id.*save_pretrained"),
        (TeacherConfig(image_model="efficientnet_bx"), r"'efficientnet_bx' is not a timm model name; did you mean efficientnet_b"),
    ],
)
def test_missing_checkpoint_says_what_and_how(cfg, expected, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingCheckpointError, match=expected):
        build_teacher(TeacherConfig(**{**cfg.to_dict(), "device": "cpu"}))
