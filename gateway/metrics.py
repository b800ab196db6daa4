"""Prometheus metrics of one gateway process (served at /metrics).

Every label comes from a closed set (a label per received MSH-9
or calling AE title would grow /metrics without bound): message types the
gateway takes, AE titles named in the configuration, else ``other``.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from mappings.hl7_orders import SUPPORTED_TYPES

OTHER = "other"
HL7_TYPE_LABELS = frozenset(f"{t}^{e}" for t, e in SUPPORTED_TYPES)


def message_type_label(header) -> str:
    """``ORM^O01`` for a type the gateway takes, ``unknown`` without an MSH, else ``other``."""
    if header is None or not header.message_type:
        return "unknown"
    name = f"{header.message_type}^{header.trigger}"
    return name if name in HL7_TYPE_LABELS else OTHER


class AeLabels:
    """Calling AE titles as metric labels: the configured ones, else ``other``."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.known = frozenset(a.strip() for a in known if a and a.strip())

    def __call__(self, ae_title: str) -> str:
        ae = (ae_title or "").strip()
        return ae if ae in self.known else OTHER


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _WorklistCollector:
    """Worklist items by status, read from the store at scrape time."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        self._count = count

    def collect(self):
        family = GaugeMetricFamily("dxagw_worklist_items", "Worklist items by status", labels=["status"])
        for status, n in sorted(self._count().items()):
            family.add_metric([status], n)
        yield family


class _SpoolCollector:
    """Spool size and free space, read at scrape time."""

    def __init__(self, totals: Callable[[], tuple[int, int]], free: Callable[[], int]) -> None:
        self._totals = totals
        self._free = free

    def collect(self):
        count, size = self._totals()
        yield GaugeMetricFamily("dxagw_spool_instances", "Instances in the spool", value=count)
        yield GaugeMetricFamily("dxagw_spool_bytes", "Bytes in the spool", value=size)
        yield GaugeMetricFamily("dxagw_spool_free_bytes", "Free bytes on the spool's file system", value=self._free())


class _OutboxCollector:
    """Queue depth by destination and state, and the oldest pending row's age."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self._stats = stats

    def collect(self):
        from datetime import datetime, timezone

        stats = self._stats()
        depth = GaugeMetricFamily("dxagw_outbox_rows", "Outbox rows by destination and state", labels=["destination", "state"])
        for destination, state, n in stats["depth"]:
            depth.add_metric([destination, state], n)
        yield depth
        age = GaugeMetricFamily("dxagw_outbox_oldest_pending_seconds", "Age of the oldest undelivered row", labels=["destination"])
        now = datetime.now(timezone.utc)
        for destination, created in stats["oldest_pending"].items():
            age.add_metric([destination], (now - datetime.fromisoformat(created)).total_seconds())
        yield age


class _ServiceCollector:
    """Service waits (docs/domain.md section 1 item 6) as histograms over every
    episode in the store, computed at scrape time and kept five minutes
    (bench/kpis.py: about 1.3 s CPU for 20,000 orders)."""

    HELP = {
        "referral_to_scan": "Time from referral to scan (MPPS start)",
        "scan_to_report": "Time from scan to the first released report",
        "report_to_delivered": "Time from report release to its delivery to every destination",
    }

    def __init__(self, episodes: Callable[[], list], max_age: float = 300.0) -> None:
        self._episodes = episodes
        self._max_age = max_age
        self._cached: tuple[float, dict] | None = None

    def collect(self):
        import time

        from mappings import kpis

        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._max_age:
            self._cached = (now, kpis.intervals(self._episodes()))
        for name, values in self._cached[1].items():
            buckets, total = kpis.histogram(values)
            yield HistogramMetricFamily(
                f"dxagw_{name}_seconds", self.HELP[name], buckets=[(floatToGoString(le), n) for le, n in buckets], sum_value=total
            )


class _CertificateCollector:
    """When each configured TLS certificate expires (its notAfter), read from
    the PEM files at scrape time and kept while a file is unchanged."""

    def __init__(self, files: dict[str, object]) -> None:
        self._files = files  # label -> Path of a PEM certificate
        self._seen: dict[str, tuple[tuple[int, int], float]] = {}

    def _not_after(self, path) -> float | None:
        import os

        from cryptography import x509

        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size)
            cached = self._seen.get(str(path))
            if cached and cached[0] == key:
                return cached[1]
            cert = x509.load_pem_x509_certificate(open(path, "rb").read())
            value = cert.not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            return None
        self._seen[str(path)] = (key, value)
        return value

    def collect(self):
        family = GaugeMetricFamily(
            "dxagw_tls_certificate_not_after_timestamp_seconds",
            "Expiry (notAfter, Unix time) of each configured TLS certificate",
            labels=["certificate"],
        )
        for label, path in sorted(self._files.items()):
            value = self._not_after(path)
            if value is not None:
                family.add_metric([label], value)
        yield family


class Metrics:
    def __init__(self, known_aes: Iterable[str] = ()) -> None:
        self.ae_label = AeLabels(known_aes)
        self.registry = CollectorRegistry()
        r = self.registry
        self.hl7_messages = Counter(
            "dxagw_hl7_messages", "HL7 messages received, by type and ACK code", ["type", "ack"], registry=r
        )
        self.hl7_latency = Histogram(
            "dxagw_hl7_ack_seconds", "Time from a message's last byte to its ACK", buckets=LATENCY_BUCKETS, registry=r
        )
        self.mllp_errors = Counter("dxagw_mllp_errors", "MLLP framing errors by reason", ["reason"], registry=r)
        self.mllp_buffered = Gauge("dxagw_mllp_buffered_bytes", "Bytes of MLLP frames held over all connections", registry=r)
        self.mllp_connections = Gauge("dxagw_mllp_connections", "Open MLLP connections", registry=r)
        self._mllp_servers: list = []
        self.mllp_buffered.set_function(lambda: sum(s.buffered for s in self._mllp_servers))
        self.mllp_connections.set_function(lambda: sum(len(s._connections) for s in self._mllp_servers))
        self.cfind = Counter("dxagw_mwl_queries", "MWL C-FIND requests by result", ["result"], registry=r)
        self.cfind_latency = Histogram(
            "dxagw_mwl_query_seconds", "MWL C-FIND time from request to final response", buckets=LATENCY_BUCKETS, registry=r
        )
        self.cfind_matches = Counter("dxagw_mwl_matches", "Worklist items returned", registry=r)
        self.associations = Counter(
            "dxagw_associations", "DICOM associations by calling AE and result", ["calling_ae", "result"], registry=r
        )
        # reason from a closed set: per_address_limit
        self.dicom_connections_refused = Counter(
            "dxagw_dicom_connections_refused", "DICOM connections closed at accept, by reason", ["reason"], registry=r
        )
        # defect from a closed set (docs/tolerated-defects.md)
        self.tolerated_defects = Counter(
            "dxagw_tolerated_defects", "Received values accepted despite a known device defect, by defect", ["defect"], registry=r
        )
        self.fhir_requests = Counter("dxagw_fhir_requests", "FHIR intake requests by status code", ["code"], registry=r)
        self.instances = Counter(
            "dxagw_instances_received", "Instances stored, by SOP class and calling AE", ["sop_class", "calling_ae"], registry=r
        )
        self.instance_bytes = Counter(
            "dxagw_instance_bytes_received", "Bytes stored, by SOP class and calling AE", ["sop_class", "calling_ae"], registry=r
        )
        self.store_refusals = Counter("dxagw_store_refusals", "C-STORE refusals by status", ["status"], registry=r)
        self.store_latency = Histogram(
            "dxagw_store_seconds", "C-STORE handling time (durable write and index)", buckets=LATENCY_BUCKETS, registry=r
        )
        self.mpps = Counter("dxagw_mpps_events", "MPPS N-CREATE/N-SET by resulting state", ["operation", "state"], registry=r)
        self.commitments = Counter("dxagw_commitment_requests", "Storage Commitment requests", registry=r)
        self.commitment_failures = Counter(
            "dxagw_commitment_failed_instances", "Instances reported in the Failed SOP Sequence", registry=r
        )
        self.outbox_attempts = Counter("dxagw_outbox_attempts", "Delivery attempts by destination", ["destination"], registry=r)
        self.outbox_failures = Counter(
            "dxagw_outbox_failures", "Failed deliveries by destination and reason", ["destination", "reason"], registry=r
        )
        self.outbox_dead = Counter("dxagw_outbox_dead_letters", "Rows dead-lettered, by destination", ["destination"], registry=r)
        self.outbox_latency = Histogram(
            "dxagw_outbox_delivery_seconds", "Time to deliver one row (its successful attempt)", ["destination"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.exams = Counter("dxagw_exams", "BMD exams, by event (parsed: report drafted, updated: a later object of the study, unparsed)", ["state"], registry=r)
        self.reports = Counter("dxagw_reports_released", "Reports released, by status (F final, C corrected)", ["status"], registry=r)
        # Fracture liaison (gateway/fls.py; mappings.bmd.fls reasons, a closed set)
        self.fls_notifications = Counter(
            "dxagw_fls_notifications", "Fracture liaison notifications rendered at release, by reason", ["reason"], registry=r
        )
        for reason in ("osteoporosis", "fragility_fracture", "vfa_finding"):
            self.fls_notifications.labels(reason)
        # Referrer entitlement (mappings.entitlement.REASONS, a closed set)
        from mappings.entitlement import REASONS

        self.orders_held = Counter("dxagw_orders_held", "Order steps held for an unentitled referrer, by reason", ["reason"], registry=r)
        self.orders_refused = Counter(
            "dxagw_orders_refused", "Orders refused (AR) for an unentitled referrer, by reason", ["reason"], registry=r
        )
        for reason in REASONS:
            self.orders_held.labels(reason)
            self.orders_refused.labels(reason)
        self.api_requests = Counter("dxagw_api_requests", "Admin API requests by route and status", ["route", "code"], registry=r)

    def watch_mllp(self, server) -> None:
        """Count an MLLP listener (plain or TLS) in the connection and buffer gauges."""
        self._mllp_servers.append(server)

    def watch_worklist(self, count: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_WorklistCollector(count))

    def watch_outbox(self, stats: Callable[[], dict]) -> None:
        self.registry.register(_OutboxCollector(stats))

    def watch_certificates(self, files: dict) -> None:
        """``files``: label (dicom, hl7, http, destination:NAME) -> PEM path."""
        self.registry.register(_CertificateCollector(files))

    def watch_service(self, episodes: Callable[[], list]) -> None:
        self.registry.register(_ServiceCollector(episodes))

    def watch_spool(self, totals: Callable[[], tuple[int, int]], free: Callable[[], int]) -> None:
        self.registry.register(_SpoolCollector(totals, free))
