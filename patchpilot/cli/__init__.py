"""The command-line interface (typer): a thin layer over :mod:`patchpilot.app`."""
