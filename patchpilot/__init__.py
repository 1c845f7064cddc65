"""patchpilot core: domain models, settings, policy, inventory, errors and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("patchpilot")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["__version__"]
