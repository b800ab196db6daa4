"""RIS/HIS order sender: HL7 v2 over MLLP or FHIR ServiceRequest over HTTP.

Sends orders (ORM^O01 or OMI^O23), optional ADT^A08 updates and ORC-1 CA
cancels on one MLLP connection, original mode (one message, then its ACK),
and checks every ACK: MSA-1 AA/CA and MSA-2 == the MSH-10 sent.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hl7v2.mllp import MllpClient
from simulators import orders as om
from simulators.report import ConformanceReport
from simulators.tls import client_tls


def _now_ts() -> str:
    return time.strftime("%Y%m%d%H%M%S")


def _local_tz() -> str:
    z = time.strftime("%z")  # +0100
    return f"{z[:3]}:{z[3:]}" if z else "Z"


def _referred(day: str, days_before: int) -> str:
    """09:00 on the day ``days_before`` before ``day`` (YYYYMMDD), as HL7 TS."""
    when = datetime.datetime.strptime(day, "%Y%m%d") - datetime.timedelta(days=days_before)
    return when.strftime("%Y%m%d") + "090000"


@dataclass
class RisOptions:
    host: str = "127.0.0.1"
    port: int = 2575
    format: str = "orm"  # orm | omi | fhir
    fhir_url: str = ""
    token: str = ""  # bearer token for the FHIR endpoint
    tls_ca: str = ""  # MLLP over TLS: the gateway's CA (PEM); with tls_cert/tls_key our client certificate
    tls_cert: str = ""
    tls_key: str = ""
    count: int = 1
    station_ae: str = "DXA1"
    seed: int = 1
    files: str = ""  # glob of ER7 files sent as they are
    cancel: bool = False
    update: bool = False  # ADT^A08 per patient
    version: str = ""  # HL7 version (default 2.3.1 for ORM, 2.5.1 for OMI)
    charset: str = "UNICODE UTF-8"
    day: str = ""  # YYYYMMDD the orders are for (default today)
    timeout: float = 30.0
    prefix: str = "SIM"
    referred_days: int | None = None  # referral made this many days before the day (ORC-9, authoredOn)
    referrer: str = ""  # XCN id^family^given for ORC-12/OBR-16/PV1-8 (default the generated one)


class RisSimulator:
    """``RisSimulator(RisOptions(...)).run()`` sends everything and returns
    the report; ``sent`` lists (control ID, kind) in order."""

    def __init__(self, options: RisOptions | None = None, **kw) -> None:
        self.options = options or RisOptions(**kw)
        self._report = ConformanceReport("ris")
        self.sent: list[tuple[str, str]] = []
        self.orders: list[om.Order] = []
        self._seq = 0

    def report(self) -> ConformanceReport:
        return self._report

    def _generated(self, day: str) -> list[om.Order]:
        """The orders for ``day``, with --referrer and --referred applied."""
        o = self.options
        orders = om.random_orders(o.seed, o.count, day=day, station_ae=o.station_ae, prefix=o.prefix)
        change: dict = {}
        if o.referrer:
            change["referrer"] = o.referrer
        if o.referred_days is not None:
            change["referred_at"] = _referred(day, o.referred_days)
        return [dataclasses.replace(order, **change) for order in orders] if change else orders

    # the one-shot simulators have start/stop for a uniform API
    def start(self) -> None:
        self.run()

    def stop(self) -> None:
        pass

    def _control_id(self, kind: str) -> str:
        self._seq += 1
        return f"{kind}{self.options.seed}-{self._seq:06d}"

    def build_messages(self) -> list[tuple[str, str, bytes]]:
        """(kind, MSH-10, bytes) for everything an HL7 run sends."""
        o = self.options
        if o.files:
            out = []
            for path in sorted(glob.glob(o.files)):
                raw = Path(path).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
                out.append((f"file:{Path(path).name}", om.control_id_of(raw), raw))
            return out
        day = o.day or time.strftime("%Y%m%d")
        self.orders = self._generated(day)
        out = []
        fmt = o.format
        version = o.version or ("2.5.1" if fmt == "omi" else "2.3.1")
        kw = dict(timestamp=_now_ts(), version=version, charset=o.charset)
        for order in self.orders:
            cid = self._control_id("O")
            text = om.build_omi(order, cid, **kw) if fmt == "omi" else om.build_orm(order, cid, **kw)
            out.append((f"{fmt.upper()} NW {order.accession}", cid, om.encode(text, o.charset)))
        if o.update:
            for order in self.orders:
                cid = self._control_id("A")
                patient = om.renamed(order.patient, family=order.patient.family + "-Ærø")
                text = om.build_adt_a08(patient, cid, timestamp=kw["timestamp"], charset=o.charset)
                out.append((f"ADT^A08 {patient.patient_id}", cid, om.encode(text, o.charset)))
        if o.cancel:
            for order in self.orders:
                cid = self._control_id("C")
                text = om.build_cancel(order, cid, fmt=fmt, **kw)
                out.append((f"{fmt.upper()} CA {order.accession}", cid, om.encode(text, o.charset)))
        return out

    def run(self) -> ConformanceReport:
        if self.options.format == "fhir":
            self._run_fhir()
        else:
            self._run_hl7()
        return self._report

    def _run_hl7(self) -> None:
        o = self.options
        r = self._report
        messages = self.build_messages()
        if not messages:
            r.add("messages to send", False, f"nothing matched {o.files!r}" if o.files else "count is 0")
            return
        latencies = []
        t0 = time.perf_counter()
        client = None
        try:
            client = MllpClient(o.host, o.port, timeout=o.timeout, tls=client_tls(o.tls_ca, o.tls_cert, o.tls_key) if o.tls_ca else None)
            r.add("connect", True, f"{o.host}:{o.port}")
        except OSError as exc:
            r.add("connect", False, f"{o.host}:{o.port}: {exc}")
            return
        try:
            for kind, cid, data in messages:
                start = time.perf_counter()
                try:
                    ack = client.request(data)
                except (OSError, ConnectionError) as exc:
                    r.add(f"ACK {kind} [{cid}]", False, f"no ACK: {exc}")
                    # reconnect once so one dropped link does not fail the rest
                    client.close()
                    try:
                        client = MllpClient(o.host, o.port, timeout=o.timeout, tls=client_tls(o.tls_ca, o.tls_cert, o.tls_key) if o.tls_ca else None)
                    except OSError:
                        return
                    continue
                latencies.append(time.perf_counter() - start)
                self.sent.append((cid, kind))
                ok, detail = om.check_ack(ack, cid)
                r.add(f"ACK {kind} [{cid}]", ok, detail)
        finally:
            client.close()
        _stats(r, latencies, time.perf_counter() - t0)

    def _run_fhir(self) -> None:
        o = self.options
        r = self._report
        if not o.fhir_url:
            r.add("fhir url", False, "--fhir-url is required with --format fhir")
            return
        day = o.day or time.strftime("%Y%m%d")
        self.orders = self._generated(day)
        url = o.fhir_url.rstrip("/") + "/ServiceRequest"
        tz = _local_tz()
        bodies = []
        for order in self.orders:
            for i, step in enumerate(order.steps):
                bodies.append((f"ServiceRequest {step.accession}", om.build_service_request(order, step=i, tz=tz)))
        if o.cancel:
            for order in self.orders:
                for i, step in enumerate(order.steps):
                    bodies.append((f"ServiceRequest revoked {step.accession}", om.build_service_request(order, step=i, status="revoked", tz=tz)))
        latencies = []
        t0 = time.perf_counter()
        for kind, body in bodies:
            start = time.perf_counter()
            ok, detail = post_json(url, body, o.timeout, token=o.token)
            latencies.append(time.perf_counter() - start)
            r.add(f"POST {kind}", ok, detail)
            self.sent.append((body["id"], kind))
        _stats(r, latencies, time.perf_counter() - t0)


def post_json(url: str, body: dict, timeout: float, token: str = "") -> tuple[bool, str]:
    data = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status = resp.status
            text = resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        text = exc.read(4096).decode("utf-8", "replace")
        return False, f"HTTP {exc.code}: {text[:300]}"
    except OSError as exc:
        return False, f"no answer: {exc}"
    if status not in (200, 201):
        return False, f"HTTP {status}"
    try:
        answer = json.loads(text) if text.strip() else {}
    except ValueError:
        return False, f"HTTP {status} with a body that is not JSON"
    kind = answer.get("resourceType", "") if isinstance(answer, dict) else ""
    if kind == "OperationOutcome" and any(i.get("severity") in ("error", "fatal") for i in answer.get("issue", [])):
        return False, f"HTTP {status} with an error OperationOutcome"
    return True, f"HTTP {status}" + (f" {kind}" if kind else "")


def _stats(r: ConformanceReport, latencies: list[float], elapsed: float) -> None:
    if not latencies:
        return
    s = sorted(latencies)
    r.stats.update(
        messages=len(s),
        elapsed_s=round(elapsed, 3),
        per_second=round(len(s) / elapsed, 1) if elapsed else None,
        latency_ms_p50=round(s[len(s) // 2] * 1000, 2),
        latency_ms_p95=round(s[min(len(s) - 1, int(len(s) * 0.95))] * 1000, 2),
        latency_ms_max=round(s[-1] * 1000, 2),
    )
