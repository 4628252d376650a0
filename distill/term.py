"""One interface for every loss term, core or module, and the registry the objective builds them from.

A term is an ``nn.Module`` subclass of ``Term``:

* ``needs``: what the step must build for it (``Needs``: the second dropout view, teacher similarities,
  gathered teacher rows, grounded views, adapted images or captions, the text contrast's logits); the
  objective builds the union of its terms' needs and nothing more;
* ``observe(step)``: optional; updates the term's own state from the step before any term is computed
  (AAHR assigns the gathered teacher rows to its prototypes here);
* ``terms(step)``: its terms of this step by name, already weighted (``{}`` where it has none, e.g. a
  paired-only term on a text step);
* ``after_step(step)``: optional; after every term of the step was computed (AAHR enqueues here).

``register_term(name)`` registers a builder under the name of the config section it reads
(``loss.<name>`` for the project's terms; ``loss.terms.<name>`` for terms registered from outside the
package, docs/extending.md). A builder takes the ``LossConfig`` and the widths ``Dims`` and returns the
term, or None when its section is off. ``DistillationObjective`` builds every registered term in
``ordered_names()`` order, which is also the order its terms are summed in.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

from torch import Tensor, nn

from distill.config import LossConfig
from distill.step import StepTensors
from kdmcse_base.typed_config import ConfigError


@dataclass(frozen=True)
class Needs:
    """What one term reads beyond the first dropout view ``h1``."""

    two_views: bool = True  # h2, the MLP outputs z1 / z2 and the gathered candidates
    teacher_similarities: bool = False  # s_cc: teacher text cosines, local x gathered
    teacher_rows: bool = False  # the gathered teacher text rows (``step.teacher_text_all``)
    grounding: bool = False  # the grounded views on every step
    images: bool = False  # paired steps: adapted teacher images (and grounded views)
    captions: bool = False  # paired steps: adapted teacher captions
    text_logits: bool = False  # the general text contrast's logits and mask (``step.text_logits``)

    def __or__(self, other: Needs) -> Needs:
        return Needs(**{f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)})


class Term(nn.Module):
    """A loss term (or a module's terms) as the objective composes it; see the module docstring."""

    needs: Needs = Needs()

    def observe(self, step: StepTensors) -> None:
        """Before any term of the step is computed; the default does nothing."""

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, step: StepTensors) -> None:
        """After every term of the step was computed; the default does nothing."""

    def extend_text(self, candidates: Tensor, exclude: Tensor | None,
                    step: StepTensors) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """A term that reshapes the text contrast returns ``(candidates, exclude, weights)`` for its
        logits (more candidates, their mask, per-candidate weights); the default leaves them as they are."""
        return candidates, exclude, None


@dataclass(frozen=True)
class Dims:
    """Widths some terms size their state with: ``student`` (the MLP output ``z``), ``teacher`` (the
    teacher's text embeddings); None where the caller did not give them."""

    student: int | None = None
    teacher: int | None = None


Builder = Callable[[LossConfig, Dims], Term | None]

# The project's terms in the order they are computed and summed (the recorded objective depends on it);
# terms registered from outside the package follow, in the order they were registered.
BUILT_IN_ORDER = ("text", "soft_mask", "soft_target", "regression", "multimodal", "aahr", "mmref", "dias")
TERMS: dict[str, Builder] = {}


def register_term(name: str) -> Callable[[Builder], Builder]:
    """Register ``builder`` under the config section ``name`` it reads; a name is registered once."""
    def register(builder: Builder) -> Builder:
        if name in TERMS and TERMS[name] is not builder:
            raise ValueError(f"a loss term named {name!r} is registered already")
        TERMS[name] = builder
        return builder
    return register


def ordered_names() -> list[str]:
    """Registered names, the project's in ``BUILT_IN_ORDER``, then the others in registration order."""
    built_in = [name for name in BUILT_IN_ORDER if name in TERMS]
    return built_in + [name for name in TERMS if name not in BUILT_IN_ORDER]


def check_terms(cfg: LossConfig) -> None:
    """Import ``loss.term_modules`` and refuse a ``loss.terms`` section no term is registered under
    (a ConfigError naming the key), before anything is loaded."""
    for module in cfg.term_modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"loss.term_modules: cannot import {module!r} ({err})") from None
    unknown = sorted(set(cfg.terms) - set(TERMS))
    if unknown:
        raise ConfigError(f"loss.terms.{unknown[0]}: no term is registered under that name; registered: "
                          f"{ordered_names()} (loss.term_modules imports the module that registers it)")
    for name in cfg.terms:  # each section's values, parsed by its own builder, before any data is read
        try:
            TERMS[name](cfg, Dims())
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - what failed needs the real widths; the values parsed
            pass


def build_terms(cfg: LossConfig, dims: Dims) -> dict[str, Term]:
    """Every term whose section is on, by name, in summing order (``check_terms`` first)."""
    check_terms(cfg)
    built = ((name, TERMS[name](cfg, dims)) for name in ordered_names())
    return {name: term for name, term in built if term is not None}


def union(needs: Iterable[Needs]) -> Needs:
    total = Needs(two_views=False)
    for need in needs:
        total = total | need
    return total
