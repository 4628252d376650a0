"""The student truncates training batches at student.max_seq_length; its encoder keeps the base's length."""
from __future__ import annotations

import copy

import pytest
import torch

from distill.config import StudentConfig
from distill.student import GroundingHeads, Student, build_encoder, keep_layers, kept_layer_indices

WORDS = "one two three four five six seven eight nine ten eleven twelve"


def test_training_truncates_but_the_encoder_keeps_its_maximum_length(tiny_bert_dir):
    cfg = StudentConfig(model=str(tiny_bert_dir), max_seq_length=8)
    encoder = build_encoder(cfg)
    assert encoder.max_seq_length == 64  # the tiny base model's own maximum
    student = Student(encoder, cfg).eval()
    with torch.no_grad():
        training_view = student.embed([WORDS])[0]
    # [CLS] + six one-token words + [SEP] = the 8 tokens a training batch keeps
    first_six = encoder.encode(["one two three four five six"], convert_to_tensor=True)[0]
    whole = encoder.encode([WORDS], convert_to_tensor=True)[0]
    assert torch.allclose(training_view, first_six, atol=1e-5)
    assert not torch.allclose(training_view, whole, atol=1e-3)


def test_heads_without_a_caption_adapter_save_and_load(tmp_path):
    heads = GroundingHeads.create(student_dim=6, grounding_dim=4, teacher_text_dim=None, teacher_image_dim=5)
    heads.save(tmp_path / "heads.pt")
    loaded = GroundingHeads.load(tmp_path / "heads.pt")
    assert loaded.caption_adapter is None and loaded.image_adapter[0].in_features == 5
    assert torch.equal(loaded.grounding[0].weight, heads.grounding[0].weight)


def test_spread_layers_are_evenly_spaced_from_the_first():
    assert kept_layer_indices(6, 3, "spread") == [0, 2, 4]  # sentence-transformers' every other layer
    assert kept_layer_indices(12, 4, "spread") == [0, 3, 6, 9]
    assert kept_layer_indices(12, 6, "spread") == [0, 2, 4, 6, 8, 10]
    assert kept_layer_indices(6, 3, "first") == [0, 1, 2]
    assert kept_layer_indices(6, 6, "spread") == list(range(6))
    with pytest.raises(ValueError, match="student.layers=7: the model has 6 layers"):
        kept_layer_indices(6, 7, "spread")


def test_spread_layers_keep_those_layers_weights_and_the_model_reloads(tiny_bert_dir, tmp_path):
    """From a 4-layer model, layers: 2 spread keeps layers 0 and 2 (weights unchanged); the saved encoder
    reloads with two layers and embeds as before."""
    full = build_encoder(StudentConfig(model=str(tiny_bert_dir)))
    layer_list = full[0].auto_model.encoder.layer
    layer_list.extend(copy.deepcopy(layer_list))  # 4 layers, the last two copies with new random weights
    for layer in layer_list[2:]:
        for parameter in layer.parameters():
            torch.nn.init.normal_(parameter)
    full[0].auto_model.config.num_hidden_layers = 4
    originals = [copy.deepcopy(layer_list[i].state_dict()) for i in (0, 2)]
    keep_layers(full, 2, "spread")
    kept = full[0].auto_model.encoder.layer
    assert len(kept) == 2 and full[0].auto_model.config.num_hidden_layers == 2
    for layer, original in zip(kept, originals):
        assert all(torch.equal(layer.state_dict()[k], v) for k, v in original.items())
    full.save(str(tmp_path / "cut"))
    reloaded = build_encoder(StudentConfig(model=str(tmp_path / "cut")))
    assert len(reloaded[0].auto_model.encoder.layer) == 2
    assert torch.allclose(reloaded.encode([WORDS], convert_to_tensor=True),
                          full.encode([WORDS], convert_to_tensor=True), atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_swaps_the_pooling_module_and_keeps_the_rest(tiny_bert_dir, tmp_path, pooling):
    """A sentence-transformers base with Normalize and its own maximum length: only Pooling changes."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    base = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    base.append(Normalize())
    base.max_seq_length = 48
    base.save(str(tmp_path / "base"))

    encoder = build_encoder(StudentConfig(model=str(tmp_path / "base"), pooling=pooling))
    assert [type(m).__name__ for m in encoder] == ["Transformer", "Pooling", "Normalize"]
    assert encoder[1].pooling_mode == pooling and encoder.max_seq_length == 48
    encoder.save(str(tmp_path / "saved"))
    reloaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert [type(m) for m in reloaded][1:] == [Pooling, Normalize] and reloaded.max_seq_length == 48
    plain = build_encoder(StudentConfig(model=str(tiny_bert_dir), pooling=pooling))  # a bare HF folder
    assert [type(m).__name__ for m in plain] == ["Transformer", "Pooling"] and plain[1].pooling_mode == pooling
