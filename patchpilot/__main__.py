"""``python -m patchpilot`` runs the CLI."""

from patchpilot.cli import main

main()
