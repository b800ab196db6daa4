"""EMR simulator: MLLP receiver for ORU^R01 and a FHIR endpoint for Bundles.

Each ORU is checked (MSH-9 ORU^R01, MSH-10, PID-3, OBR-25 result status
P/F/C, OBX typed: NM values parse as numbers and are LOINC coded) and
answered with an original-mode ACK whose MSA-2 is the received MSH-10.
POST / takes a FHIR R4 Bundle, validated with fhir.resources (R4B models).
Faults for tests: ``answer`` AE/AR, ``delay`` seconds, ``drop`` the
connection without an answer, optionally only for the first ``fail_first``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass

from aiohttp import web

from hl7v2 import ack as hl7ack
from hl7v2.charsets import codec_of
from hl7v2.er7 import Header, Segment, msh_field, split_message
from hl7v2.errors import Hl7Error
from hl7v2.mllp import FrameTooLarge, frame, read_frame
from simulators.report import Check, ConformanceReport

RESULT_STATUS = ("P", "F", "C")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_LOINC = re.compile(r"^(\d{1,7})-(\d)$")


# HL7 Table 0396 coding systems other than LOINC that a result may carry.
_STANDARD_SYSTEMS = frozenset({"DCM", "SCT"})


def _local(system: str) -> bool:
    """HL7 Table 0396: "L" or a "99zzz" coding system is local."""
    return system == "L" or system.startswith("99")


def loinc_valid(code: str) -> bool:
    """LOINC code format and mod-10 check digit."""
    m = _LOINC.match(code or "")
    if not m:
        return False
    total = 0
    for i, ch in enumerate(reversed(m.group(1))):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10 == int(m.group(2))


def _f(seg: Segment, n: int, comp: int = 0) -> str:
    """Field n as written (comp 0), or component comp (1-based) of its first
    repetition, unescaped."""
    return seg.raw(n) if comp == 0 else seg.get(n, comp)


@dataclass
class OruResult:
    control_id: str
    checks: list[Check]
    sending: tuple[str, str] = ("", "")
    version: str = "2.5.1"
    charset: str = ""
    parsed: bool = False

    @property
    def ok(self) -> bool:
        return all(c.passed for c in self.checks)


def check_oru(raw: bytes) -> OruResult:
    """Checks of one received message (no MLLP framing)."""
    checks: list[Check] = []
    # MSH-18 before decoding (ASCII-compatible prefix); none: UTF-8
    charset = msh_field(raw, 18).split("^")[0]
    codec = codec_of(charset, "utf-8")
    if codec is None:
        return OruResult("", [Check("MSH-18 character set", False, f"unsupported {charset!r}")], charset=charset)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return OruResult("", [Check("decode", False, f"bytes are not valid {charset or 'UTF-8'}")], charset=charset)
    try:
        msg = split_message(text, codec)
    except Hl7Error as exc:
        return OruResult("", [Check("parse", False, f"not an HL7 v2 message: {exc}")], charset=charset)
    msh = msg.segments[0]
    control_id = _f(msh, 10)
    sending = (_f(msh, 3), _f(msh, 4))
    version = _f(msh, 12, 1) or "2.5.1"
    mtype = f"{_f(msh, 9, 1)}^{_f(msh, 9, 2)}"
    checks.append(Check("MSH-9 ORU^R01", mtype == "ORU^R01", mtype))
    checks.append(Check("MSH-10 control ID", bool(control_id), control_id or "empty"))
    pids = msg.all("PID")
    checks.append(Check("PID-3 patient ID", bool(pids) and bool(_f(pids[0], 3, 1)), _f(pids[0], 3, 1) if pids else "no PID segment"))
    obrs = msg.all("OBR")
    if not obrs:
        checks.append(Check("OBR present", False, "no OBR segment"))
    for i, obr in enumerate(obrs, 1):
        status = _f(obr, 25)
        checks.append(Check(f"OBR[{i}]-25 result status", status in RESULT_STATUS, status or "empty"))
    obxs = msg.all("OBX")
    if not obxs:
        checks.append(Check("OBX present", False, "no OBX segment"))
    numeric = 0
    loinc_coded = 0
    for i, obx in enumerate(obxs, 1):
        vtype = _f(obx, 2)
        code, system = _f(obx, 3, 1), _f(obx, 3, 3)
        alt_code, alt_system = _f(obx, 3, 4), _f(obx, 3, 6)
        value = _f(obx, 5)
        problems = []
        if vtype not in ("NM", "ST", "TX", "FT", "CE", "CWE", "CNE", "ED", "RP", "SN", "DT", "TS", "DTM", "NA", "CF"):
            problems.append(f"OBX-2 value type {vtype!r} unknown")
        if not code:
            problems.append("OBX-3 observation identifier empty")
        if vtype == "NM":
            numeric += 1
            if not _NUMBER.match(value.strip()):
                problems.append(f"OBX-5 {value[:20]!r} is not a number")
            loinc = code if system == "LN" else alt_code if alt_system == "LN" else ""
            if loinc:
                loinc_coded += 1
                if not loinc_valid(loinc):
                    problems.append(f"OBX-3 {loinc!r} is not a valid LOINC code (format or check digit)")
            elif not (_local(system) or system in _STANDARD_SYSTEMS):
                # No LOINC exists for some sites (single vertebrae, trochanter):
                # a local code (HL7 "L" or "99..." coding system) is acceptable,
                # and so is a DICOM concept (dose: DCM 113722, 113725).
                problems.append(f"OBX-3 {code}^^{system} is neither LOINC nor a local code")
        if vtype in ("CE", "CWE") and not _f(obx, 5, 1):
            problems.append("coded OBX-5 empty")
        res = _f(obx, 11)
        if res not in RESULT_STATUS:
            problems.append(f"OBX-11 result status {res!r} not P/F/C")
        checks.append(Check(f"OBX[{i}] {vtype} {code}", not problems, "; ".join(problems) or value[:40]))
    if numeric:
        checks.append(Check("numeric results LOINC-coded", loinc_coded > 0, f"{loinc_coded} of {numeric} NM OBX carry a LOINC code"))
    return OruResult(control_id, checks, sending, version, charset, parsed=True)


def build_ack(result: OruResult, code: str, *, timestamp: str, control_id: str, text: str = "") -> bytes:
    """Original-mode ACK from EMR^HOSP; MSA-2 echoes the message's MSH-10.
    Not AA: an ERR with ERR-3 102 (a content error, AE) or 207 (AR)."""
    header = Header(result.sending[0], result.sending[1], "EMR", "HOSP", "", "ORU", "R01", result.control_id, "P", result.version, result.charset)
    error = Hl7Error(text, code=102 if code == "AE" else 207, ack_code=code) if code != "AA" else None
    ack = hl7ack.build_ack(header, code, control_id=control_id, timestamp=timestamp, error=error, text=text)
    return hl7ack.ack_bytes(ack, result.charset)


# -- FHIR ----------------------------------------------------------------------


def check_bundle(body) -> list[Check]:
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    if not isinstance(body, dict):
        return [Check("FHIR body", False, "not a JSON object")]
    try:
        bundle = Bundle.model_validate(body)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        return [Check("FHIR Bundle validates (R4)", False, errs)]
    checks = [Check("FHIR Bundle validates (R4)", True, f"type {bundle.type}, {len(bundle.entry or [])} entries")]
    kinds = [e.resource.get_resource_type() for e in bundle.entry or [] if e.resource is not None]
    checks.append(Check("Bundle has a DiagnosticReport", "DiagnosticReport" in kinds, ", ".join(sorted(set(kinds)))))
    for e in bundle.entry or []:
        res = e.resource
        if res is None or res.get_resource_type() != "Observation":
            continue
        codings = res.code.coding or [] if res.code else []
        loinc = [c.code for c in codings if c.system == "http://loinc.org"]
        problems = []
        if not loinc and not any(c.system and c.code for c in codings):
            problems.append("no coding")
        elif not all(loinc_valid(c) for c in loinc):
            problems.append(f"invalid LOINC {loinc}")
        if res.valueQuantity is not None and res.valueQuantity.value is None:
            problems.append("valueQuantity without value")
        checks.append(Check(f"Observation {loinc[0] if loinc else res.id}", not problems, "; ".join(problems) or str(res.valueQuantity.value if res.valueQuantity else "")))
    return checks


@dataclass
class EmrOptions:
    host: str = "127.0.0.1"
    port: int = 2576
    http_port: int | None = None
    answer: str = "auto"  # auto | AA | AE | AR
    delay: float = 0.0
    drop: bool = False
    fail_first: int = 0  # faults only for the first N messages (0 = all)
    max_frame: int = 16 * 1024 * 1024
    tls_cert: str = ""  # MLLP over TLS (and HTTPS for FHIR) on our ports: our certificate and key (PEM)
    tls_key: str = ""
    tls_ca: str = ""  # with TLS: the CA a sender's certificate must chain to (then required)


class EmrSimulator:
    def __init__(self, options: EmrOptions | None = None, **kw) -> None:
        self.options = options or EmrOptions(**kw)
        self._report = ConformanceReport("emr")
        self.messages: list[tuple[str, bytes]] = []  # (MSH-10, raw)
        self.bundles: list[dict] = []
        self._received = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ack_seq = 0
        self.port: int | None = None
        self.http_port: int | None = None

    def report(self) -> ConformanceReport:
        self._report.stats.update(hl7_messages=len(self.messages), fhir_bundles=len(self.bundles))
        return self._report

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "EmrSimulator":
        self._thread = threading.Thread(target=self._thread_main, name="emr-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("EMR simulator did not start")
        if self._error:
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> ConformanceReport:
        """Serve in this thread until :meth:`stop` is called from elsewhere."""
        self._thread_main()
        if self._error:
            raise self._error
        return self.report()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        o = self.options
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = None
        if o.tls_cert:
            from simulators.tls import server_tls

            context = server_tls(o.tls_cert, o.tls_key, o.tls_ca)
        server = await asyncio.start_server(self._on_connection, o.host, o.port, limit=1024 * 1024, ssl=context)
        self.port = server.sockets[0].getsockname()[1]
        runner = None
        if o.http_port is not None:
            app = web.Application(client_max_size=o.max_frame)
            app.router.add_post("/", self._on_fhir)
            app.router.add_post("/Bundle", self._on_fhir)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, o.host, o.http_port, ssl_context=context)
            await site.start()
            self.http_port = runner.addresses[0][1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            if runner is not None:
                await runner.cleanup()

    def _fault_applies(self, n: int) -> bool:
        return self.options.fail_first == 0 or n <= self.options.fail_first

    # -- MLLP ----------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        o = self.options
        try:
            while True:
                try:
                    raw = await read_frame(reader, o.max_frame)
                except FrameTooLarge as exc:
                    self._report.add("MLLP frame size", False, str(exc))
                    return
                except ConnectionError:
                    return
                if raw is None:
                    return
                with self._lock:
                    self._received += 1
                    n = self._received
                result = check_oru(raw)
                with self._lock:
                    self.messages.append((result.control_id, raw))
                tag = f"ORU [{result.control_id or n}]"
                self._report.extend(Check(f"{tag} {c.name}", c.passed, c.detail) for c in result.checks)
                fault = self._fault_applies(n)
                if o.delay and fault:
                    await asyncio.sleep(o.delay)
                if o.drop and fault:
                    return
                code = o.answer if (o.answer != "auto" and fault) else ("AA" if result.ok else ("AR" if not result.parsed else "AE"))
                if o.answer != "auto" and not fault:
                    code = "AA" if result.ok else "AE"
                failed = [c for c in result.checks if not c.passed]
                text = failed[0].name + ": " + failed[0].detail if failed else ""
                with self._lock:
                    self._ack_seq += 1
                    ack_id = f"EMRACK{self._ack_seq:06d}"
                writer.write(frame(build_ack(result, code, timestamp=time.strftime("%Y%m%d%H%M%S"), control_id=ack_id, text=text)))
                await writer.drain()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    # -- FHIR ----------------------------------------------------------------

    async def _on_fhir(self, request: web.Request) -> web.StreamResponse:
        o = self.options
        with self._lock:
            self._received += 1
            n = self._received
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        checks = check_bundle(body) if body is not None else [Check("FHIR body", False, "not JSON")]
        self._report.extend(Check(f"FHIR [{n}] {c.name}", c.passed, c.detail) for c in checks)
        if body is not None:
            with self._lock:
                self.bundles.append(body)
        fault = self._fault_applies(n)
        if o.delay and fault:
            await asyncio.sleep(o.delay)
        if o.drop and fault:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("dropped on purpose")
        ok = all(c.passed for c in checks)
        answer = o.answer if (o.answer != "auto" and fault) else ("AA" if ok else "AE")
        if answer == "AA":
            return web.json_response(_transaction_response(body), status=200, content_type="application/fhir+json")
        failed = [c for c in checks if not c.passed]
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid" if answer == "AE" else "processing", "diagnostics": (f"{failed[0].name}: {failed[0].detail}" if failed else f"answer {answer} by option")}],
        }
        return web.json_response(outcome, status=422 if answer == "AE" else 400, content_type="application/fhir+json")


def _transaction_response(body) -> dict:
    entries = body.get("entry", []) if isinstance(body, dict) else []
    return {
        "resourceType": "Bundle",
        "type": "transaction-response" if isinstance(body, dict) and body.get("type") == "transaction" else "batch-response",
        "entry": [{"response": {"status": "201 Created"}} for _ in entries],
    }
