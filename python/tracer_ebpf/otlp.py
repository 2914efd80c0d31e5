"""OtlpExporter: events to an OpenTelemetry Collector (or any OTLP logs
receiver) as OTLP log records, over gRPC or HTTP/protobuf (docs/otlp.md)."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _native, checks
from ._native import Event
from .errors import ConfigError, ExporterClosedError

PathLike = Union[str, "os.PathLike[str]"]
CLOSE_SECONDS = 5.0  # close(): at most this long to send what is buffered, by default


def _pairs(name: str, value: Any) -> Optional[List[Tuple[str, str]]]:
    """A mapping (or iterable of pairs) of strings as a list of pairs."""
    if value is None:
        return None
    items = list(value.items()) if isinstance(value, Mapping) else value
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{name} must be a mapping of str to str, not {type(value).__name__}")
    out: List[Tuple[str, str]] = []
    try:
        for k, v in items:
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"{name} must map str to str, not {type(k).__name__} to {type(v).__name__}")
            out.append((k, v))
    except (TypeError, ValueError) as e:
        if isinstance(e, TypeError) and str(e).startswith(name):
            raise
        raise TypeError(f"{name} must be a mapping of str to str, not {type(value).__name__}") from None
    return out


def _opt_str(name: str, value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _opt_path(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        p = os.fspath(value)
    except TypeError:
        raise TypeError(f"{name} must be a path, not {type(value).__name__}") from None
    if not isinstance(p, str):
        raise TypeError(f"{name} must be a str path, not bytes")
    return p


class OtlpExporter:
    """Sends events as OTLP log records, from a thread of its own.

    >>> with OtlpExporter("http://localhost:4318") as exporter:   # doctest: +SKIP
    ...     with Tracer("syscalls/sys_enter_write") as t:
    ...         for _ in range(50):
    ...             t.export(exporter, timeout=0.1)
    ...     print(exporter.stats())

    Every option not given is read from the standard environment variables
    (``OTEL_EXPORTER_OTLP_LOGS_*``, then ``OTEL_EXPORTER_OTLP_*``,
    ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), then defaults:
    http/protobuf to http://localhost:4318/v1/logs. Bad values, given or
    from the environment, raise ``ConfigError`` here, before anything runs.

    Args:
        endpoint: the receiver. With a path (other than ``/``) the logs URL
            itself; without, a base URL to which HTTP adds ``/v1/logs``. A
            gRPC endpoint may be ``host:port`` (TLS unless ``insecure``).
        protocol: ``"grpc"`` or ``"http/protobuf"``.
        headers: request headers (gRPC metadata), e.g. ``{"authorization": "Bearer x"}``;
            replaces the environment's.
        compression: ``"gzip"`` or ``"none"``.
        timeout: seconds allowed per request (default 10).
        certificate: PEM file of the CA(s) that verify an https receiver
            (default: the system's roots).
        client_certificate, client_key: PEM files for mutual TLS.
        insecure: a gRPC ``host:port`` endpoint is plaintext.
        service_name: ``service.name`` of the resource (default
            ``tracer-ebpf``).
        resource_attributes: more resource attributes, over
            ``OTEL_RESOURCE_ATTRIBUTES``.
        buffer_bytes: most bytes of records waiting to be sent (default
            64 MiB, at least 4 MiB). Exporting never waits: what does not
            fit is dropped and counted in ``export_dropped``.

    Nothing connects before the first records: a receiver that is not up
    yet is no error (its records wait in the buffer, and are retried).
    Every record handed over ends up counted in exactly one of
    ``exported``, ``export_failed`` (refused by the receiver) and
    ``export_dropped`` (no room in the buffer, or no time left at
    ``close()``); see ``stats()``.
    """

    def __init__(
        self,
        endpoint: Optional[str] = None,
        *,
        protocol: Optional[str] = None,
        headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
        compression: Optional[str] = None,
        timeout: Optional[float] = None,
        certificate: Optional[PathLike] = None,
        client_certificate: Optional[PathLike] = None,
        client_key: Optional[PathLike] = None,
        insecure: Optional[bool] = None,
        service_name: Optional[str] = None,
        resource_attributes: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
        buffer_bytes: Optional[int] = None,
    ) -> None:
        self._native: Optional[_native.NativeExporter] = None
        if timeout is not None and checks.seconds("timeout", timeout) == 0:
            raise ConfigError("timeout must be more than 0 seconds")
        lo, hi = _native.LIMITS["otlp_buffer_bytes"]
        self._native = _native.NativeExporter(
            endpoint=_opt_str("endpoint", endpoint),
            protocol=_opt_str("protocol", protocol),
            headers=_pairs("headers", headers),
            compression=_opt_str("compression", compression),
            timeout=None if timeout is None else float(timeout),
            certificate=_opt_path("certificate", certificate),
            client_certificate=_opt_path("client_certificate", client_certificate),
            client_key=_opt_path("client_key", client_key),
            insecure=None if insecure is None else checks.flag("insecure", insecure),
            service_name=_opt_str("service_name", service_name),
            resource_attributes=_pairs("resource_attributes", resource_attributes) or [],
            buffer_bytes=checks.opt_size("buffer_bytes", buffer_bytes, lo, hi),
        )

    def _n(self) -> _native.NativeExporter:
        if self._native is None or self._native.closed:
            raise ExporterClosedError("export to a closed OTLP exporter")
        return self._native

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "OtlpExporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = CLOSE_SECONDS) -> Dict[str, int]:
        """Stops taking records and sends what is buffered for at most
        ``timeout`` seconds; what is left then (a request under way
        included) is counted in ``export_dropped``. Returns the final
        counters. Idempotent."""
        wait = checks.seconds("timeout", timeout)
        if self._native is None:
            return {}
        return dict(self._native.close(wait))

    def flush(self, timeout: float = CLOSE_SECONDS) -> bool:
        """Waits up to ``timeout`` seconds for every buffered record to be
        sent (or refused); True if they were."""
        return bool(self._n().flush(checks.seconds("timeout", timeout)))

    @property
    def closed(self) -> bool:
        return self._native is None or self._native.closed

    def __repr__(self) -> str:
        if self._native is None:
            return "<OtlpExporter>"
        state = " closed" if self._native.closed else ""
        return f"<OtlpExporter{state} {self._native.describe()}>"

    # -- exporting ---------------------------------------------------------
    def export(self, events: Iterable[Event]) -> int:
        """Buffers ``events`` (``Event`` objects, e.g. from ``Tracer.poll()``)
        for sending, without waiting; returns how many fit in the buffer
        (the others are counted in ``export_dropped``). The fast path,
        with no Python object per event, is ``Tracer.export(exporter)``."""
        items = list(events)
        for e in items:
            if not isinstance(e, Event):
                raise TypeError(f"events must be Event objects, not {type(e).__name__}")
        return int(self._n().export(items))

    # -- state -------------------------------------------------------------
    def stats(self) -> Dict[str, int]:
        """Every counter: ``export_records`` (handed over; the last
        ``tracer_ebpf.seq`` given), ``exported`` (accepted by the receiver),
        ``export_failed`` (refused by it, for good), ``export_dropped``
        (no room in the buffer, or left at ``close()``), ``export_retries``,
        ``export_requests``, ``export_buffered``/``export_buffered_bytes``
        (waiting or being sent) and ``export_buffer_peak_bytes``. Whenever
        no export is under way, ``export_records == exported +
        export_failed + export_dropped + export_buffered``. After
        ``close()``: the final values."""
        if self._native is None:
            return {}
        return dict(self._native.stats())

    @property
    def endpoint(self) -> str:
        """Where the records go (the full URL for HTTP)."""
        return self._native.endpoint if self._native else ""

    @property
    def protocol(self) -> str:
        return self._native.protocol if self._native else ""

    @property
    def compression(self) -> str:
        return self._native.compression if self._native else ""

    @property
    def timeout(self) -> float:
        """Seconds allowed per request."""
        return self._native.timeout if self._native else 0.0

    @property
    def buffer_bytes(self) -> int:
        return self._native.buffer_bytes if self._native else 0

    @property
    def resource(self) -> Dict[str, str]:
        """The configured resource attributes (``service.name`` among them;
        ``host.name``, ``host.id``, ``service.instance.id`` and
        ``tracer_ebpf.source`` are added when not configured)."""
        return dict(self._native.resource) if self._native else {}

    @property
    def source(self) -> str:
        """``tracer_ebpf.source``: the id this exporter's
        ``tracer_ebpf.seq`` numbers count in."""
        return self._native.source if self._native else ""

    @property
    def last_error(self) -> Optional[str]:
        """Why the last request failed (retried or not), if one did."""
        return self._native.last_error if self._native else None

    def describe(self) -> str:
        """One line: protocol, endpoint and compression."""
        return self._native.describe() if self._native else ""
