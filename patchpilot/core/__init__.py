"""The core layer: what every other layer shares.

Domain models, errors, settings, configuration files, policy, plans, schedules, versions,
validation, health-check specs, feed types, the inventory, the store and the audit log.
It imports nothing of patchpilot above it (see the import-linter contract)."""
