"""``python -m patchpilot`` runs the CLI."""

from patchpilot.cli.main import main

main()
