"""Issue 16 item 5 in the real daemon: dose against the reference levels."""

from __future__ import annotations

from decimal import Decimal

import orjson
from pydicom.uid import generate_uid

from mappings.bmd.models import DoseRecord
from mappings.bmd.samples import dose_sr, hologic_sr
from tests.fhir_peer import FhirPeer
from tests.integration.test_exams import _study_header, api, exam_of, store
from tests.integration.test_report_release import SETTLE, call
from tests.mllp_peer import MllpPeer
from tests.orthanc import wait_for
from tests.support import start_daemon
from tests.unit.bmd.helpers import HOLOGIC, known_exam

# known_exam: spine, both hips, left forearm and VFA -> 2.0 + 2 x 1.0 + 0.5 + 1.5 = 6.0 cGy.cm2
LEVELS = {"spine": {"value": 2.0, "units": "cGy.cm2"}, "hip": {"value": 1.0, "units": "cGy.cm2"},
          "forearm": {"value": 0.5, "units": "cGy.cm2"}, "vfa": {"value": 1.5, "units": "cGy.cm2"}}  # fmt: skip


def test_exam_over_its_drl_is_flagged_and_the_dose_reaches_oru_bundle_and_kpis(tmp_path):
    """Seed 000 section 11 (IR(ME)R: DRLs of the examinations undertaken).  Two
    studies with an RDSR each (DAP total in Gy.m2, as TID 10001 records it): 5
    and 7 cGy.cm2 against 6.0.  The second report says it is above the DRL; the
    ORU carries OBX 113722 and the Bundle the dose Observation; /api/kpis
    gives the median and one exam over its level for that exam type."""
    emr, fhir = MllpPeer(), FhirPeer()
    destinations = {"emr": {"type": "hl7", "host": "127.0.0.1", "port": emr.port}, "fhir": {"type": "fhir", "url": fhir.url}}
    overrides = {"storage": {"min_free_bytes": 0}, "reports": SETTLE, "destinations": destinations,
                 "routes": [{"match": {"kind": "report"}, "to": ["emr", "fhir"]}], "dose": {"reference_levels": LEVELS}}  # fmt: skip
    d = start_daemon(tmp_path, overrides)
    try:
        rows = []
        for n, dap in enumerate(("0.0000050", "0.0000070")):
            known = known_exam("hologic", HOLOGIC, patient_id=f"PDRL{n}", accession_number=f"ACC-DRL{n}", sop_instance_uid=generate_uid(), study_instance_uid=generate_uid())
            rdsr = dose_sr(_study_header(known), DoseRecord(dap=Decimal(dap), dap_units="Gy.m2", source="rdsr"), sop_uid=generate_uid(), series_uid=generate_uid(), device=HOLOGIC)
            store(d, rdsr, tmp_path / f"dose{n}.dcm")
            ds = hologic_sr(known)
            store(d, ds, tmp_path / f"sr{n}.dcm")
            row = wait_for(lambda ds=ds: (lambda r: r if r and r.get("dose_check") else None)(exam_of(ds)(d)), 15)
            assert row, d.log_text()[-2000:]
            rows.append(row)
        under, over = (r["dose_check"] for r in rows)
        assert under["exam_type"] == "forearm+hip x2+spine+vfa" and under["level"] == "6.0" and under["over"] is False
        assert over["value"] == "7" and over["units"] == "cGy.cm2" and over["over"] is True
        _, text_under = api(d, f"/api/exams/{rows[0]['id']}/report")
        _, text_over = api(d, f"/api/exams/{rows[1]['id']}/report")
        assert "above the diagnostic reference level" in text_over and "above the diagnostic reference level" not in text_under

        status, _ = call(d, "POST", f"/api/exams/{rows[1]['id']}/sign", {"comment": "Dose reviewed."})
        assert status == 201
        assert wait_for(lambda: emr.received and fhir.received, 15), d.log_text()[-2000:]
        oru = emr.received[0]
        assert any(s.startswith("OBX|") and "|113722^" in s and "|0.0000070|Gy.m2^" in s for s in oru.split("\r"))
        assert "above the diagnostic reference level" in oru
        resources = [e["resource"] for e in orjson.loads(fhir.received[0])["entry"]]
        dap = [r for r in resources if r["resourceType"] == "Observation" and r["code"]["coding"][0]["code"] == "113722"]
        assert len(dap) == 1 and dap[0]["valueQuantity"]["unit"] == "Gy.m2"

        status, k = call(d, "GET", "/api/kpis")  # the last year: the scans arrived today
        assert status == 200
        assert k["total"]["dose"]["forearm+hip x2+spine+vfa"] == {"units": "cGy.cm2", "count": 2, "median": 6.0, "over_drl": 1, "not_compared": 0}
    finally:
        d.stop()
        emr.close()
        fhir.close()
