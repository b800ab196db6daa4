"""mappings.priors (issue 18): whose study it is, which studies qualify, backfill
windows; and the ``priors`` config contract."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config
from gateway.priors.backfill import read_patients
from gateway.priors.sources import multipart_parts
from mappings.priors import FoundStudy, PatientIdentity, identity_problem, is_wrong_patient, lookback_start, mismatch_flag, qualifies, query_windows, same_name

ME = PatientIdentity("P1", "HOSP", "Smith^Anne^M", "19580312")


def study(uid="1.2.3", day="20200101", mods=("OT",), **ident):
    return FoundStudy(uid, day, mods, PatientIdentity(**{"patient_id": "P1", "issuer": "HOSP", "name": "SMITH^ANNE", "birth_date": "19580312", **ident}))


def test_names_compare_without_case_accents_or_a_missing_middle_name():
    assert same_name("Smith^Anne^M", "SMITH^ANNE")
    assert same_name("Müller^Zoë", "MULLER^ZOE^^")
    assert same_name("Smith^Anne", "Smith^Anne=スミス^アン")  # only the alphabetic group
    assert not same_name("Smith^Anne", "Smith^Brian")
    assert not same_name("Smith^Anne^M", "Smith^Anne^K")


def test_same_id_other_name_or_birth_date_is_a_wrong_patient_risk():
    """Issue 18 item 3: a study under the same ID but another name or birth date is not used, and is flagged."""
    assert identity_problem(ME, study().identity, use_issuer=True) is None
    p = identity_problem(ME, study(name="Jones^Brian", birth_date="19400101").identity, use_issuer=True)
    assert p == "name and birth date differ" and is_wrong_patient(p)
    assert identity_problem(ME, study(birth_date="19580313").identity, use_issuer=True) == "birth date differs"
    flag = mismatch_flag("20210301", p)
    assert "2021-03-01" in flag and "wrong-patient" in flag


def test_another_issuer_is_another_patient_not_a_flag():
    p = identity_problem(ME, study(issuer="OTHER", name="Jones^Brian").identity, use_issuer=True)
    assert p and not is_wrong_patient(p)
    assert identity_problem(ME, study(issuer="OTHER").identity, use_issuer=False) is None
    assert identity_problem(ME, study(issuer="").identity, use_issuer=True) is None  # not given: not a difference


def test_which_studies_qualify():
    kw = dict(current_study_uid="9.9", exam_date="20240501", lookback_years=15, modalities=("OT", "SR", "BMD", "DX"))
    assert qualifies(study(), **kw)
    assert not qualifies(study(uid="9.9"), **kw)  # the exam's own study
    assert not qualifies(study(day="20240501"), **kw)  # not earlier
    assert not qualifies(study(day="20090430"), **kw)  # before the lookback
    assert qualifies(study(day="20090501"), **kw)
    assert not qualifies(study(mods=("CT", "MR")), **kw)
    assert qualifies(study(mods=()), **kw)  # the PACS did not say
    assert lookback_start("20240229", 15) == "20090228"


def test_backfill_windows_cover_the_range_without_overlap():
    w = query_windows("2015-01-01", "20150310", 31)
    assert w == [("20150101", "20150131"), ("20150201", "20150303"), ("20150304", "20150310")]


def test_patients_file(tmp_path):
    p = tmp_path / "patients.txt"
    p.write_text("P1\n# comment\nP2\tHOSP\n\n")
    assert read_patients(p) == [("P1", ""), ("P2", "HOSP")]


def test_wado_rs_multipart_parts():
    body = b"--XX\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--XX\r\nContent-Type: application/dicom\r\n\r\nTWO\r\n--XX--\r\n"
    assert list(multipart_parts(body, 'multipart/related; type="application/dicom"; boundary=XX')) == [b"ONE", b"TWO"]


CONFIG = """
destinations:
  pacs: {type: dicom, host: 127.0.0.1, port: 104, ae_title: PACS}
  web: {type: dicomweb, url: "http://127.0.0.1:8042/dicom-web"}
priors:
  sources:
    - {destination: pacs, method: c-move, move_destination: DXAGW}
    - {destination: web, method: dicomweb}
  lookback_years: 15
  match: {modalities: [OT, SR, BMD, DX], issuer_of_patient_id: true}
  timeout: 30
"""


def test_the_issue_config_loads(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG)
    c = load_config(p)
    assert [s.method for s in c.priors.sources] == ["c-move", "dicomweb"] and c.priors.timeout == 30


def test_a_source_of_the_wrong_kind_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG.replace("{destination: web, method: dicomweb}", "{destination: pacs, method: dicomweb}"))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "priors.sources.1.destination: method dicomweb needs a dicomweb destination, not dicom" in str(err.value)


def test_a_stored_prior_of_another_name_is_not_compared():
    """Issue 18 item 3: a backfilled prior (no exam to check it against when fetched) is checked when compared."""
    from mappings.priors import prior_identity_problem
    from tests.unit.bmd.helpers import HOLOGIC, known_exam

    me = known_exam("hologic", HOLOGIC, patient_id="P1")
    assert prior_identity_problem(me, known_exam("hologic", HOLOGIC, patient_id="P1", patient_name="SMITH^ANNE")) is None
    assert prior_identity_problem(me, known_exam("hologic", HOLOGIC, patient_id="P1", patient_name="Jones^Brian")) == "name differs"


def test_the_storage_scp_knows_a_prior_by_its_record_or_our_move_originator():
    """PS3.7 9.1.1: a C-STORE sub-operation of our own C-MOVE carries our AE as Move Originator."""
    from types import SimpleNamespace

    from gateway.config import DicomSettings
    from gateway.dicom.storage import StorageScp
    from gateway.store.priors import PriorStudyRow

    rows = {"1.2.1": PriorStudyRow("1.2.1", "P1", "", "20200101", "pacs", "lookup", "retrieving", "", 1),
            "1.2.2": PriorStudyRow("1.2.2", "P1", "", "20200101", "pacs", "lookup", "mismatch", "name differs", 1)}  # fmt: skip
    scp = SimpleNamespace(settings=DicomSettings(ae_title="DXAGW"), store=SimpleNamespace(prior_study=rows.get))
    is_prior = lambda uid, originator="": StorageScp._is_prior(scp, uid, SimpleNamespace(MoveOriginatorApplicationEntityTitle=originator))  # noqa: E731
    assert is_prior("1.2.1")
    assert not is_prior("1.2.2")  # refused as another patient's: never asked for
    assert not is_prior("1.2.3")
    assert is_prior("1.2.3", "DXAGW")
    assert not is_prior("1.2.3", "OTHER")
