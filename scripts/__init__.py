"""The command-line programs (installed as the package kdmcse_cli; see pyproject.toml)."""
