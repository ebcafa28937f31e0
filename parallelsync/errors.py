"""One error hierarchy for the whole tool.

Every error a user can meet derives from `ParallelSyncError`. Each class says whether a retry can
help (`transient`) and which exit code the CLI uses, so the CLI needs one handler and the workers
can decide on a retry without parsing messages. The classes are picklable (plain args) so worker
processes can send them to the coordinator.
"""

from __future__ import annotations

from parallelsync.redact import scrub_known

# Exit codes. Distinct per failure family so scripts can tell "fix your input" from "try again".
EXIT_OK = 0
EXIT_FAILED = 1  # the copy failed (data, server or internal error); target untouched
EXIT_USAGE = 2  # bad command line / config value
EXIT_SOURCE = 3  # PostgreSQL: cannot connect, table/column missing, permission, wal_level
EXIT_TARGET = 4  # MongoDB: unreachable, auth, write errors
EXIT_LOCKED = 5  # another run holds the lease for this target namespace
EXIT_VERIFY = 6  # verification found a difference; nothing was swapped
EXIT_ENCODE = 7  # a value or document could not be encoded (terminal, names the row key)
EXIT_ABORTED = 130  # SIGINT/SIGTERM: job ABORTED, target untouched


class ParallelSyncError(Exception):
    """Base class. `str(err)` is the one-paragraph message shown to the user."""

    exit_code: int = EXIT_FAILED
    transient: bool = False

    def __init__(self, message: str) -> None:
        # No secret in any message, whatever a driver put into it (redact.py).
        message = scrub_known(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[ParallelSyncError], tuple[str]]:
        return (type(self), (self.message,))


class UsageError(ParallelSyncError):
    """Invalid option values, unknown config keys, contradictory settings."""

    exit_code = EXIT_USAGE


class SourceError(ParallelSyncError):
    """PostgreSQL side: connection, catalog, permission or configuration problem."""

    exit_code = EXIT_SOURCE


class SourceConnectionLost(SourceError):
    """The connection to PostgreSQL broke mid-run; the range can be retried."""

    transient = True


class SourceLockTimeout(SourceError):
    """A range's COPY could not lock the table within the lock timeout (a DDL statement waits
    for, or holds, an exclusive lock); retried with back-off like a lost connection."""

    transient = True


class TargetError(ParallelSyncError):
    """MongoDB side: unreachable, authentication, rejected writes."""

    exit_code = EXIT_TARGET


class TargetUnavailable(TargetError):
    """Network error or step-down; the batch/range can be retried."""

    transient = True


# What became of the final swap when it did not simply succeed (the job document's swap_outcome).
SWAP_DONE, SWAP_NOT_DONE, SWAP_UNKNOWN = "done", "not_done", "unknown"


class SwapFailed(TargetError):
    """The swap did not (or may not) have replaced the target; `outcome` says which is known:
    SWAP_NOT_DONE (the target is unchanged) or SWAP_UNKNOWN (it may be the old or the new one)."""

    def __init__(self, message: str, outcome: str = SWAP_UNKNOWN) -> None:
        super().__init__(message)
        self.outcome = outcome

    def __reduce__(self) -> tuple[type[ParallelSyncError], tuple[str, str]]:  # type: ignore[override]
        return (type(self), (self.message, self.outcome))


class LockedError(ParallelSyncError):
    """Another job holds the lease for the target namespace."""

    exit_code = EXIT_LOCKED


class VerifyError(ParallelSyncError):
    """Source and temp collection disagree; nothing was swapped."""

    exit_code = EXIT_VERIFY


class EncodeError(ParallelSyncError):
    """A value or document cannot be encoded. Terminal: retrying gives the same result."""

    exit_code = EXIT_ENCODE


class DocumentTooLarge(EncodeError):
    """A document exceeds MongoDB's 16 MiB limit (the message names the row key and size)."""


class WorkerDied(ParallelSyncError):
    """A worker process exited without reporting; its range can be retried."""

    transient = True


class WorkerStalled(WorkerDied):
    """A worker sent nothing (no progress, no heartbeat) for --stall-seconds; it was killed."""


class ExecutorLost(WorkerDied):
    """The coordinator lost its Dask scheduler (--executor dask): no range can run or report.
    Transient: the same copy can run again once the scheduler is back."""


class ExecutorMismatch(UsageError):
    """A Dask worker runs another parallelsync version or transcoder than the coordinator: the
    documents it wrote could differ from the others'. Install the same version on every host."""


class SnapshotMismatch(SourceError):
    """Two ranges read different snapshots (`pg_current_snapshot()` differs): the copy would not
    be one consistent image of the table. Terminal: the job fails and drops its temp."""


class InternalError(ParallelSyncError):
    """An unexpected exception (a bug), e.g. in a worker process.

    `details` keeps the formatted traceback from where it happened, so `--debug` can show it even
    when the exception crossed a process boundary (tracebacks do not pickle)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = scrub_known(details)

    def __reduce__(self) -> tuple[type[ParallelSyncError], tuple[str, str]]:  # type: ignore[override]
        return (type(self), (self.message, self.details))


class Aborted(ParallelSyncError):
    """The user asked the job to stop (SIGINT/SIGTERM)."""

    exit_code = EXIT_ABORTED
