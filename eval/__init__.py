"""Evaluators that take any SentenceTransformer and return typed results; reporting is separate.

- ``eval.encode``: ``load_model``, ``encode`` (poolers, each distinct sentence once, bf16 option),
  ``EmbeddingTable``.
- ``eval.sts``: SentEval-protocol STS12-16 / STS-B / SICK-R (``evaluate_sts``, ``STSDevEvaluator``).
- ``eval.transfer``: SentEval transfer tasks with logistic regression (``evaluate_transfer``).
- ``eval.mteb_bridge``: mteb's own STS tasks on the local files, as a cross-check.
- ``eval.report``: JSON and markdown tables in the papers' format.

Submodules are imported on demand (``from eval.sts import evaluate_sts``) so that importing one
evaluator does not pull in mteb or scikit-learn.
"""
