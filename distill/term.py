"""One interface for every loss term, the project's and any written outside the package, and the
registry the objective builds them from.

A term is an ``nn.Module`` subclass of ``Term``, registered with ``@register_term(name, order=...,
section=...)`` in a file of its own (the project's: ``distill/terms/<name>.py``, found there without a
list; outside ones: any module named in ``loss.term_modules``, docs/extending.md):

* ``section``: the typed config dataclass of ``loss.<name>``; the term is on when that section is
  present. A term without one reads the objective's shared keys of ``LossConfig`` (KDMCSE's text,
  multimodal, soft-target and regression terms) and says itself whether it is on (``build``).
* ``order``: where its terms are computed and summed; the project's terms take 10 to 80, a term
  registered from outside defaults to after them all (ties: in registration order).
* ``needs``: what the step must build for it (``Needs``); the objective builds the union and nothing more.
  ``Needs.reshapes_text``: the term changes the text contrast through ``extend_text`` (more candidates,
  their mask, per-candidate weights), so the text term is computed from that general contrast.
* ``observe(step)`` / ``after_step(step)``: optional hooks before any term of the step is computed and
  after all were (state such as a queue of earlier steps).
* ``terms(step)``: its terms of this step by name, already weighted (``{}`` where it has none).
* ``card_rows(loss, section)``: what the model card's loss table says of it (name, weight, settings);
  ``citation``: the paper it comes from, printed with it.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor, nn

from distill.config import LossConfig
from distill.step import StepTensors
from kdmcse_base.typed_config import ConfigError, from_dict


@dataclass(frozen=True)
class Needs:
    """What one term reads beyond the first dropout view ``h1``."""

    two_views: bool = True  # h2, the MLP outputs z1 / z2 and the gathered candidates
    teacher_similarities: bool = False  # s_cc: teacher text cosines, local x gathered
    teacher_rows: bool = False  # the gathered teacher text rows (``step.teacher_text_all``)
    grounding: bool = False  # the grounded views on every step
    images: bool = False  # paired steps: adapted teacher images (and grounded views)
    captions: bool = False  # paired steps: adapted teacher captions
    heads: bool = False  # the grounding heads themselves (``step.heads``); implied by the three above
    text_logits: bool = False  # the general text contrast's logits and mask (``step.text_logits``)
    reshapes_text: bool = False  # ``extend_text`` changes the text contrast (implies ``text_logits``)

    def __or__(self, other: Needs) -> Needs:
        return Needs(**{f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)})

    @property
    def grounding_heads(self) -> bool:
        """The objective holds the grounding heads (a term reads the grounding space)."""
        return self.heads or self.grounding or self.images or self.captions


@dataclass(frozen=True)
class Dims:
    """Widths the terms and the grounding heads are sized with: ``student`` (the sentence embedding and
    the MLP output ``z``), ``teacher`` (the teacher's text embeddings), ``image`` (its image embeddings;
    None: a run without images), ``grounding`` (the grounding space, ``student.grounding_dim``); None
    where the caller did not give them."""

    student: int | None = None
    teacher: int | None = None
    image: int | None = None
    grounding: int | None = None


CardRow = tuple[str, Any, str]
"""One row of the model card's loss table: (term, weight, settings)."""


class Term(nn.Module):
    """A loss term as the objective composes it; see the module docstring."""

    needs: Needs = Needs()
    citation: str = ""

    @classmethod
    def build(cls, loss: LossConfig, section: Any, dims: Dims) -> Term | None:
        """The term of this run, or None when it is off; a sectioned term is built from its section."""
        return cls(section)

    @classmethod
    def check(cls, loss: LossConfig, section: Any) -> None:
        """Refuse (``ConfigError``) a section that contradicts the shared keys; the default accepts it."""

    @classmethod
    def card_rows(cls, loss: LossConfig, section: Any) -> list[CardRow]:
        """The model card's rows of this term; the default names it with its section's values."""
        values = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {}
        weight = values.pop("weight", "-")
        return [(cls.__name__, weight, ", ".join(f"{key} {value}" for key, value in values.items()))]

    def observe(self, step: StepTensors) -> None:
        """Before any term of the step is computed; the default does nothing."""

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, step: StepTensors) -> None:
        """After every term of the step was computed; the default does nothing."""

    def extend_text(self, candidates: Tensor, exclude: Tensor | None,
                    step: StepTensors) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """A term with ``needs.reshapes_text`` returns ``(candidates, exclude, weights)`` for the text
        contrast's logits (more candidates, their mask, per-candidate weights); the default leaves them."""
        return candidates, exclude, None


@dataclass(frozen=True)
class TermSpec:
    """A registered term: its class, its summing ``order`` and the typed config of its ``loss.<name>``
    section (None: it reads the shared keys of ``LossConfig``)."""

    name: str
    cls: type[Term]
    order: int
    section: type | None


OUTSIDE_ORDER = 1000  # after the project's terms
TERMS: dict[str, TermSpec] = {}
_SHARED_KEYS = frozenset(f.name for f in fields(LossConfig))


def register_term(name: str, *, order: int = OUTSIDE_ORDER, section: type | None = None):
    """Register a ``Term`` subclass under ``name`` (a class decorator); a name is registered once."""
    if section is not None and name in _SHARED_KEYS:
        raise ValueError(f"loss.{name} is a key of LossConfig; give the term another name")

    def register(cls: type[Term]) -> type[Term]:
        if name in TERMS and TERMS[name].cls is not cls:
            raise ValueError(f"a loss term named {name!r} is registered already")
        TERMS[name] = TermSpec(name, cls, order, section)
        return cls
    return register


def ordered_names() -> list[str]:
    """Registered names in summing order: by ``order``, then in registration order."""
    registration = {name: index for index, name in enumerate(TERMS)}
    return sorted(TERMS, key=lambda name: (TERMS[name].order, registration[name]))


def resolve_terms(cfg: LossConfig) -> LossConfig:
    """``cfg`` with every term section typed, checked and written out in full (its defaults filled in),
    after importing ``loss.term_modules``; a section no term is registered under, or a bad value in one,
    is a ``ConfigError`` naming the key. What train() calls first, before the teacher cache."""
    for module in cfg.term_modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"loss.term_modules: cannot import {module!r} ({err})") from None
    sections = _typed_sections(cfg)
    for name, section in sections.items():
        TERMS[name].cls.check(cfg, section)
    return dataclasses.replace(cfg, terms={name: dataclasses.asdict(section) for name, section in sections.items()})


def _typed_sections(cfg: LossConfig) -> dict[str, Any]:
    """Each ``loss.<name>`` section as its term's config dataclass, in summing order."""
    for name in cfg.terms:
        spec = TERMS.get(name)
        if spec is None or spec.section is None:
            guess = difflib.get_close_matches(name, [n for n in TERMS if TERMS[n].section], n=1)
            hint = f" (did you mean loss.{guess[0]}?)" if guess else ""
            registered = [n for n in ordered_names() if TERMS[n].section]
            raise ConfigError(f"loss.{name}: no term is registered under that name{hint}; registered: {registered} "
                              "(loss.term_modules imports the module that registers one)")
    return {name: from_dict(TERMS[name].section, cfg.terms[name] or {}, f"loss.{name}.")
            for name in ordered_names() if name in cfg.terms}


def _candidates(cfg: LossConfig) -> list[tuple[TermSpec, Any]]:
    """(term, its typed section or None) of every term that may be on, in summing order: each sectioned
    term whose section is present, and every term without a section (it decides itself)."""
    sections = _typed_sections(cfg)
    return [(TERMS[name], sections.get(name)) for name in ordered_names()
            if TERMS[name].section is None or name in sections]


def build_terms(cfg: LossConfig, dims: Dims) -> dict[str, Term]:
    """Every term that is on, by name, in summing order."""
    resolve_terms(cfg)
    built = {spec.name: spec.cls.build(cfg, section, dims) for spec, section in _candidates(cfg)}
    return {name: term for name, term in built.items() if term is not None}


def card_rows(cfg: LossConfig) -> list[CardRow]:
    """The model card's loss rows of every term that is on, in summing order, each with its citation."""
    return [(label, weight, "; ".join(part for part in (settings, spec.cls.citation) if part))
            for spec, section in _candidates(cfg) for label, weight, settings in spec.cls.card_rows(cfg, section)]


def union(needs: Iterable[Needs]) -> Needs:
    total = Needs(two_views=False)
    for need in needs:
        total = total | need
    return total
