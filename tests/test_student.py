"""The student truncates training batches at student.max_seq_length; its encoder keeps the base's length."""
from __future__ import annotations

import torch

from distill.config import StudentConfig
from distill.student import GroundingHeads, Student, build_encoder

WORDS = "one two three four five six seven eight nine ten eleven twelve"


def test_training_truncates_but_the_encoder_keeps_its_maximum_length(tiny_bert_dir):
    cfg = StudentConfig(model=str(tiny_bert_dir), max_seq_length=8)
    encoder = build_encoder(cfg)
    assert encoder.max_seq_length == 64  # the tiny base model's own maximum
    student = Student(encoder, cfg, teacher_text_dim=32, teacher_image_dim=None).eval()
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
