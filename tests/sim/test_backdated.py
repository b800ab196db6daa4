"""Simulators for a back-dated month: the RIS's --referred/--referrer and the scanner's --at."""

from __future__ import annotations

from mappings.hl7_orders import OrderOptions, parse_message
from simulators import orders as om
from simulators.ris import RisOptions, RisSimulator
from simulators.scanner import Exam, ScannerOptions, ScannerSimulator


def test_ris_referral_date_and_referrer_reach_the_order():
    ris = RisSimulator(RisOptions(day="20261005", referred_days=10, referrer="Z9^Zed^Unknown", count=2))
    messages = ris.build_messages()
    assert len(messages) == 2
    item = parse_message(messages[0][2], OrderOptions()).actions[0].items[0]
    assert (item.referred_at, item.referrer_id, item.referrer_field) == ("20260925090000", "Z9", "ORC-12")
    assert item.start_date == "20261005"
    sr = om.build_service_request(ris.orders[0])
    assert sr["authoredOn"].startswith("2026-09-25T09:00:00")
    assert sr["requester"]["identifier"] == {"value": "Z9"}


def test_scanner_clock_set_back():
    sim = ScannerSimulator(ScannerOptions(scan_at="20261005100000", seed=1))
    assert sim.clock() == ("20261005", "100000")
    exam = sim.plan_exams([])  # no worklist hits: nothing planned
    assert exam == []
    from pydicom.dataset import Dataset

    header = Dataset()
    header.StudyInstanceUID, header.PatientID = "1.2.3", "P1"
    ds = sim.mpps_create_dataset(Exam(0, header, None), *sim.clock())
    assert (ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime) == ("20261005", "100000")
    assert ScannerSimulator(ScannerOptions(seed=1)).clock() != sim.clock()  # without scan_at: now
