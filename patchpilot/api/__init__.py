"""The REST API of ``patchpilot serve`` (FastAPI): an interface, like :mod:`patchpilot.cli`.

:func:`~patchpilot.api.app.create_app` builds the app; :mod:`patchpilot.api.routes` holds the
routes under ``/api/v1``; :mod:`patchpilot.api.models` the request bodies. Routes call the use
cases of :mod:`patchpilot.app` with the authenticated user as the acting identity.
"""

from __future__ import annotations

from patchpilot.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
