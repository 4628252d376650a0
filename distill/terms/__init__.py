"""The project's loss terms, one file each (``<name>.py``: its typed config section, its ``Term``, its
``@register_term``), each computing a loss of ``distill/losses/`` on the step's tensors.

Importing this package imports every module in it, so a term file added here is registered without
being named anywhere else. KDMCSE's terms read the shared keys of ``loss`` (``text``, ``soft_target``,
``regression``, ``multimodal``); the related-method modules (docs/modules.md) have sections of their
own, off when absent (``aahr``, ``soft_mask``, ``mmref``, ``dias``).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
