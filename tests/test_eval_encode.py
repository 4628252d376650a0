"""eval.encode on a tiny random BERT: poolers against hand-computed values, dedupe, order, modes.

Exact comparisons run in fp32 (``bf16=False``, also the default); bf16 is checked separately.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from eval.encode import POOLERS, EmbeddingTable, encode, hf_transformer, load_model

SENTENCES = [
    "a man plays the guitar .",
    "hello",
    "a man plays the guitar .",
    "the quick brown fox jumps over the lazy dog near the river bank",
    "",
    "hello",
]


@pytest.fixture(scope="module")
def raw_bert(tiny_bert_dir):
    """The same weights loaded as a plain transformers BertModel, to compute poolers by hand."""
    return AutoModel.from_pretrained(str(tiny_bert_dir)).eval(), AutoTokenizer.from_pretrained(str(tiny_bert_dir))


def _by_hand(raw_bert, sentences):
    model, tokenizer = raw_bert
    with torch.no_grad():
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return model(**batch), batch["attention_mask"]


def test_cls_before_pooler_is_the_raw_cls_hidden_state(tiny_st, raw_bert):
    output, _ = _by_hand(raw_bert, SENTENCES)
    ours = encode(tiny_st, SENTENCES, pooler="cls_before_pooler", bf16=False, show_progress=False)
    np.testing.assert_allclose(ours, output.last_hidden_state[:, 0].numpy(), atol=1e-5)


def test_cls_is_the_bert_pooler_output(tiny_st, raw_bert):
    output, _ = _by_hand(raw_bert, SENTENCES)
    ours = encode(tiny_st, SENTENCES, pooler="cls", bf16=False, show_progress=False)
    np.testing.assert_allclose(ours, output.pooler_output.numpy(), atol=1e-5)


def test_mean_is_the_masked_token_mean(tiny_st, raw_bert):
    output, mask = _by_hand(raw_bert, SENTENCES)
    mask = mask.unsqueeze(-1).float()
    expected = (output.last_hidden_state * mask).sum(1) / mask.sum(1)
    ours = encode(tiny_st, SENTENCES, pooler="mean", bf16=False, show_progress=False)
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)


def test_model_pooler_matches_sentence_transformers_encode(tiny_st):
    expected = tiny_st.encode(SENTENCES, convert_to_numpy=True, show_progress_bar=False)
    ours = encode(tiny_st, SENTENCES, pooler="model", bf16=False, show_progress=False)
    assert ours.dtype == np.float32 and ours.shape == (len(SENTENCES), 32)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_each_distinct_sentence_is_encoded_once_and_order_is_restored(tiny_st, encoded_sentences):
    seen = encoded_sentences
    vectors = encode(tiny_st, SENTENCES, pooler="mean", batch_size=2, bf16=False, show_progress=False)
    assert seen == Counter(set(SENTENCES))  # 4 distinct sentences, each exactly once
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[1], vectors[5])
    single = encode(tiny_st, [SENTENCES[3]], pooler="mean", bf16=False, show_progress=False)
    np.testing.assert_allclose(vectors[3], single[0], atol=1e-5)


def test_default_precision_is_fp32(tiny_st):
    """Papers' numbers are fp32: the default output is the fp32 one bit for bit, and bf16 differs."""
    default = encode(tiny_st, SENTENCES, pooler="mean", show_progress=False)
    np.testing.assert_array_equal(default, encode(tiny_st, SENTENCES, pooler="mean", bf16=False, show_progress=False))
    assert not np.array_equal(default, encode(tiny_st, SENTENCES, pooler="mean", bf16=True, show_progress=False))


def test_a_bare_string_is_rejected(tiny_st):
    with pytest.raises(TypeError, match="sequence of sentences"):
        encode(tiny_st, "just one sentence", show_progress=False)


def test_empty_input_gives_an_empty_matrix(tiny_st):
    assert encode(tiny_st, [], pooler="model", show_progress=False).shape == (0, 32)
    assert encode(tiny_st, [], pooler="cls_before_pooler", show_progress=False).shape == (0, 32)


def test_bf16_returns_float32_close_to_fp32(tiny_st):
    fp32 = encode(tiny_st, SENTENCES, pooler="mean", bf16=False, show_progress=False)
    bf16 = encode(tiny_st, SENTENCES, pooler="mean", bf16=True, show_progress=False)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_training_mode_is_restored(tiny_st):
    tiny_st.train()
    try:
        encode(tiny_st, SENTENCES[:2], show_progress=False)
        assert tiny_st.training
    finally:
        tiny_st.eval()


def test_bad_pooler_and_missing_bert_pooler_are_clear_errors(tiny_st):
    with pytest.raises(ValueError, match="unknown pooler 'avg'"):
        encode(tiny_st, SENTENCES, pooler="avg", show_progress=False)
    bert = hf_transformer(tiny_st)
    pooler, bert.pooler = bert.pooler, None  # as BertModel(add_pooling_layer=False); not monkeypatch:
    try:  # its undo cannot restore a torch submodule
        with pytest.raises(ValueError, match="pooler='cls' needs the BERT pooler"):
            encode(tiny_st, SENTENCES, pooler="cls", show_progress=False)
    finally:
        bert.pooler = pooler
    assert set(POOLERS) == {"model", "cls", "cls_before_pooler", "mean"}


def test_load_model_accepts_path_string_and_object(tiny_bert_dir, tiny_st):
    assert load_model(tiny_st) is tiny_st
    for reference in (tiny_bert_dir, str(tiny_bert_dir)):
        loaded = load_model(reference, device="cpu")
        expected = encode(tiny_st, SENTENCES[:2], show_progress=False)
        np.testing.assert_allclose(encode(loaded, SENTENCES[:2], show_progress=False), expected, atol=1e-6)


def test_offline_alias_resolves_to_the_packaged_minilm():
    from kdmcse_base.offline_models import MINILM_ALIAS, resolve_model_name

    assert (resolve_model_name(MINILM_ALIAS).rstrip("/") + "/").count("/") > 1
    assert resolve_model_name("some/hub-id") == "some/hub-id"


def test_embedding_table_looks_up_rows_by_text(tiny_st):
    table = EmbeddingTable.build(tiny_st, SENTENCES, pooler="mean", show_progress=False)
    assert len(table) == 4
    np.testing.assert_array_equal(table[["hello", "hello"]][0], table[["hello"]][0])
    with pytest.raises(KeyError):
        table[["never encoded"]]
