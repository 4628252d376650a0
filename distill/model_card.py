"""The student's own model card: what it is, how to load it, how it was distilled, what it scores.

The YAML header comes from sentence-transformers' model card data
(``SentenceTransformerModelCardData``: tags, base model, language, library), so the Hugging Face hub
lists the folder as a sentence-transformers model; the body is written here because the facts that
matter (teacher, losses and weights, dev score of this checkpoint) are the run's, not a trainer's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData

import distill.terms  # noqa: F401  (the project's terms, registered: the loss table asks each of itself)
from distill.config import TRANSFORMER_EXPORTS, LossConfig, RunConfig, StudentConfig, to_dict
from distill.export import EXPORT_FILES
from distill.run_folder import run_of
from distill.term import card_rows
from kdmcse_base.files import atomic_write
from kdmcse_base.offline_models import EFFICIENTNET_ALIAS, MINILM_ALIAS, resolve_model_name
from teacher_cache.towers.config import TeacherConfig

PROJECT_TAG = "kdmcse-distill"  # the hub tag that marks a card this project's trainer wrote

# What the offline aliases load, named as the hub knows them.
HUB_NAMES = {MINILM_ALIAS: "sentence-transformers/all-MiniLM-L6-v2",
             EFFICIENTNET_ALIAS: "EfficientNet-Lite0 (ImageNet)"}


def write_model_card(model_dir: Path, cfg: RunConfig, teacher_manifest: dict[str, Any], state,
                     results: dict[str, float] | None = None) -> None:
    """Write ``model_dir/README.md`` for the saved student (replacing the card of the model it started from).

    ``state`` is the trainer's RunState (steps, best dev score and step, dev history); ``results``
    optionally adds further scores of this checkpoint, e.g. ``{"STS avg": 76.1, "MR": 80.2}``.
    """
    model = SentenceTransformer(str(model_dir), device="cpu")
    header = card_header(model, cfg)
    body = card_body(model, cfg, teacher_manifest, state, results or {}, Path(model_dir))
    (Path(model_dir) / "README.md").write_text(f"---\n{header}\n---\n\n{body}")


def card_header(model: SentenceTransformer, cfg: RunConfig) -> str:
    """The YAML metadata block, from sentence-transformers' own model card data."""
    data = SentenceTransformerModelCardData(
        language="en", model_name=f"{cfg.name} (kdmcse-distill student)", local_files_only=True,
        generate_widget_examples=False)
    data.add_tags(["knowledge-distillation", PROJECT_TAG])
    base = HUB_NAMES.get(cfg.student.model, cfg.student.model)
    if _looks_like_hub_id(base):
        data.base_model = base
    data.license = cfg.card.license or base_license(cfg.student.model)
    model.model_card_data = data
    data.register_model(model)
    return data.to_yaml()


def base_license(model: str) -> str | None:
    """The licence the base model's own card names (its local folder, or the hub cache), else None."""
    from huggingface_hub import try_to_load_from_cache

    folder = Path(resolve_model_name(model))
    if folder.is_dir():
        readme = folder / "README.md"
    else:
        cached = try_to_load_from_cache(model, "README.md") if _looks_like_hub_id(model) else None
        readme = Path(cached) if isinstance(cached, str) else None
    if readme is None or not readme.is_file():
        return None
    header = card_header_of(readme.read_text())
    return header.get("license") if isinstance(header.get("license"), str) else None


def card_header_of(text: str) -> dict[str, Any]:
    """The YAML metadata block at the top of a model card (empty when it has none)."""
    if not text.startswith("---\n"):
        return {}
    block = text[4:].split("\n---\n", 1)[0]
    try:
        header = yaml.safe_load(block)
    except yaml.YAMLError:
        return {}
    return header if isinstance(header, dict) else {}


def portable(value: Any, root: Path) -> Any:
    """``value`` with every absolute path made relative to ``root`` (the working directory of the run),
    or cut to ``<local>/<name>`` outside it, so a published card names no machine's folders."""
    if isinstance(value, dict):
        return {key: portable(item, root) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item, root) for item in value]
    if isinstance(value, str) and Path(value).is_absolute():
        path = Path(value)
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else f"<local>/{path.name}"
    return value


def _layer_note(student: StudentConfig) -> str:
    """What kind of student this is, after its base model's name."""
    if student.kind == "static":
        return (" as a **static-embedding model** (one vector per token, a sentence is their mean: no "
                "transformer runs at inference; initialised by Model2Vec's distillation, then trained on the "
                "teacher's embeddings)")
    if not student.layers:
        return ""
    which = "the first" if student.layer_choice == "first" else "spread over the model"
    return f", a **transformer cut** to {student.layers} layer{'s' if student.layers > 1 else ''} ({which})"


def _length_note(model: SentenceTransformer) -> str:
    if model.max_seq_length is None or model.max_seq_length == float("inf"):
        return "inputs of any length are read whole"
    return f"inputs longer than {model.max_seq_length} tokens are truncated"


FRONTIER_NOTE = ("How each kind of student (static embeddings, transformer cuts of 1 to 4 layers) trades speed "
                 "for quality on one teacher cache, against Model2Vec and sentence-transformers' layer "
                 "reduction: kdmcse-distill's `reports/student_frontier.md`.")


def card_body(model: SentenceTransformer, cfg: RunConfig, manifest: dict[str, Any], state,
              results: dict[str, float], model_dir: Path) -> str:
    root = Path.cwd()
    base = portable(HUB_NAMES.get(cfg.student.model, cfg.student.model), root)
    layers = _layer_note(cfg.student)
    load = cfg.card.repo_id or "path/to/this/folder"
    return f"""# {cfg.name}: a distilled sentence encoder

A [sentence-transformers](https://www.sbert.net) model distilled with kdmcse-distill from the teacher
**{teacher_name(cfg.teacher)}** into the student **`{base}`**{layers}. It maps a sentence to a
{model.get_embedding_dimension()}-dimensional vector (cosine similarity); {_length_note(model)}.
{FRONTIER_NOTE}

## Usage

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{load}")
embeddings = model.encode(["A man is playing a guitar.", "Someone plays an instrument."])
print(model.similarity(embeddings, embeddings))
```
{deploy_block(Path(model_dir))}
## Results of this checkpoint

{results_table(state, results)}

Spearman correlation x100; STS-B dev is scored at the model's own maximum length, as in the
SentEval protocol. The checkpoint is the step with the best STS-B dev score.

## Training

- **Base model (student):** `{base}`{layers}; {_training_shape(cfg.student, model)}.
- **Teacher (frozen, embeddings cached once):** {teacher_name(cfg.teacher)}; cache fingerprint
  `{manifest.get("fingerprint", "?")}`.
- **Training data:** {training_data(cfg, manifest)}
- **Steps:** {state.step} ({state.train_seconds / 60:.1f} min), batch size {cfg.train.batch_size},
  learning rate {cfg.train.lr}, precision {cfg.train.precision}, seed {cfg.train.seed}.
- **Dropped after training:** the training-only heads of the loss terms (the MLP, and the grounding head,
  teacher adapters or regression head where a term trained them); the grounding head and adapters stay
  in the training run's folder (`grounding_heads.pt`), for its retrieval evaluation, and are not part of
  this model.

### Losses

| term | weight | settings |
|---|---|---|
{loss_rows(cfg.loss)}

<details><summary>Resolved run config</summary>

```yaml
{yaml.safe_dump(portable(to_dict(cfg), root), sort_keys=False).rstrip()}
```
</details>
"""


def _training_shape(student: StudentConfig, model: SentenceTransformer) -> str:
    if student.kind == "static":
        return (f"kind `static`, {model.get_embedding_dimension()} dimensions (`student.static_dim`), "
                "sentences read whole in training and use")
    return (f"kind `transformer`, pooling `{student.pooling}`; training batches truncated at "
            f"{student.max_seq_length} tokens (the saved model keeps {model.max_seq_length})")


ONNX_KINDS = {"onnx": "float32", "onnx-int8": "dynamic int8, per-channel weights",
              "onnx-sentence": "float32", "onnx-sentence-int8": "dynamic int8, per-channel weights"}


def onnx_usage(model_dir: Path) -> str:
    """How to run the ONNX files this folder holds (none: nothing)."""
    present = {name: file for name, file in EXPORT_FILES.items() if (model_dir / file).is_file()}
    layouts = []
    transformer = {name: file for name, file in present.items() if name in TRANSFORMER_EXPORTS}
    if transformer:
        files = ", ".join(f"`{file}` ({ONNX_KINDS[name]})" for name, file in transformer.items())
        file = transformer.get("onnx-int8", next(iter(transformer.values())))
        layouts.append(f"""This folder holds {files}: the transformer alone, in sentence-transformers' layout, read by its
ONNX backend (which needs optimum-onnx; its release 0.1.0 requires transformers < 4.58):

```python
model = SentenceTransformer("path/to/this/folder", backend="onnx", model_kwargs={{"file_name": "{file}"}})
```

With transformers 5 and `pip install 'kdmcse-distill[export]'`:
`from distill.export import load_onnx_student; model = load_onnx_student("path/to/this/folder", "{file}")`.
""")
    sentence = {name: file for name, file in present.items() if name.startswith("onnx-sentence")}
    if sentence:
        files = ", ".join(f"`{file}` ({ONNX_KINDS[name]})" for name, file in sentence.items())
        layouts.append(f"""{files}: the whole model in one graph, pooling and normalisation inside; its output
`sentence_embedding` is the sentence's vector, so any ONNX runtime with this folder's `tokenizer.json`
runs it without PyTorch or sentence-transformers. Its inputs are the tokeniser's output (token ids, and
an attention mask for a transformer; the flat token ids and each sentence's start offset for a static
model); `distill.export.encode_with_sentence_graph("path/to/this/folder", sentences)` shows the calls.
""")
    return "## Deploy\n\n" + "\n".join(layouts) if layouts else ""


def deploy_block(model_dir: Path) -> str:
    """The card's Deploy section as a marked block (``set_card_section`` replaces it after a later export);
    empty when the folder holds no ONNX file."""
    usage = onnx_usage(model_dir)
    if not usage:
        return ""
    return f"\n{SECTION_START.format(name='deploy')}\n{usage.strip()}\n{SECTION_END.format(name='deploy')}\n"


SECTION_START, SECTION_END = "<!-- kdmcse:{name} -->", "<!-- /kdmcse:{name} -->"


def set_card_section(model_dir: Path, name: str, markdown: str, before: str = "## Training") -> None:
    """Put ``markdown`` into the card as section ``name``, replacing that section if the card has it,
    else inserting it before the heading ``before`` (at the end when there is none)."""
    card = Path(model_dir) / "README.md"
    text = card.read_text()
    start, end = SECTION_START.format(name=name), SECTION_END.format(name=name)
    block = f"{start}\n{markdown.strip()}\n{end}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    elif f"\n{before}\n" in text:
        head, tail = text.split(f"\n{before}\n", 1)
        text = f"{head}\n{block}\n{before}\n{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n{block}"
    atomic_write(card, text.encode())


def speed_section(rows: list[dict[str, Any]], machine: str) -> str:
    """The card's "Speed" section from ``benchmarks/student_speed.py`` rows (``model``, ``backend``,
    ``sentences_per_second``, ``ratio_to_teacher_fp32``, ``p50_ms``, ``sts_average``): a headline line
    for the student's fastest row, read against the teacher at the same backend (what distillation
    buys) and against its torch fp32 (what the whole deployment buys), then every row."""
    teacher = {r["backend"]: r for r in rows if r["model"] == "teacher"}
    students = [r for r in rows if r["model"] == "student"]

    def same_backend(row: dict[str, Any]) -> float:
        reference = teacher.get(row["backend"], teacher["torch fp32"])
        return row["sentences_per_second"] / reference["sentences_per_second"]

    fastest = max(students, key=lambda r: r["ratio_to_teacher_fp32"])
    share = 100 * fastest["sts_average"] / teacher["torch fp32"]["sts_average"]
    lines = ["## Speed", "",
             f"**{same_backend(fastest):.2f}x the teacher's throughput at the same backend ({fastest['backend']}), "
             f"{fastest['ratio_to_teacher_fp32']:.2f}x its torch fp32, at {share:.1f}% of its STS average** "
             f"({machine}).", "",
             "| model | backend | sentences/s (batch 64) | x teacher, same backend | x teacher torch fp32 | "
             "p50 ms (batch 1) | STS Avg |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['backend']} | {r['sentences_per_second']:.0f} | {same_backend(r):.2f}x | "
              f"{r['ratio_to_teacher_fp32']:.2f}x | {r['p50_ms']:.1f} | {r['sts_average']:.2f} |"
              for r in [*teacher.values(), *students]]
    lines += ["", "Measured with kdmcse-distill's `benchmarks/student_speed.py` over the STS-B test sentences, "
              "all rows side by side in one run; STS Avg is the 7-task average (STS12-16, STS-B, SICK-R; "
              "SentEval protocol, Spearman x100). " + FRONTIER_NOTE]
    return "\n".join(lines)


def teacher_name(teacher: TeacherConfig) -> str:
    """The teacher's towers as a reader knows them (hub names for the offline aliases)."""
    root = Path.cwd()
    if teacher.backend == "composite":
        text = portable(HUB_NAMES.get(teacher.text_model, teacher.text_model), root)
        image = portable(HUB_NAMES.get(teacher.image_model, teacher.image_model), root)
        return f"`{text}` (text) + `{image}` (images)"
    pretrained = f" ({portable(teacher.clip_pretrained, root)})" if teacher.clip_pretrained else ""
    return f"`{portable(teacher.clip_model, root)}`{pretrained} ({teacher.backend})"


def training_data(cfg: RunConfig, manifest: dict[str, Any]) -> str:
    text = ", ".join(cfg.data.text_source_names) or "none"
    images = ", ".join(cfg.data.image_source_names) or "none"
    counts = manifest.get("counts")
    rows = f"; rows {json.dumps(counts, sort_keys=True)}" if counts else ""
    skipped = manifest.get("skipped", [])
    left_out = f" {len(skipped)} bad row(s) left out (`train_summary.json` lists them): " + ", ".join(
        f"`{row['row_id']}`" for row in skipped[:10]) + (" ..." if len(skipped) > 10 else "") if skipped else ""
    return f"sentences from {text}; image-caption pairs from {images}{rows}.{left_out}"


def loss_rows(loss: LossConfig) -> str:
    """One table row per objective term that is switched on (what each term says of itself, in summing
    order), then the shared settings that mask or weight them."""
    rows = card_rows(loss)
    if loss.false_negative_filter != "none":
        rows.append((f"teacher false-negative filter ({loss.false_negative_filter})", "-",
                     f"threshold {loss.filter_threshold}" if loss.false_negative_filter == "threshold"
                     else f"margin {loss.gist_margin}, {loss.gist_mode}"))
    if loss.focal_gamma > 0:
        rows.append(("focal weighting of the text terms", "-", f"gamma {loss.focal_gamma}"))
    return "\n".join(f"| {name} | {weight} | {settings} |" for name, weight, settings in rows) or "| none | - | - |"


def results_table(state, results: dict[str, float]) -> str:
    lines = ["| evaluation | score |", "|---|---|"]
    if state.best_step >= 0:
        lines.append(f"| STS-B dev (step {state.best_step} of {state.step}) | {state.best_dev:.2f} |")
    if state.baseline_dev is not None:
        lines.append(f"| STS-B dev before training (step 0) | {state.baseline_dev:.2f} |")
    lines += [f"| {name} | {score:.2f} |" for name, score in results.items()]
    history = ", ".join(f"{step}: {score:.2f}" for step, score in state.dev_history)
    text = "\n".join(lines) + (f"\n\nSTS-B dev during training (step: score): {history}." if history else "")
    if state.best_step == 0:
        text += ("\n\n**No evaluation beat the starting point: this checkpoint is the untrained student** "
                 "(the training made STS-B dev worse at every evaluation).")
    return text


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))


SCORES_HEADING = "## Test scores"
# STS task names as the hub's model-index knows their datasets
MODEL_INDEX_DATASETS = {"STS12": "mteb/sts12-sts", "STS13": "mteb/sts13-sts", "STS14": "mteb/sts14-sts",
                        "STS15": "mteb/sts15-sts", "STS16": "mteb/sts16-sts", "STSBenchmark": "mteb/stsbenchmark-sts",
                        "SICKRelatedness": "mteb/sickr-sts"}


def is_project_card(header: dict[str, Any]) -> bool:
    """Whether a card's metadata (``card_header_of``) is one this project's trainer wrote."""
    return PROJECT_TAG in (header.get("tags") or [])


def record_scores(model_dir: Path, payload: dict[str, Any], tables: str) -> bool:
    """Write an evaluation's scores into the card of a model this project trained: ``tables`` (the
    evaluation's markdown, ``eval.report.render_markdown``) as a "Test scores" section of its text, and
    the STS scores of ``payload`` (``scripts/evaluate.py``'s) as the ``model-index`` of its metadata,
    which the hub shows as evaluation results. A later evaluation replaces both. Returns False, touching
    nothing, for a folder whose card is not this project's."""
    readme = Path(model_dir) / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    header = card_header_of(text)
    if not is_project_card(header) or not ("sts" in payload or "transfer" in payload):
        return False
    body = text[4:].split("\n---\n", 1)[1]
    header["model-index"] = [{"name": model_index_name(Path(model_dir), text), "results": model_index_results(payload)}]
    section = (f"{SCORES_HEADING}\n\nScored by `scripts/evaluate.py` after training (test sets; not used for "
               f"selection).\n\n{tables.strip()}\n\n")
    if SCORES_HEADING in body:  # an earlier evaluation's section: replaced up to the next heading
        before, rest = body.split(SCORES_HEADING, 1)
        body = before + section + (rest[rest.index("\n## ") + 1:] if "\n## " in rest else "")
    else:
        body = body.replace("## Training\n", section + "## Training\n", 1)
    atomic_write(readme, f"---\n{yaml.safe_dump(header, sort_keys=False).rstrip()}\n---\n{body}".encode())
    return True


def model_index_name(model_dir: Path, text: str) -> str:
    """The name the hub shows for a card's results: the repository its usage example loads (``card.repo_id``,
    or set by ``scripts/publish.py``), else the run it came from (``runs/NAME/model`` -> NAME)."""
    loaded = re.search(r'SentenceTransformer\("([^"]+)"', text)
    if loaded and loaded.group(1) != "path/to/this/folder":
        return loaded.group(1)
    return (run_of(model_dir) or model_dir.resolve()).name


def model_index_results(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One hub model-index entry per STS test set (cosine Spearman x100)."""
    tasks = payload.get("sts", {}).get("tasks", {})
    return [{"task": {"type": "sentence-similarity", "name": "Semantic Similarity"},
             "dataset": {"name": name, "type": MODEL_INDEX_DATASETS.get(name, name)},
             "metrics": [{"type": "spearman_cosine", "value": round(result["spearman"], 2),
                          "name": "Spearman correlation (cosine) x100"}]}
            for name, result in tasks.items()]
