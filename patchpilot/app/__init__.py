"""The application layer: the use cases every interface calls.

Scans, runs, approvals, documents and the chat orchestrator live here once; the CLI, the
REST API, the web UI and the scheduler are thin interfaces over them."""
