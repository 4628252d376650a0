"""Where the data directory is: decided in one place, ``kdmcse_base.data_files`` (eval reads data too)."""
from kdmcse_base.data_files import ENV_VAR, resolve_data_dir  # noqa: F401  (re-exported)
