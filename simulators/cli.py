"""``dxa-sim``: the DXA service's peers as command-line tools.

    dxa-sim scanner --vendor hologic --gateway-host H --gateway-port P
    dxa-sim ris     --host H --port P --format orm|omi|fhir
    dxa-sim pacs    --port P --ae-title PACS
    dxa-sim emr     --port P --http-port Q
    dxa-sim demo    --patients N   (the gateway and all four, a DXA day on loopback)

Each prints its conformance report (text; JSON with ``--report FILE``) and
exits 1 when a check failed.  The listening ones (pacs, emr) serve until
SIGINT/SIGTERM and then report.
"""

from __future__ import annotations

import argparse
import os
import logging
import signal
import sys
import threading

from simulators.report import ConformanceReport

SUMMARY_ABOVE = 60  # print only failed checks when there are more than this


def _endpoint(text: str):
    from simulators.dicom_common import parse_endpoint
    from simulators.scanner import Endpoint

    try:
        ae, host, port = parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not ae:
        raise argparse.ArgumentTypeError(f"{text!r}: give the called AE title as AE@HOST:PORT")
    return Endpoint(host, port, ae)


def _peer(text: str) -> tuple[str, tuple[str, int]]:
    ae, _, hostport = text.partition("=")
    host, _, port = hostport.rpartition(":")
    if not ae or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected AE=HOST:PORT, got {text!r}")
    return ae, (host, int(port))


def _status(text: str) -> int:
    return int(text, 0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="FILE", help="write the report as JSON to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="print every check (default: all up to 60, else only failures)")
    p.add_argument("--log-level", default="WARNING", help="Python log level for the DICOM/HTTP libraries (default WARNING)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dxa-sim", description="Simulated peers of a DXA gateway: scanner, RIS, PACS, EMR.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("scanner", help="DXA scanner: MWL C-FIND, MPPS, C-STORE, Storage Commitment")
    s.add_argument("--vendor", choices=["hologic", "ge"], default="hologic")
    s.add_argument("--gateway-host", default="127.0.0.1")
    s.add_argument("--gateway-port", type=int, default=11112)
    s.add_argument("--tls-ca", default="", help="DICOM TLS: the gateway's CA certificate (PEM)")
    s.add_argument("--tls-cert", default="", help="DICOM TLS: our client certificate (PEM)")
    s.add_argument("--tls-key", default="", help="DICOM TLS: our client key (PEM)")
    s.add_argument("--called-ae", default="DXAGW", help="the gateway's AE title")
    s.add_argument("--ae-title", default="DXA1", help="this scanner's AE title (the Scheduled Station AE Title queried)")
    s.add_argument("--mwl", type=_endpoint, metavar="AE@HOST:PORT", help="worklist SCP (default: the gateway)")
    s.add_argument("--mpps", type=_endpoint, metavar="AE@HOST:PORT", help="MPPS SCP (default: the gateway)")
    s.add_argument("--store", type=_endpoint, metavar="AE@HOST:PORT", help="storage and commitment SCP (default: the gateway)")
    s.add_argument("--no-mpps", action="store_true", help="send no MPPS")
    s.add_argument("--no-commit", action="store_true", help="ask for no storage commitment")
    s.add_argument("--commit-port", type=int, help="listen here for the N-EVENT-REPORT on a new association")
    s.add_argument("--commit-timeout", type=float, default=30.0)
    s.add_argument("--patients", type=int, help="exams to perform (default: every worklist hit; 1 made-up with --unscheduled)")
    s.add_argument("--concurrency", type=int, default=1, help="exams in flight at once")
    s.add_argument("--rate", type=float, default=0.0, help="exams started per second (0: as fast as possible)")
    s.add_argument("--seed", type=int, help="makes pixel data, UIDs and made-up patients reproducible")
    s.add_argument("--unscheduled", action="store_true", help="scan made-up patients when the worklist has too few hits")
    s.add_argument("--images", type=int, default=2, help="report images per exam (default 2)")
    s.add_argument(
        "--results", choices=["sr", "images", "both"], default="sr",
        help="where the results go: the BMD SR (default), only report images one per scan (a Hologic without the SR option), or both",
    )
    s.add_argument("--modality", default="OT", help="Modality of the result images with --results images/both (Hologic: OT, or BD)")
    s.add_argument("--date", help="scheduled date to query, YYYYMMDD (default today)")
    s.add_argument("--timeout", type=float, default=30.0, help="network/DIMSE timeout in seconds")
    s.add_argument("--at", help="scan at this local time, YYYYMMDDHHMMSS (MPPS and study dates; default now): back-dates a simulated day")
    s.add_argument("--ihe-keys", action="store_true", help="ask the worklist for the full IHE Scheduled Workflow return-key set (RAD-5), nested code sequences included")
    _common(s)

    r = sub.add_parser("ris", help="RIS/HIS: HL7 ORM/OMI/ADT over MLLP or FHIR ServiceRequest")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=2575)
    r.add_argument("--format", choices=["orm", "omi", "fhir"], default="orm")
    r.add_argument("--fhir-url", default="", help="FHIR base URL (POST {url}/ServiceRequest)")
    r.add_argument("--token", default=os.environ.get("DXA_TOKEN", ""), help="bearer token for --format fhir (default: $DXA_TOKEN)")
    r.add_argument("--tls-ca", default="", help="MLLP over TLS: the gateway's CA certificate (PEM)")
    r.add_argument("--tls-cert", default="", help="MLLP over TLS: our client certificate (PEM)")
    r.add_argument("--tls-key", default="", help="MLLP over TLS: our client key (PEM)")
    r.add_argument("--count", type=int, default=1, help="orders to send")
    r.add_argument("--station-ae", default="DXA1")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--files", default="", help="glob of HL7 files to send as they are instead of generated orders")
    r.add_argument("--cancel", action="store_true", help="then cancel every order (ORC-1 CA / status revoked)")
    r.add_argument("--update", action="store_true", help="then send an ADT^A08 name change per patient")
    r.add_argument("--hl7-version", dest="version", default="", help="MSH-12 (default 2.3.1 for ORM, 2.5.1 for OMI)")
    r.add_argument("--charset", default="UNICODE UTF-8", choices=["UNICODE UTF-8", "8859/1", "8859/15", "ASCII"], help="MSH-18")
    r.add_argument("--day", default="", help="day the orders are scheduled for, YYYYMMDD (default today)")
    r.add_argument("--referred", type=int, dest="referred_days", help="the referral was made this many days before --day (ORC-9, FHIR authoredOn): back-dates a simulated month")
    r.add_argument("--referrer", default="", help="XCN id^family^given of the referrer (ORC-12, OBR-16, PV1-8; FHIR requester)")
    r.add_argument("--prefix", default="SIM", help="prefix of generated patient IDs and accession numbers")
    r.add_argument("--timeout", type=float, default=30.0)
    _common(r)

    p = sub.add_parser("pacs", help="PACS: C-STORE, Storage Commitment and MPPS SCP")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11112)
    p.add_argument("--ae-title", default="PACS")
    p.add_argument("--folder", default="pacs-received", help="where received objects are kept")
    p.add_argument("--commit-mode", choices=["same", "new"], default="same", help="send the N-EVENT-REPORT on the same association or a new one")
    p.add_argument("--commit-peer", type=_peer, action="append", default=[], metavar="AE=HOST:PORT", help="where to open a new association for AE's reports (repeatable)")
    p.add_argument("--commit-delay", type=float, default=0.0, help="seconds before the N-EVENT-REPORT")
    p.add_argument("--store-status", type=_status, help="answer every C-STORE with this status, e.g. 0xA700 (fault tests)")
    p.add_argument("--lenient", action="store_true", help="store objects that fail a check instead of refusing them")
    p.add_argument("--tls-cert", default="", help="DICOM TLS on our port: our certificate (PEM)")
    p.add_argument("--tls-key", default="", help="DICOM TLS: our key (PEM)")
    p.add_argument("--tls-ca", default="", help="DICOM TLS: require a caller's certificate under this CA (PEM)")
    _common(p)

    e = sub.add_parser("emr", help="EMR: MLLP ORU^R01 receiver and FHIR Bundle endpoint")
    e.add_argument("--host", default="127.0.0.1")
    e.add_argument("--port", type=int, default=2576)
    e.add_argument("--http-port", type=int, help="also serve FHIR: POST / with a Bundle")
    e.add_argument("--answer", choices=["auto", "AA", "AE", "AR"], default="auto", help="auto: AA when the checks pass, else AE/AR")
    e.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    e.add_argument("--drop", action="store_true", help="close the connection instead of answering")
    e.add_argument("--fail-first", type=int, default=0, help="apply --answer/--delay/--drop to the first N messages only")
    e.add_argument("--max-frame", type=int, default=16 * 1024 * 1024, help="largest MLLP frame accepted, bytes")
    e.add_argument("--tls-cert", default="", help="MLLP over TLS (and HTTPS for FHIR): our certificate (PEM)")
    e.add_argument("--tls-key", default="", help="TLS: our key (PEM)")
    e.add_argument("--tls-ca", default="", help="TLS: require a sender's certificate under this CA (PEM)")
    _common(e)

    d = sub.add_parser("demo", help="run a short DXA day through the gateway with all four simulators, on loopback")
    d.add_argument("--patients", type=int, default=5)
    d.add_argument("--vendor", choices=["hologic", "ge"], default="hologic")
    d.add_argument("--data", default=None, help="folder for the demo (default: a new temporary folder)")
    d.add_argument("--keep-running", action="store_true", help="leave the gateway up after the summary")
    d.add_argument("--tls", action="store_true", help="TLS on every hop (DICOM, MLLP, HTTPS; client certificates) with a throwaway CA in DATA/pki")
    d.add_argument("--log-level", default="WARNING", help="Python log level for the DICOM/HTTP libraries (default WARNING)")
    return parser


def emit(report: ConformanceReport, args) -> int:
    text = report.to_text()
    if not args.verbose and len(report.checks) > SUMMARY_ABOVE:
        d = report.to_dict()
        lines = [f"{report.simulator}: {d['passed']} passed, {d['failed']} failed (only failures shown; -v for all)"]
        lines += [f"  [FAIL] {c.name}: {c.detail}" for c in report.failed]
        lines += [f"  {k}: {v}" for k, v in report.stats.items()]
        text = "\n".join(lines)
    print(text, flush=True)
    if args.report:
        report.write(args.report)
    return 0 if report.ok else 1


def _serve_until_signal(sim, started_msg: str) -> None:
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    print(started_msg, file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("pacs", "emr") and (args.tls_key or args.tls_ca) and not args.tls_cert:
        parser.error("--tls-key and --tls-ca need --tls-cert (our certificate)")
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING), format="%(levelname)s %(name)s: %(message)s")

    if args.command == "demo":
        from simulators.demo import run_demo

        return run_demo(patients=args.patients, vendor=args.vendor, data=args.data, keep_running=args.keep_running, tls=args.tls)

    if args.command == "scanner":
        from simulators.scanner import ScannerOptions, ScannerSimulator

        opts = ScannerOptions(
            vendor=args.vendor,
            gateway_host=args.gateway_host,
            gateway_port=args.gateway_port,
            called_ae=args.called_ae,
            ae_title=args.ae_title,
            mwl=args.mwl,
            mpps=args.mpps,
            store=args.store,
            no_mpps=args.no_mpps,
            no_commit=args.no_commit,
            commit_port=args.commit_port,
            commit_timeout=args.commit_timeout,
            patients=args.patients,
            concurrency=args.concurrency,
            rate=args.rate,
            seed=args.seed,
            unscheduled=args.unscheduled,
            images=args.images,
            results=args.results,
            modality=args.modality,
            date=args.date or "",
            timeout=args.timeout,
            ihe_keys=args.ihe_keys,
            scan_at=args.at or "",
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
        sim = ScannerSimulator(opts)
        signal.signal(signal.SIGTERM, lambda *_: sim.stop())
        try:
            report = sim.run()
        except KeyboardInterrupt:
            sim.stop()
            report = sim.report()
        return emit(report, args)

    if args.command == "ris":
        from simulators.ris import RisOptions, RisSimulator

        opts = RisOptions(
            host=args.host,
            port=args.port,
            format=args.format,
            fhir_url=args.fhir_url,
            token=args.token,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            count=args.count,
            station_ae=args.station_ae,
            seed=args.seed,
            files=args.files,
            cancel=args.cancel,
            update=args.update,
            version=args.version,
            charset=args.charset,
            day=args.day,
            timeout=args.timeout,
            prefix=args.prefix,
            referred_days=args.referred_days,
            referrer=args.referrer,
        )
        try:
            report = RisSimulator(opts).run()
        except ValueError as exc:  # e.g. a name the chosen charset cannot hold
            print(f"dxa-sim ris: {exc}", file=sys.stderr)
            return 2
        return emit(report, args)

    if args.command == "pacs":
        from simulators.pacs import PacsOptions, PacsSimulator

        sim = PacsSimulator(
            PacsOptions(
                host=args.host,
                port=args.port,
                ae_title=args.ae_title,
                folder=args.folder,
                commit_mode=args.commit_mode,
                commit_peers=dict(args.commit_peer),
                commit_delay=args.commit_delay,
                store_status=args.store_status,
                strict=not args.lenient,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_ca=args.tls_ca,
            )
        ).start()
        _serve_until_signal(sim, f"dxa-sim pacs: {args.ae_title} listening on {args.host}:{sim.port}{' (DICOM TLS)' if args.tls_cert else ''}")
        return emit(sim.report(), args)

    if args.command == "emr":
        from simulators.emr import EmrOptions, EmrSimulator

        sim = EmrSimulator(
            EmrOptions(
                host=args.host,
                port=args.port,
                http_port=args.http_port,
                answer=args.answer,
                delay=args.delay,
                drop=args.drop,
                fail_first=args.fail_first,
                max_frame=args.max_frame,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_ca=args.tls_ca,
            )
        ).start()
        tls = bool(args.tls_cert)
        where = f"MLLP{'/TLS' if tls else ''} {args.host}:{sim.port}" + (f", FHIR http{'s' if tls else ''}://{args.host}:{sim.http_port}/" if sim.http_port else "")
        _serve_until_signal(sim, f"dxa-sim emr: listening on {where}")
        return emit(sim.report(), args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
