"""The application layer: the use cases every interface calls.

Scans, runs, approvals, documents and the chat orchestrator live here once; the CLI, the
REST API, the web UI and the scheduler are thin interfaces over them. Every use case takes the
acting identity (``actor``): the CLI passes the OS user, the service an authenticated user.

- :mod:`~patchpilot.app.contexts`: the one factory of a scan's or a run's run-time context
- :mod:`~patchpilot.app.scans`: start and resume a scan, its report, stored findings, gating
- :mod:`~patchpilot.app.runs`: start and resume a patch run, its document and report
- :mod:`~patchpilot.app.approvals`: record a decision, continue the run, list and expire
- :mod:`~patchpilot.app.documents`: the published documents as models, their JSON Schema
- :mod:`~patchpilot.app.report`: the scan report document, CSV and Markdown renderings
- :mod:`~patchpilot.app.chat`: the chat orchestrator
"""
