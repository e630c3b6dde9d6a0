"""OpenTelemetry traces: off and nearly free by default, one switch to turn on.

``span(name, **attributes)`` is what the code calls around its stages (validate, embed, commit,
index, query, checkpoint; the server adds one span per request). While tracing is off it returns
one shared no-op context manager: no opentelemetry import, no allocation beyond the call.
``import retrieval`` never imports opentelemetry.

Turn it on with :func:`enable` (spans go to the global tracer provider, or the one given: tests pass
an SDK provider with an in-memory exporter), or with :func:`configure`, which builds an SDK provider
exporting over OTLP/HTTP from a config section and the standard ``OTEL_*`` variables
(``retrieval run`` calls it with the config file's ``otel`` section).

Example:
    >>> from retrieval.telemetry import span
    >>> with span("retrieval.query", collection="photos", n_queries=3):
    ...     pass
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Mapping

_tracer: Any = None
_NOOP = contextlib.nullcontext()
_OTEL_KEYS = ("enabled", "endpoint", "service_name", "exporter", "headers", "sample_ratio")


def span(name: str, **attributes: Any) -> Any:
    """A context manager timing ``name`` as a span with ``attributes`` (None values dropped).

    Args:
        name: the span name, ``retrieval.<stage>`` by convention.
        **attributes: e.g. ``collection=``, ``tenant=``, ``records=``; strings, numbers or bools.
    """
    tracer = _tracer
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None})


def server_span(name: str, headers: Mapping[str, str], **attributes: Any) -> Any:
    """Like :func:`span`, for a request a server received: a SERVER span that continues the trace
    the caller sent (W3C ``traceparent``), so client and server spans form one trace."""
    tracer = _tracer
    if tracer is None:
        return _NOOP
    from opentelemetry import propagate, trace

    return tracer.start_as_current_span(
        name, context=propagate.extract(headers), kind=trace.SpanKind.SERVER,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def enabled() -> bool:
    """Whether spans are being recorded (hot paths may skip computing attributes when not)."""
    return _tracer is not None


def enable(tracer_provider: Any = None) -> None:
    """Record spans with ``tracer_provider`` (default: OpenTelemetry's global provider).

    Example:
        >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
        >>> enable(TracerProvider())  # doctest: +SKIP
    """
    global _tracer
    from opentelemetry import trace

    from retrieval import __version__

    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    _tracer = provider.get_tracer("retrieval", __version__)


def disable() -> None:
    """Stop recording spans (``span`` is a no-op again)."""
    global _tracer
    _tracer = None


def wanted(section: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a config ``otel`` section or the standard variables ask for traces.

    Example:
        >>> wanted(None, environ={}), wanted({"endpoint": "http://localhost:4318"}, environ={})
        (False, True)
        >>> wanted(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
        True
    """
    environ = os.environ if environ is None else environ
    section = dict(section or {})
    _check_section(section)
    if str(environ.get("OTEL_SDK_DISABLED", "")).lower() == "true" or section.get("enabled") is False:
        return False
    if section.get("enabled") or section.get("endpoint"):
        return True
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return True
    return environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() in ("otlp", "console")


def configure(section: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> Any:
    """Build an SDK tracer provider from an ``otel`` config section and ``OTEL_*``; enable it.

    Config keys (each falls back to its standard variable): ``endpoint`` (OTLP/HTTP collector, e.g.
    ``http://localhost:4318``; ``OTEL_EXPORTER_OTLP_ENDPOINT``), ``service_name``
    (``OTEL_SERVICE_NAME``, default ``retrieval``), ``exporter`` (``otlp`` or ``console``;
    ``OTEL_TRACES_EXPORTER``), ``headers`` (a mapping), ``sample_ratio`` (0-1, default 1),
    ``enabled``.

    Returns:
        The provider (call ``shutdown()`` to flush at exit), or None when tracing stays off.
    """
    environ = os.environ if environ is None else environ
    if not wanted(section, environ):
        return None
    section = dict(section or {})
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as e:  # pragma: no cover - the sdk is a server dependency
        from retrieval.errors import InvalidArgumentError

        raise InvalidArgumentError("tracing is configured but opentelemetry-sdk is not installed: pip install 'retrieval[server]'") from e
    name = section.get("service_name") or environ.get("OTEL_SERVICE_NAME") or "retrieval"
    ratio = float(section.get("sample_ratio", 1.0))
    provider = TracerProvider(resource=Resource.create({"service.name": str(name)}), sampler=ParentBased(TraceIdRatioBased(ratio)))
    exporter_name = str(section.get("exporter") or environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower()
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        exporter = _otlp_exporter(section)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    enable(provider)
    return provider


def _otlp_exporter(section: Mapping[str, Any]) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    options: dict[str, Any] = {}
    endpoint = section.get("endpoint")
    if endpoint:
        endpoint = str(endpoint).rstrip("/")
        # A bare collector address gets the traces path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
        options["endpoint"] = endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"
    if section.get("headers"):
        options["headers"] = {str(k): str(v) for k, v in dict(section["headers"]).items()}
    return OTLPSpanExporter(**options)


def _check_section(section: Mapping[str, Any]) -> None:
    unknown = sorted(set(section) - set(_OTEL_KEYS))
    if unknown:
        import difflib

        from retrieval.errors import InvalidArgumentError

        close = difflib.get_close_matches(unknown[0], _OTEL_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys are {list(_OTEL_KEYS)}"
        raise InvalidArgumentError(f"unknown otel config key {unknown[0]!r}{hint}")


def inject_context(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing ``headers`` (clients); unchanged while off."""
    if _tracer is not None:
        from opentelemetry import propagate

        propagate.inject(headers)
    return headers
