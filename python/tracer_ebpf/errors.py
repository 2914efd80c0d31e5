"""Exceptions raised by tracer_ebpf.

Every error is a :class:`TracerError`; the specific classes also derive from
the matching built-in exception, so ``except PermissionError`` or ``except
ValueError`` work as expected.
"""


class TracerError(Exception):
    """Base class of every tracer_ebpf error."""


class TracerPermissionError(TracerError, PermissionError):
    """Missing privileges (needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN)."""


class BtfMissingError(TracerError):
    """The kernel has no BTF (/sys/kernel/btf/vmlinux): CONFIG_DEBUG_INFO_BTF is needed."""


class TracefsError(TracerError):
    """tracefs is not mounted and could not be mounted."""


class UnknownEventError(TracerError, ValueError):
    """An event name that matches no known event; the message lists close matches."""


class TracepointMissingError(TracerError):
    """The running kernel lacks a requested tracepoint."""


class ConfigError(TracerError, ValueError):
    """An invalid option value (sizes, pids, comm prefixes, ...)."""


class CgroupError(ConfigError):
    """A cgroup filter path that cannot be used: it does not exist, is not a
    directory, is not in the cgroup2 hierarchy, no cgroup2 is mounted (a
    cgroup v1-only host), or more than 8 are given. Nothing is changed."""


class TracerClosedError(TracerError, ValueError):
    """The tracer is closed (by ``close()``, perhaps from another thread):
    reading from it or changing it is an error, as for a closed file."""


class ExporterClosedError(TracerClosedError):
    """The OTLP exporter is closed (``OtlpExporter.close()``): nothing more
    can be exported through it."""


class TracerMemoryError(TracerError, MemoryError):
    """The kernel could not allocate the tracer's buffers (the message says how
    much was asked and which options lower it)."""


class VerifierError(TracerError):
    """The kernel's verifier rejected the BPF program; the message has the log."""


class DatasetError(TracerError, OSError):
    """A Parquet dataset could not be written (a full disk, a directory that
    went away...); the message names the file. The rows of a file that
    could not be completed are counted in the summary's ``rows_lost``."""


__all__ = [
    "DatasetError",
    "TracerError",
    "TracerPermissionError",
    "BtfMissingError",
    "TracefsError",
    "UnknownEventError",
    "TracepointMissingError",
    "ConfigError",
    "CgroupError",
    "TracerClosedError",
    "ExporterClosedError",
    "TracerMemoryError",
    "VerifierError",
]
