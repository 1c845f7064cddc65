"""The command-line interface (typer): a thin layer over :mod:`patchpilot.app`.

Commands parse options, call a use case and print; they are registered in one place,
:func:`patchpilot.cli.main.register`.
"""
