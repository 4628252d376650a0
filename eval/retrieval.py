"""Image-text retrieval in the student's grounding space, with optional MMRef re-ranking.

Protocol (the Flickr30k/COCO one of VSE++, SCAN and their successors):

* gallery = the run's held-out images (never trained on), queries = all their captions;
* score = cosine of ``heads.ground(student(caption))`` and ``heads.adapt_images(teacher(image))``;
* text-to-image R@k: share of captions whose own image is among the k best images;
* image-to-text R@k: share of images for which *any* of their captions is among the k best captions;
* rSum = i2t R@1 + R@5 + R@10 + t2i R@1 + R@5 + R@10, every recall x100 (600 is perfect).

Ties are resolved pessimistically: a wrong item scoring exactly as high as the right one is ranked
ahead of it, so a constant similarity matrix scores (nearly) zero rather than perfectly.

Reference-based re-ranking (``rerank_beta``; MMRef, arXiv 2504.07718) fuses every query-image score
with the query's score against the image's multi-modal reference,
``S = (1 - beta) cos(q, v_m) + beta cos(q, r_m)``
(:func:`distill.losses.mmref.rerank_with_references`). References are built *in grounding space*:
``r_m = normalize(alpha adapt_images(v_m) + (1 - alpha) mean_c adapt_captions(t_c))``
(:func:`distill.losses.mmref.build_references` on the adapted vectors). Fusing after the adapters
is what makes image and caption vectors comparable for any teacher: a composite teacher's text and
image towers have unrelated spaces and even different widths, and the student is scored against the
adapted vectors anyway. This option, and only this option, reads the teacher's caption embeddings of
the held-out images, as MMRef uses gallery-side text at retrieval time. By default a caption is never
part of the reference it is scored against (``leave_query_out``): otherwise a query would meet its own
teacher embedding inside its target's reference. Re-ranked numbers still use the other captions of
each gallery image, so they are not comparable with plain retrieval numbers. The same fused matrix
serves both directions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from distill.config import RunConfig, load_config
from kdmcse_base.data_files import resolve_data_dir
from distill.losses.mmref import build_references, rerank_with_references
from distill.run_folder import HEADS_FILE, RunFolder
from distill.pools import open_run_cache
from distill.student import GroundingHeads
from teacher_cache import TeacherCache

from .encode import encode, load_model

RECALL_KS: tuple[int, ...] = (1, 5, 10)
_HOLDOUT_HINT = (
    "train with images held out, e.g. `python scripts/train_student.py --config configs/kdmcse_offline.yaml "
    "train.retrieval_holdout_images=97` (any value > 0)"
)


class RetrievalRunError(ValueError):
    """A run directory lacks something retrieval evaluation needs; the message says what and how to get it."""


@dataclass(frozen=True)
class RetrievalResult:
    """Recall@k x100 (2 decimals) in both directions, their sum, and what they were computed on."""

    i2t_r1: float
    i2t_r5: float
    i2t_r10: float
    t2i_r1: float
    t2i_r5: float
    t2i_r10: float
    rsum: float
    n_images: int
    n_captions: int
    rerank_beta: float | None = None
    """None = plain cosine retrieval; else the MMRef reference weight used."""
    alpha: float | None = None
    """Image weight of the references (re-ranking only)."""
    leave_query_out: bool | None = None
    """Whether a caption was kept out of the reference it was scored against (re-ranking only)."""

    def to_dict(self) -> dict:
        return asdict(self)


# --- metrics ---------------------------------------------------------------------------------------


def retrieval_metrics(
    similarity: np.ndarray | Tensor, caption_image_index: np.ndarray | Tensor | list[int]
) -> RetrievalResult:
    """R@1/5/10 both ways and rSum from a ``[Q captions, M images]`` score matrix (higher = closer).

    ``caption_image_index[q]`` is the column of caption q's image. Every image needs at least one
    caption. Ranks are pessimistic on ties (module docstring).
    """
    sim, index = _check_inputs(similarity, caption_image_index)
    t2i = _recalls(_text_to_image_ranks(sim, index))
    i2t = _recalls(_image_to_text_ranks(sim, index))
    return RetrievalResult(
        i2t_r1=i2t[1], i2t_r5=i2t[5], i2t_r10=i2t[10],
        t2i_r1=t2i[1], t2i_r5=t2i[5], t2i_r10=t2i[10],
        rsum=round(sum(i2t.values()) + sum(t2i.values()), 2),
        n_images=sim.shape[1], n_captions=sim.shape[0],
    )


def _check_inputs(similarity, caption_image_index) -> tuple[Tensor, Tensor]:
    sim = torch.as_tensor(similarity).detach().cpu()
    index = torch.as_tensor(np.asarray(caption_image_index), dtype=torch.long).reshape(-1)
    if sim.dim() != 2 or sim.shape[0] != len(index):
        raise ValueError(f"similarity must be [Q, M] with Q = {len(index)} captions, got {tuple(sim.shape)}")
    if not torch.isfinite(sim).all():
        raise ValueError("similarity holds NaN or infinite values")
    if len(index) and (index.min() < 0 or index.max() >= sim.shape[1]):
        raise ValueError(f"caption_image_index must lie in [0, {sim.shape[1]})")
    without = sorted(set(range(sim.shape[1])) - set(index.tolist()))
    if without:
        raise ValueError(f"image column(s) {without[:10]} have no caption; image-to-text recall is undefined")
    return sim, index


def _text_to_image_ranks(sim: Tensor, index: Tensor) -> Tensor:
    """0-based rank of each caption's image: wrong images scoring >= the right one."""
    own = sim[torch.arange(len(index)), index]
    return (sim >= own[:, None]).sum(dim=1) - 1


def _image_to_text_ranks(sim: Tensor, index: Tensor) -> Tensor:
    """0-based rank of each image's best caption: other images' captions scoring >= it."""
    is_own = torch.zeros_like(sim, dtype=torch.bool)
    is_own[torch.arange(len(index)), index] = True
    best_own = sim.masked_fill(~is_own, -torch.inf).max(dim=0).values
    return ((sim >= best_own[None, :]) & ~is_own).sum(dim=0)


def _recalls(ranks: Tensor) -> dict[int, float]:
    return {k: round(100.0 * (ranks < k).double().mean().item(), 2) for k in RECALL_KS}


# --- scoring a model -------------------------------------------------------------------------------


def evaluate_retrieval(
    encoder: SentenceTransformer,
    heads: GroundingHeads,
    teacher_images: Tensor,
    captions: list[str],
    caption_image_index: np.ndarray | Tensor | list[int],
    *,
    teacher_captions: Tensor | None = None,
    rerank_beta: float | None = None,
    alpha: float = 0.5,
    leave_query_out: bool = True,
    batch_size: int = 128,
    show_progress: bool = False,
) -> RetrievalResult:
    """Retrieval between ``captions`` (student, pooler "model", then ``heads.ground``) and images
    (``heads.adapt_images`` of the teacher's ``[M, d_i]`` embeddings).

    With ``rerank_beta`` the scores are MMRef-re-ranked (module docstring); that needs
    ``teacher_captions``, the teacher's ``[Q, d_t]`` embeddings of ``captions`` in the same order.
    """
    index = torch.as_tensor(np.asarray(caption_image_index), dtype=torch.long).reshape(-1)
    if len(captions) != len(index):
        raise ValueError(f"{len(captions)} captions but {len(index)} entries in caption_image_index")
    if rerank_beta is not None:
        _check_rerank_inputs(rerank_beta, alpha, teacher_captions, len(captions))
    text = _ground_captions(encoder, heads, captions, batch_size, show_progress)
    device = _device(heads)
    with torch.no_grad():
        images = heads.adapt_images(teacher_images.to(device, torch.float32))
        sim = text @ images.T
        if rerank_beta is not None:
            adapted_captions = heads.adapt_captions(teacher_captions.to(device, torch.float32))
            refs = reference_similarity(text, images, adapted_captions, index, alpha, leave_query_out)
            sim = rerank_with_references(sim, refs, rerank_beta)
    result = retrieval_metrics(sim, index)
    if rerank_beta is None:
        return result
    return replace(result, rerank_beta=rerank_beta, alpha=alpha, leave_query_out=leave_query_out)


def reference_similarity(
    queries: Tensor, images: Tensor, captions: Tensor, caption_image_index: Tensor, alpha: float = 0.5,
    leave_query_out: bool = True,
) -> Tensor:
    """``[Q, M]`` cosines of grounded queries with per-image references, all in grounding space.

    ``images`` ``[M, g]`` and ``captions`` ``[Q, g]`` are the adapted teacher vectors; caption q
    belongs to image ``caption_image_index[q]``. With ``leave_query_out`` entry ``(q, own image)``
    uses the reference built without caption q (an image left with no caption: its image vector).
    """
    index = caption_image_index.to(images.device)
    scores = queries @ build_references(images, captions, alpha, caption_image_index=index).T
    if leave_query_out:
        own = _leave_one_out_references(images, captions, index, alpha)
        scores[torch.arange(len(index)), index] = (queries * own).sum(dim=-1).to(scores.dtype)
    return scores


def _leave_one_out_references(images: Tensor, captions: Tensor, index: Tensor, alpha: float) -> Tensor:
    """Row q: the reference of caption q's image built from that image's *other* captions."""
    query, other = _same_image_pairs(index.cpu())
    return build_references(images[index], captions[other.to(images.device)], alpha,
                            caption_image_index=query.to(images.device))


def _same_image_pairs(index: Tensor) -> tuple[Tensor, Tensor]:
    """All (q, c) with q != c and both captions of the same image."""
    queries, others = [], []
    for image in index.unique().tolist():
        members = (index == image).nonzero().flatten()
        pairs = torch.cartesian_prod(members, members) if len(members) > 1 else members.new_zeros((0, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        queries.append(pairs[:, 0])
        others.append(pairs[:, 1])
    if not queries:
        return index.new_zeros(0), index.new_zeros(0)
    return torch.cat(queries), torch.cat(others)


def _ground_captions(encoder: SentenceTransformer, heads: GroundingHeads, captions: list[str], batch_size: int,
                     show_progress: bool) -> Tensor:
    vectors = encode(encoder, captions, pooler="model", batch_size=batch_size, show_progress=show_progress)
    with torch.no_grad():
        return heads.ground(torch.from_numpy(vectors).to(_device(heads)))


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _check_rerank_inputs(beta: float, alpha: float, teacher_captions: Tensor | None, n_captions: int) -> None:
    for name, value in (("rerank_beta", beta), ("alpha", alpha)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if teacher_captions is None:
        raise ValueError("re-ranking needs teacher_captions: the teacher's embeddings of the captions, in order")
    if len(teacher_captions) != n_captions:
        raise ValueError(f"teacher_captions has {len(teacher_captions)} rows for {n_captions} captions")


# --- a trained run ---------------------------------------------------------------------------------


@dataclass
class RetrievalRun:
    """Everything ``evaluate_retrieval`` needs, read from a run directory and its teacher cache."""

    encoder: SentenceTransformer
    heads: GroundingHeads
    teacher_images: Tensor
    captions: list[str]
    caption_image_index: np.ndarray
    image_ids: list[str]
    teacher_captions: Tensor | None = None

    def evaluate(self, rerank_beta: float | None = None, alpha: float = 0.5, leave_query_out: bool = True,
                 batch_size: int = 128, show_progress: bool = False) -> RetrievalResult:
        """:func:`evaluate_retrieval` on this run (re-ranking needs it loaded ``with_teacher_captions``)."""
        return evaluate_retrieval(
            self.encoder, self.heads, self.teacher_images, self.captions, self.caption_image_index,
            teacher_captions=self.teacher_captions, rerank_beta=rerank_beta, alpha=alpha,
            leave_query_out=leave_query_out, batch_size=batch_size, show_progress=show_progress,
        )


def evaluate_run_retrieval(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    rerank_beta: float | None = None,
    alpha: float = 0.5,
    batch_size: int = 128,
    device: str | None = None,
    leave_query_out: bool = True,
    show_progress: bool = False,
) -> RetrievalResult:
    """Retrieval on the held-out images of a training run (``<run>/model``, its grounding heads, the
    teacher cache of ``<run>/config.yaml``, ``heldout_image_ids`` of ``<run>/train_summary.json``).

    The cache is opened as in training (``distill.pools.open_run_cache``: ``train.teacher_cache``, or the cache
    of the run's teacher, data and shard size under ``cache_root``, read from the current directory when relative; a
    missing cache is built).
    Captions and their images come from the cache, so any image source the run held images out of works.
    """
    run = load_retrieval_run(run_dir, data_dir, with_teacher_captions=rerank_beta is not None, device=device)
    return run.evaluate(rerank_beta, alpha, leave_query_out, batch_size, show_progress)


def load_retrieval_run(
    run_dir: str | Path, data_dir: str | Path | None = None, with_teacher_captions: bool = False,
    device: str | None = None,
) -> RetrievalRun:
    """Load a run's encoder, heads, held-out images (teacher vectors) and their captions."""
    run = Path(run_dir)
    heads_path, cfg, heldout = _run_files(run)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    heads = GroundingHeads.load(heads_path, map_location=device)
    if heads.image_adapter is None:
        raise RetrievalRunError(f"{heads_path} has no image adapter: the run was trained without image-caption "
                                "batches; train with an image source (e.g. coco2017_mini) in both data.image_sources "
                                "and data.text_sources")
    data_root = resolve_data_dir(data_dir or cfg.data_dir)
    cache = open_run_cache(cfg, data_root)
    heldout_rows, rows = _heldout_rows(cache, heldout)
    teacher_captions = None
    if with_teacher_captions:  # gallery-side text: read only for re-ranking
        teacher_captions = cache.text(rows, device)
    return RetrievalRun(
        encoder=load_model(run / "model", device=device),
        heads=heads,
        teacher_images=cache.image(heldout_rows, device),
        captions=cache.texts.take(rows),
        caption_image_index=_positions(heldout_rows, cache.caption_image_rows[rows]),
        image_ids=list(heldout),
        teacher_captions=teacher_captions,
    )


def _run_files(run: Path) -> tuple[Path, RunConfig, list[str]]:
    """(heads path, RunConfig, held-out image ids) of a run, or a RetrievalRunError naming what is missing."""
    folder = RunFolder(run)
    if not folder.model.is_dir():
        raise RetrievalRunError(f"{run} has no model/ folder: not a finished training run (scripts/train_student.py "
                                "writes model/ when training ends)")
    if not folder.heads.is_file():
        raise RetrievalRunError(f"{run / HEADS_FILE} is missing: the trainer saves the grounding heads when a loss "
                                "term trains them (loss.multimodal, or a module reading the grounding space); this "
                                "run's objective had none, so it has no image-text space to retrieve in")
    for path in (folder.config, folder.summary):
        if not path.is_file():
            raise RetrievalRunError(f"{path} is missing: scripts/train_student.py writes it; was training finished?")
    heldout = folder.heldout_image_ids()
    if not heldout:
        raise RetrievalRunError(f"{folder.summary} lists no heldout_image_ids: every image was trained on, so "
                                f"retrieval would be scored on training data; {_HOLDOUT_HINT}")
    return folder.heads, load_config(folder.config), heldout


def _heldout_rows(cache: TeacherCache, heldout: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(image rows of the held-out images, cache text rows of their captions in cache order), whatever
    image source (Flickr30k, COCO, coco2017_mini, user data) they come from: the cache records each
    caption's image."""
    try:
        image_rows = cache.image_index(heldout)
    except KeyError as err:
        raise RetrievalRunError(f"{err.args[0]}: is this the cache the run was trained on?") from None
    rows = np.flatnonzero(np.isin(cache.caption_image_rows, image_rows))
    captioned = set(cache.caption_image_rows[rows].tolist())
    missing = [image_id for image_id, row in zip(heldout, image_rows.tolist()) if row not in captioned]
    if missing:
        raise RetrievalRunError(f"held-out image(s) {sorted(missing)[:5]} have no caption in teacher cache "
                                f"{cache.path}: is this the cache the run was trained on?")
    return image_rows, rows


def _positions(heldout_rows: np.ndarray, image_rows: np.ndarray) -> np.ndarray:
    """The position in ``heldout_rows`` of each of ``image_rows`` (all of which are held out)."""
    position = {int(row): i for i, row in enumerate(heldout_rows)}
    return np.array([position[int(row)] for row in image_rows], dtype=np.int64)
