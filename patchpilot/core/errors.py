"""The patchpilot exception hierarchy: every project exception, where it lives, what it means.

Every error raised on purpose by patchpilot derives from :class:`PatchpilotError` and carries
an actionable message. Subclasses also inherit from the matching builtin on purpose: LangGraph's
default retry policy retries ``ConnectionError`` and never retries ``ValueError``/``OSError``,
so transient failures (connection set-up) are retried and deterministic ones (parse, validation,
host-key mismatch) are not.

The classes of this module are importable from here; the others are defined next to the code
that raises them (the module is named in brackets; ``core`` is :mod:`patchpilot.core`, ``tools``
:mod:`patchpilot.tools`...) and catchable as :class:`PatchpilotError` everywhere::

    PatchpilotError
    ├── ConfigError (ValueError)                 bad settings / policy / inventory / accept file
    │   └── UnknownTargetError (LookupError)     a target or --limit pattern matched no host
    ├── UnsafeArgumentError (ValueError)         a value refused before it could reach a shell
    ├── InvalidInputError (ValueError)           free text (comment, chat line, pattern) refused
    ├── NotAuthorizedError (PermissionError)     an identity not allowed to do this (approve)
    │   └── SelfApprovalError                    the run's requester deciding their own run
    ├── InvalidVersionError (ValueError)         a version string the ecosystem does not accept
    │   └── UnparseableVersionError              not even orderable (empty, control characters,
    │                                            over-long, a dpkg syntax error): compare()
    │                                            raises only this; matching reports it as a
    │                                            data-quality warning
    ├── UnknownEcosystemError (ValueError)       no version ordering for this ecosystem
    │                                            [core.versions]
    ├── FactParseError (ValueError)              command output that does not parse
    ├── UnsupportedPlatformError                 no fact/operation for this OS family
    ├── StoreError                               the SQLite store refused or failed an operation;
    │   │                                        a failed write changed nothing (also exported
    │   │                                        by core.store)
    │   └── AlreadyDecidedError                  an approval decided already (or this person
    │                                            voted on it already); the API answers 409
    ├── AuditError (OSError)                     the audit log could not be written or read
    │                                            [core.audit]
    ├── ReportWriteError (OSError)               the report file of --output could not be
    │                                            written (nothing was left half-written)
    ├── LabError                                 the lab fleet (`patchpilot lab`) failed
    ├── FeedError (ValueError)                   bad, oversized, wrong-schema or non-UTF-8 feed
    ├── FeedFetchError (ConnectionError)         feed download failed after our retries
    ├── TransportError                           running commands on a host
    │   ├── HostConnectError (ConnectionError)   network / SSH handshake failed (retried)
    │   ├── HostKeyError                         unknown or changed host key (never retried)
    │   ├── AuthenticationError                  key / agent refused
    │   ├── CommandTimeoutError (TimeoutError)   a command ran past its timeout
    │   ├── BecomeRefusedError                   the inventory forbids the privileged command
    │   │                                        (ansible_become=false, or a become_user other
    │   │                                        than root); nothing ran
    │   │                                        [tools.transport.base]
    │   └── CommandFailedError                   non-zero exit where success was required
    │       └── SudoRefusedError                 sudo refused a privileged command (a privilege
    │                                            problem on the host) [tools.transport.base]
    ├── ChangelogError                           reading a package's Debian changelog failed
    │   │                                        [tools.changelog.errors, as are its subclasses]
    │   ├── ChangelogUnavailable (LookupError)   that version cannot be downloaded from the
    │   │                                        host's repositories
    │   ├── ChangelogNotShipped (LookupError)    the .deb ships no changelog
    │   ├── ChangelogFetchError (ConnectionError) the host could not download the package
    │   │                                        (network, proxy, DNS; may be retried)
    │   └── ChangelogParseError (ValueError)     the changelog (or its command output) does not
    │                                            parse
    ├── LLMError (RuntimeError)                  an LLM call failed [tools.llm.errors, as are
    │   │                                        its subclasses]
    │   ├── LLMConfigError (ValueError)          LLM settings or call arguments cannot work
    │   ├── LLMRequestError (ValueError)         the endpoint refused the request for good
    │   ├── LLMUnavailableError                  rate limits, 5xx, timeouts or connection
    │   │                                        failures outlasted every retry
    │   ├── LLMOutputError (ValueError)          the answer was unusable (not JSON, not the
    │   │                                        schema, truncated, refused, filtered)
    │   └── LLMBudgetExceeded                    the run's LLM call/token budget is spent; no
    │                                            request was sent
    ├── VectorMemoryError                        the vector memory could not be opened, written
    │   │                                        or queried [tools.memory.errors, as are its
    │   │                                        subclasses]
    │   ├── VectorMemoryUnavailable (ConnectionError) Chroma or the embeddings endpoint is
    │   │                                        unreachable (transient; retried)
    │   └── EmbeddingMismatchError (ValueError)  the memory was built with another embedding
    │                                            function than the configured one
    ├── RateControlError (RuntimeError)          the rollout rate controller was used out of
    │                                            order (a caller's bug) [agents.scheduling]
    ├── RunBusyError                             another process is driving this run right now
    │                                            [graphs.scan]
    └── HostBusyError                            a host of the run is in another active run
                                                 (queued, running or waiting for a person or
                                                 its window); the API answers 409

Outside the tree, on purpose (never shown to an operator as a patchpilot error):

* ``FailpointError`` (RuntimeError) [core.failpoints]: raised by a failpoint armed with
  ``:raise``, only in crash tests.
* ``UnsupportedHostError`` (Exception) [core.inventory._graph]: an inventory host patchpilot
  cannot manage (e.g. ``ansible_connection=winrm``); caught inside the inventory loader, which
  skips the host.
* ``ResponseRefused`` (``httpx.RequestError``) [tools.llm.transport]: a response refused while
  being read (too large, unsupported encoding); the LLM client turns it into an ``LLMError``.
* ``_Retryable`` [tools.feeds.fetch, tools.llm.client] and ``_RetryableConnectError``
  [tools.transport.ssh]: private retry signals, turned into ``FeedFetchError``, ``LLMError``
  or ``HostConnectError`` after the last attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlreadyDecidedError",
    "AuthenticationError",
    "CommandFailedError",
    "CommandTimeoutError",
    "ConfigError",
    "FactParseError",
    "FeedError",
    "FeedFetchError",
    "HostBusyError",
    "HostConnectError",
    "HostKeyError",
    "InvalidInputError",
    "InvalidVersionError",
    "LabError",
    "NotAuthorizedError",
    "PatchpilotError",
    "ReportWriteError",
    "SelfApprovalError",
    "StoreError",
    "TransportError",
    "UnknownTargetError",
    "UnparseableVersionError",
    "UnsafeArgumentError",
    "UnsupportedPlatformError",
]


class PatchpilotError(Exception):
    """Base class for all patchpilot errors."""


class ConfigError(PatchpilotError, ValueError):
    """A configuration file or value is invalid; names the file, the key and the reason."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = ", ".join(
            part for part in (f"file {file}" if file else "", f"key {key}" if key else "") if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)


class UnknownTargetError(ConfigError, LookupError):
    """A target name, group or limit pattern matched no host of the inventory."""


class UnsafeArgumentError(PatchpilotError, ValueError):
    """A value (package name, version, host name…) was refused before reaching a shell."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"refusing unsafe {kind} {value!r}: {reason}")


class InvalidInputError(PatchpilotError, ValueError):
    """Free text from outside (a comment, a chat line, a pattern) refused before anything ran.

    Raised at the boundary, before any side effect, so nothing is half-applied.
    """

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class NotAuthorizedError(PatchpilotError, PermissionError):
    """The acting identity is not allowed to do this (e.g. decide an approval)."""


class SelfApprovalError(NotAuthorizedError):
    """The person who requested a run tried to approve or reject it (separation of duties:
    another approver must decide). The API answers 403."""


class InvalidVersionError(PatchpilotError, ValueError):
    """A version string is not valid in its ecosystem."""

    def __init__(self, ecosystem: str, version: str, reason: str = "") -> None:
        self.ecosystem = ecosystem
        self.version = version
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"invalid {ecosystem} version {version!r}{detail}")


class UnparseableVersionError(InvalidVersionError):
    """A version string no ordering applies to (``compare`` raises only this).

    Malformed but orderable strings are ordered as the package manager orders them; this is the
    rest: a non-string, an empty or blank string, control characters or unpaired surrogates,
    more than :data:`patchpilot.core.versions.MAX_LENGTH` characters, and per ecosystem what
    the package manager itself refuses to compare (dpkg's syntax *errors*). ``version`` is the
    offending string (shortened when over-long), ``reason`` the problem.
    """


class FactParseError(PatchpilotError, ValueError):
    """Command output could not be parsed; never silently becomes an empty result."""

    def __init__(self, fact: str, reason: str, *, line: str | None = None) -> None:
        self.fact = fact
        self.line = line
        suffix = f" (line: {line!r})" if line is not None else ""
        super().__init__(f"cannot parse output of {fact}: {reason}{suffix}")


class UnsupportedPlatformError(PatchpilotError):
    """The host's OS family is not supported by the requested fact or operation."""


class StoreError(PatchpilotError):
    """The store refused or failed an operation; a failed write changed nothing.

    Raised for an unusable database file (corrupt, or written by a newer patchpilot), for a
    reference to an unknown run, for invalid data (an invalid fixed version, a finding of
    another host) and for SQLite errors, which are chained as ``__cause__``.
    """


class AlreadyDecidedError(StoreError):
    """A decision on an approval that was decided already (or on which this person voted
    already): nothing changed. The API and the web dashboard answer 409."""


class HostBusyError(PatchpilotError):
    """A host of a new run is in another active run (queued, running, or waiting for an approval
    or its window): at most one active run per host. The API answers 409.

    Args:
        message: What is busy, and how to proceed.
        hosts: The busy hosts.
        run_id: The active run holding them.
    """

    def __init__(
        self, message: str, *, hosts: Sequence[str] = (), run_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.hosts = tuple(hosts)
        self.run_id = run_id


class ReportWriteError(PatchpilotError, OSError):
    """The report file asked for with ``--output`` could not be written.

    The file is written to a temporary file beside it and renamed over it, so a failure
    leaves the previous file (or none) in place, never a truncated report.
    """


class TransportError(PatchpilotError):
    """Base for failures while talking to a host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        super().__init__(f"{host}: {message}")


class HostConnectError(TransportError, ConnectionError):
    """The host could not be reached or the SSH handshake failed (transient; retried)."""


class HostKeyError(TransportError):
    """The host key is unknown or does not match known_hosts (never retried)."""


class AuthenticationError(TransportError):
    """The host refused our key / agent identities."""


class CommandTimeoutError(TransportError, TimeoutError):
    """A command did not finish within its timeout."""


class CommandFailedError(TransportError):
    """A command exited non-zero where success was required."""

    def __init__(self, host: str, argv: Sequence[str], exit_code: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no stderr"
        super().__init__(host, f"command {self.argv[0]!r} exited {exit_code}: {tail}")


class LabError(PatchpilotError):
    """The lab fleet (``patchpilot lab``) could not be built, started, stopped or reached."""


class FeedError(PatchpilotError, ValueError):
    """A feed document is malformed, oversized, not UTF-8 or not in the expected schema.

    The message names the document and, when known, the line number or the record, so an
    operator can find the offending bytes.

    Attributes:
        reason: What is wrong, without the location.
        source: The URL or file path of the document, if known.
        line: The 1-based line number of the offending line, if known.
        record: The record (advisory id, file inside an archive…) at fault, if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        line: int | None = None,
        record: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.record = record
        where: list[str] = []
        if source:
            where.append(source)
        if line is not None:
            where.append(f"line {line}")
        if record:
            where.append(f"record {record}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class FeedFetchError(PatchpilotError, ConnectionError):
    """Downloading a feed failed (network error or HTTP error status) after all retries.

    Attributes:
        url: The URL that failed (credentials never included).
        reason: What went wrong.
        status: The last HTTP status received, if any.
        attempts: How many attempts were made.
    """

    def __init__(
        self, url: str, reason: str, *, status: int | None = None, attempts: int | None = None
    ) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.attempts = attempts
        after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        super().__init__(f"fetching {url} failed{after}: {reason}")
