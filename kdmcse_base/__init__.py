"""The ground floor every other package stands on, with no knowledge of teachers, students or scores:

* ``files``: atomic writes, folder locks, checksums (nothing half-written left behind);
* ``process_group``: joining and describing the torch.distributed group torchrun starts;
* ``offline_models``: the offline default models shipped as packages, and their aliases;
* ``machine``: what the CPU or GPU computes natively (``precision: auto``);
* ``typed_config``: typed configs from YAML and flags, checked one way (names, types, ranges).
"""
