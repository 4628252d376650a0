"""A model card section that says how a distilled student was made: teacher, data, config, scores."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from distill.config import RunConfig, to_dict


def write_model_card(model_dir: Path, cfg: RunConfig, teacher_manifest: dict[str, Any], state) -> None:
    """Append a "Distillation" section to the README.md sentence-transformers wrote into ``model_dir``."""
    readme = model_dir / "README.md"
    existing = readme.read_text() if readme.is_file() else ""
    teacher = teacher_manifest.get("teacher", {})
    counts = teacher_manifest.get("counts", {})
    history = "\n".join(f"| {step} | {score:.2f} |" for step, score in state.dev_history) or "| - | - |"
    section = f"""

## Distillation (kdmcse-distill)

- **Run:** `{cfg.name}`; {state.step} steps in {state.train_seconds / 60:.1f} min; best STS-B dev
  Spearman x100 **{state.best_dev:.2f}** at step {state.best_step} (this checkpoint).
- **Student:** `{cfg.student.model}`{f", first {cfg.student.layers} layers" if cfg.student.layers else ""};
  pooling `{cfg.student.pooling}`; training-only heads (MLP, grounding head, teacher adapters) were dropped.
- **Teacher:** `{json.dumps(teacher, sort_keys=True)}`
- **Teacher cache:** fingerprint `{teacher_manifest.get("fingerprint", "?")}`; rows {json.dumps(counts)}
- **Data:** {", ".join(cfg.data.text_source_names)} (text); {", ".join(cfg.data.image_source_names) or "none"} (images)

### STS-B dev during training

| step | Spearman x100 |
|---|---|
{history}

### Resolved config

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip()}
```
"""
    readme.write_text(existing + section)
