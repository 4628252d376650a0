"""sentence-transformers' own layer-reduction distillation recipe, run as a row of the offline benchmark.

This is the recipe a user compressing a sentence encoder would otherwise reach for (sentence-transformers'
``model_distillation_layer_reduction`` example), run on this benchmark's data, budget, seeds and
selection so the two can be set side by side:

* student: the teacher model with ``student.layers`` *spread-out* layers kept (0, 2, 4 of
  all-MiniLM-L6-v2's 6, as the example keeps every other layer). It trains (and scores dev) at
  ``student.max_seq_length`` tokens, as every other row does, so the rows see the same inputs at the same
  cost per step; the saved model gets the model's own maximum length back;
* targets: the teacher's sentence embeddings, read from the project's teacher cache (the same rows and
  vectors every other row of the benchmark trains on: the text pool and the training captions, held-out
  retrieval images' captions excluded);
* loss: ``losses.MSELoss`` through ``SentenceTransformerTrainer``: AdamW at ``train.lr`` (the benchmark's
  ``--lr``, 1e-4 by default) with 10% warm-up and linear decay, batch 64, the benchmark's step budget and seed;
* precision: ``train.precision`` as the trainer's ``bf16`` / ``fp16`` autocast flags. The ``st_recipe`` row
  trains in fp32, as the example does (both flags off); ``st_recipe_bf16`` under the bf16 autocast the
  project's rows use, so a race can compare the two trainers at one precision;
* selection: STS-B dev (``EmbeddingSimilarityEvaluator``, cosine Spearman) every ``train.eval_every``
  steps (the benchmarks: 10% of the budget), the best checkpoint loaded at the end
  (``load_best_model_at_end``). Test sets are not touched here.

Its training time is counted as the project's trainer counts its own: from the first step to the end of
the last, without the dev evaluations and the checkpoints written after them (``TrainingClock``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

WARMUP_RATIO = 0.1
DEV_METRIC = "eval_sts-dev_spearman_cosine"


def train_st_recipe(cfg, out: Path) -> Path:
    """Train the recipe for ``cfg.train.max_steps`` steps; returns the saved model folder.

    Writes ``train_summary.json`` with the fields the benchmark report reads (steps, best step and dev
    score, train seconds, steps/s, the dev history) and ``config.yaml``, the run's resolved config."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from dataclasses import replace

    from distill.config import save_config
    from kdmcse_base.machine import resolve_precision
    from distill.pools import build_pools, open_run_cache
    from distill.run_folder import RunFolder, TrainSummary
    from distill.st_losses import cache_dataset
    from distill.student import build_encoder
    from eval.data.sts import load_stsb
    from teacher_cache.corpora import resolve_data_dir

    torch.manual_seed(cfg.train.seed)
    cfg = replace(cfg, student=replace(cfg.student, layer_choice="spread"))
    student = build_encoder(cfg.student)
    full_length, student.max_seq_length = student.max_seq_length, cfg.student.max_seq_length
    cache = open_run_cache(cfg, resolve_data_dir(cfg.data_dir))
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    rows = sorted([*pools.text_rows.tolist(), *pools.paired_text_rows.tolist()])
    train_set = cache_dataset(cache, rows)
    dev = load_stsb("dev", cfg.eval_data_dir or cfg.data_dir)
    evaluator = EmbeddingSimilarityEvaluator([p.sentence1 for p in dev], [p.sentence2 for p in dev],
                                             [p.score for p in dev], name="sts-dev")
    steps, every = cfg.train.max_steps, cfg.train.eval_every
    precision = resolve_precision(cfg.train.precision, "cuda" if torch.cuda.is_available() else "cpu")
    cfg = replace(cfg, train=replace(cfg.train, precision=precision))  # what config.yaml says
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st_trainer"), max_steps=steps, per_device_train_batch_size=cfg.train.batch_size,
        learning_rate=cfg.train.lr, warmup_ratio=WARMUP_RATIO, seed=cfg.train.seed, data_seed=cfg.train.seed,
        eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=2,
        metric_for_best_model=DEV_METRIC, load_best_model_at_end=True, logging_steps=every,
        report_to="none", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
        bf16=precision == "bf16", fp16=precision == "fp16",
    )
    from eval.training_clock import training_clock

    clock = training_clock()
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=train_set,
                                         loss=MSELoss(student), evaluator=evaluator, callbacks=[clock])
    trainer.train()
    seconds = clock.seconds
    folder = RunFolder(out)
    student.max_seq_length = full_length
    student.save(str(folder.model))
    shutil.rmtree(out / "st_trainer", ignore_errors=True)
    history = [(int(e["step"]), 100 * e[DEV_METRIC]) for e in trainer.state.log_history if DEV_METRIC in e]
    best_step, best = max(history, key=lambda item: (item[1], -item[0]))
    save_config(cfg, folder.config)  # what was trained (its optimiser settings are the trainer's, above)
    folder.write_summary(TrainSummary(
        steps=steps, best_step=best_step, best_stsb_dev=best, train_seconds=seconds, dev_history=history,
        device="cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        effective_batch_size=cfg.train.batch_size))
    return folder.model
