"""The static-embedding student: one trained vector per token, a sentence is the mean of its tokens' vectors.

No transformer runs at inference: encoding is a tokeniser and an ``nn.EmbeddingBag``, which is why such a
model encodes tens of times as fast as its teacher on a CPU. The student is sentence-transformers'
``StaticEmbedding`` followed by ``Normalize`` (unit vectors, as the teacher's), so the saved model loads
with ``SentenceTransformer(path)``.

Initialisation is Model2Vec's distillation of ``student.model`` (Tulkens & van Dongen, 2024;
``model2vec.distill`` through ``StaticEmbedding.from_distillation``): every token of the model's
vocabulary (plus ``student.static_vocabulary``'s words) is encoded alone by the model, the outputs are
reduced by PCA to ``student.static_dim`` dimensions and weighted by SIF from their Zipf rank. Training
then regresses the mean-pooled vectors onto the teacher's cached sentence embeddings, which is
tokenlearn's idea (MinishLab, https://github.com/MinishLab/tokenlearn): a static model pretrained on a
teacher's embeddings of a corpus instead of on single tokens.

The distillation takes minutes (every vocabulary entry is a forward of the model), so its result is kept
under ``student.init_cache`` keyed by what produced it, and a resumed or repeated run loads it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

from distill.config import ConfigError, StudentConfig
from kdmcse_base.offline_models import resolve_model_name

INIT_MARK = "static_init.json"  # written last: a folder without it is not a finished initialisation


def build_static_encoder(cfg: StudentConfig, device: str = "cpu") -> SentenceTransformer:
    """The static student ``cfg`` describes, initialised by Model2Vec's distillation of ``cfg.model``."""
    folder = static_init_folder(cfg)
    if not (folder / INIT_MARK).is_file():
        distil_into(cfg, folder)
    return SentenceTransformer(str(folder), device=str(device))


def init_identity(cfg: StudentConfig) -> dict:
    """What decides the initial vectors: the model, the dimension, the extra words (by content)."""
    vocabulary = read_vocabulary(cfg.static_vocabulary) if cfg.static_vocabulary else []
    return {"model": cfg.model, "static_dim": cfg.static_dim,
            "vocabulary_sha256": hashlib.sha256("\n".join(vocabulary).encode()).hexdigest() if vocabulary else None}


def static_init_folder(cfg: StudentConfig) -> Path:
    identity = init_identity(cfg)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    name = cfg.model.rstrip("/").replace(":", "/").split("/")[-1] or "model"  # offline:all-MiniLM-L6-v2 -> all-MiniLM-L6-v2
    return Path(cfg.init_cache) / f"static-{name}-{cfg.static_dim or 'full'}-{key}"


def read_vocabulary(path: str) -> list[str]:
    """One word per line (blank lines ignored); a missing file is a config error naming the key."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"student.static_vocabulary: {path} is not a file (one word per line)")
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def require_model2vec() -> None:
    try:
        import model2vec.distill  # noqa: F401
    except ImportError:
        raise ConfigError("student.kind=static is initialised by Model2Vec's distillation, which needs the "
                          "'static' extra: pip install 'kdmcse-distill[static]'") from None


def distil_into(cfg: StudentConfig, folder: Path) -> None:
    """Distil ``cfg.model`` into a static model and save it as a SentenceTransformer at ``folder``: built
    in a temporary folder beside it and renamed into place, so a kill leaves no half-written folder and
    two runs building the same one at once both end with a complete copy."""
    require_model2vec()
    vocabulary = read_vocabulary(cfg.static_vocabulary) if cfg.static_vocabulary else None
    print(f"student.kind=static: distilling {cfg.model} into static token vectors with Model2Vec "
          f"(once; kept in {folder})", flush=True)
    static = StaticEmbedding.from_distillation(resolve_model_name(cfg.model), vocabulary=vocabulary, device="cpu",
                                               pca_dims=cfg.static_dim)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-{os.getpid()}-"))
    try:
        SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(scratch))
        (scratch / INIT_MARK).write_text(json.dumps(init_identity(cfg), indent=2))
        os.rename(scratch, folder)
    except OSError:
        if not (folder / INIT_MARK).is_file():  # another run finished the same folder first: use it
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
