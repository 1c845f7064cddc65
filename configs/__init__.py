"""Bundled YAML configuration: settings, policy and inventory examples."""
