import base64
import json

from fhir.resources.R4B.bundle import Bundle

from mappings.bmd.fhir_bundle import FhirContext, build_bundle, bundle_json
from tests.unit.bmd.pipeline import exam_and_report


def _bundle(status="F"):
    exam, c, comp, text = exam_and_report(status)
    return exam, text, build_bundle(exam, c, text, FhirContext(issued="2024-05-01T12:00:00+01:00", status=status, placer_order_number="PL-1"))


def _resources(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_validates_with_fhir_resources():
    _, _, b = _bundle()
    model = Bundle.model_validate(b)
    assert model.type == "transaction"
    Bundle.model_validate(json.loads(bundle_json(b)))


def test_report_and_observations():
    exam, text, b = _bundle("F")
    (report,) = _resources(b, "DiagnosticReport")
    assert report["code"]["coding"][0]["code"] == "83311-1"
    assert report["category"][0]["coding"][0]["code"] == "LP29684-5"
    assert report["status"] == "final" and report["conclusion"] == "Osteoporosis"
    assert base64.b64decode(report["presentedForm"][0]["data"]).decode() == text
    urls = {e["fullUrl"] for e in b["entry"]}
    assert all(r["reference"] in urls for r in report["result"])
    obs = {o["code"]["coding"][-1]["code"]: o for o in _resources(b, "Observation")}
    neck = obs["L.neck.bmd"]
    assert neck["code"]["coding"][0] == {"system": "http://loinc.org", "code": "80954-1", "display": "Left femoral neck BMD"}
    assert str(neck["valueQuantity"]["value"]) == "0.571" and neck["valueQuantity"]["code"] == "g/cm2"
    assert obs["L.total_hip.t_score"]["code"]["coding"][0]["code"] == "80946-7"
    assert obs["L.total_hip.t_score"]["valueQuantity"]["code"] == "1"
    # the diagnosis used L1,L2,L4: it carries the lumbar-spine LOINC (issue 14 defect 1)
    assert obs["L1,L2,L4.bmd"]["code"]["coding"][0]["code"] == "24966-4"
    assert neck["effectiveDateTime"] == "2024-05-01T10:15:00+00:00"
    frax = [o for o in _resources(b, "Observation") if o["code"]["coding"][0]["code"] == "90265-0"]
    assert str(frax[0]["valueQuantity"]["value"]) == "18.0"


def test_status_mapping_and_determinism():
    assert _resources(_bundle("P")[2], "DiagnosticReport")[0]["status"] == "preliminary"
    assert _resources(_bundle("C")[2], "DiagnosticReport")[0]["status"] == "amended"
    assert {o["status"] for o in _resources(_bundle("C")[2], "Observation")} == {"amended"}
    assert bundle_json(_bundle()[2]) == bundle_json(_bundle()[2])


def test_json_keeps_trailing_zeros():
    _, _, b = _bundle()
    text = bundle_json(b)
    assert '"value":0.810' in text and '"value":-1.80' in text
    assert "\\u0000" not in text
