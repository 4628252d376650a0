"""Run a training script with every dropout of the student encoder off (tests only), so a 2-process run
and a 1-process run on the concatenated batch compute the same function.

    python tests/no_dropout.py scripts/train_student.py ARGS...
"""
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch import nn  # noqa: E402

import distill.run  # noqa: E402

build_encoder = distill.run.build_encoder


def build_encoder_without_dropout(*args, **kwargs):
    encoder = build_encoder(*args, **kwargs)
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return encoder


distill.run.build_encoder = build_encoder_without_dropout  # where build_run finds it
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
