"""mappings.mwl: PS3.4 C.2.2.2 matching, index filters and responses."""

from __future__ import annotations

import orjson
import pytest
from pydicom.dataset import Dataset

from mappings.mwl import MatchOptions, MwlQuery, QueryError
from mappings.worklist import Code, ItemError, WorklistItem, item_from_dataset, item_to_dataset

ITEM = WorklistItem(
    patient_id="P1",
    patient_name="Müller^Jürgen",
    birth_date="19600101",
    sex="M",
    accession_number="A1",
    requested_procedure_id="R1",
    study_instance_uid="1.2.3.4",
    sps_id="S1",
    station_ae="DXA1",
    start_date="20261124",
    start_time="093000",
    performing_physician="Tech^Tina",
)
CANDIDATE = item_to_dataset(ITEM)


def q(**sps_keys) -> Dataset:
    ds = Dataset()
    top = {k: v for k, v in sps_keys.items() if k[0].isupper() and k not in SPS}
    for k, v in top.items():
        setattr(ds, k, v)
    step = Dataset()
    for k, v in sps_keys.items():
        if k in SPS:
            setattr(step, k, v)
    if len(step):
        ds.ScheduledProcedureStepSequence = [step]
    return ds


SPS = {"ScheduledStationAETitle", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "Modality", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepStatus"}


@pytest.mark.parametrize(
    "keys, expected",
    [
        ({"PatientID": "P1"}, True),
        ({"PatientID": "P2"}, False),
        ({"PatientID": ""}, True),  # universal
        ({"PatientName": "müller*"}, True),  # case-insensitive PN
        ({"PatientName": "M?ller^J*"}, True),
        ({"PatientName": "Mull*"}, False),
        ({"AccessionNumber": "A*"}, True),
        ({"AccessionNumber": "a*"}, False),  # only PN is case-insensitive
        ({"StudyInstanceUID": "9.9\\1.2.3.4"}, True),  # list of UIDs
        ({"StudyInstanceUID": "1.2.3"}, False),
        ({"PatientBirthDate": "19500101-19651231"}, True),
        ({"PatientBirthDate": "-19591231"}, False),
        ({"PatientBirthDate": "19600101-"}, True),
        ({"ScheduledStationAETitle": "DXA1", "Modality": "BMD"}, True),
        ({"ScheduledStationAETitle": "DXA2"}, False),
        ({"ScheduledStationAETitle": "DXA*"}, True),
        ({"ScheduledProcedureStepStartDate": "20261124"}, True),
        ({"ScheduledProcedureStepStartDate": "20261125-"}, False),
        ({"ScheduledProcedureStepStartTime": "09-10"}, True),
        ({"ScheduledProcedureStepStartTime": "0931-"}, False),
        ({"ScheduledProcedureStepStartTime": "-0930"}, True),
        ({"ScheduledPerformingPhysicianName": "tech*"}, True),
        ({"ScheduledProcedureStepStatus": "SCHEDULED"}, True),
    ],
)
def test_single_wildcard_range_uid_sequence(keys, expected):
    assert MwlQuery.compile(q(**keys)).matches(CANDIDATE) is expected


def test_case_sensitive_names_by_option():
    assert not MwlQuery.compile(q(PatientName="müller*"), MatchOptions(case_insensitive_names=False)).matches(CANDIDATE)


def test_combined_date_time_range():
    query = q(ScheduledProcedureStepStartDate="20261123-20261124", ScheduledProcedureStepStartTime="1000-0900")
    # independently, 09:30 is not within 10:00-09:00 ...
    assert not MwlQuery.compile(query).matches(CANDIDATE)
    # ... combined (PS3.4 C.2.2.2.5.1), 2026-11-24 09:30 is within 23rd 10:00 to 24th 09:00? no
    assert not MwlQuery.compile(query, MatchOptions(combined_datetime=True)).matches(CANDIDATE)
    query = q(ScheduledProcedureStepStartDate="20261123-20261124", ScheduledProcedureStepStartTime="1000-0945")
    assert MwlQuery.compile(query, MatchOptions(combined_datetime=True)).matches(CANDIDATE)


def test_sequence_universal_and_missing_attribute():
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = []
    assert MwlQuery.compile(ds).matches(CANDIDATE)
    ds = Dataset()
    ds.PatientWeight = ""  # not on the item: universal matching returns it empty
    assert MwlQuery.compile(ds).matches(CANDIDATE)
    ds.PatientWeight = "70"
    assert not MwlQuery.compile(ds).matches(CANDIDATE)


def test_response_has_requested_keys_only_and_empty_where_missing():
    query = q(PatientName="", PatientWeight="", ScheduledStationAETitle="DXA1")
    query.SpecificCharacterSet = "ISO_IR 100"
    rsp = MwlQuery.compile(query).response(CANDIDATE)
    assert {e.keyword for e in rsp} == {"SpecificCharacterSet", "PatientName", "PatientWeight", "ScheduledProcedureStepSequence"}
    assert rsp.PatientWeight is None or rsp.PatientWeight == ""
    assert {e.keyword for e in rsp.ScheduledProcedureStepSequence[0]} == {"ScheduledStationAETitle"}
    assert rsp.SpecificCharacterSet == "ISO_IR 100"


def test_response_charset_falls_back_when_values_do_not_fit():
    item = item_to_dataset(ITEM.replace(patient_name="Łódź^Ola"))
    query = q(PatientName="")
    query.SpecificCharacterSet = "ISO_IR 100"
    assert MwlQuery.compile(query).response(item).SpecificCharacterSet == "ISO_IR 192"
    ascii_item = item_to_dataset(ITEM.replace(patient_name="Smith^Ann"))
    assert "SpecificCharacterSet" not in MwlQuery.compile(q(PatientName="")).response(ascii_item)


def test_response_shape_keys_what_the_response_depends_on():
    base = MwlQuery.compile(q(PatientName="", ScheduledStationAETitle="DXA1")).shape
    # other matching values, same requested keys: the same response
    assert MwlQuery.compile(q(PatientName="Mü*", ScheduledStationAETitle="DXA2")).shape == base
    assert MwlQuery.compile(q(PatientName="", PatientID="", ScheduledStationAETitle="DXA1")).shape != base
    assert MwlQuery.compile(q(PatientName="", Modality="BMD")).shape != base  # another key in the item
    latin1 = q(PatientName="", ScheduledStationAETitle="DXA1")
    latin1.SpecificCharacterSet = "ISO_IR 100"
    assert MwlQuery.compile(latin1).shape != base
    assert MwlQuery.compile(q(PatientName="", ScheduledStationAETitle="DXA1"), fallback_charset="ISO_IR 100").shape != base
    whole = q(PatientName="")
    whole.ScheduledProcedureStepSequence = []  # the whole item asked for
    assert MwlQuery.compile(whole).shape != MwlQuery.compile(q(PatientName="", Modality="")).shape


def test_unsupported_and_malformed_keys():
    ds = Dataset()
    ds.StudyDescription = "x"
    with pytest.raises(QueryError) as err:
        MwlQuery.compile(ds)
    assert err.value.tag == 0x00081030
    MwlQuery.compile(ds, allow_unknown=True)
    with pytest.raises(QueryError):
        MwlQuery.compile(q(ScheduledProcedureStepStartDate="2026-11-24"))
    with pytest.raises(QueryError):
        MwlQuery.compile(q(ScheduledProcedureStepStartTime="25xx"))


def test_a_text_key_sent_as_a_sequence_is_refused_before_it_is_read():
    """PatientName (PN) or, inside the Scheduled Procedure Step Sequence, the
    Modality (CS) sent with VR SQ: QueryError naming the key, so the value is
    never turned into a string (pydicom's str of a crafted sequence takes
    gigabytes: docs/dicom-conformance.md 4.2.7)."""
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence

    top = Dataset()
    top.add(DataElement(0x00100010, "SQ", Sequence([Dataset()])))
    with pytest.raises(QueryError) as err:
        MwlQuery.compile(top)
    assert err.value.tag == 0x00100010 and "sequence" in str(err.value)
    sps = Dataset()
    sps.add(DataElement(0x00080060, "SQ", Sequence([Dataset()])))
    nested = Dataset()
    nested.ScheduledProcedureStepSequence = Sequence([sps])
    with pytest.raises(QueryError) as err:
        MwlQuery.compile(nested)
    assert err.value.tag == 0x00080060


def test_index_filter_takes_exact_and_prefix_only():
    flt = MwlQuery.compile(q(ScheduledStationAETitle="DXA1", ScheduledProcedureStepStartDate="20261124", Modality="BMD", PatientName="Mül*")).index_filter
    assert (flt.station_ae, flt.date_from, flt.date_to, flt.modality) == ("DXA1", "20261124", "20261124", "BMD")
    assert flt.name_prefix == "MÜL"
    flt = MwlQuery.compile(q(ScheduledStationAETitle="DXA*", ScheduledProcedureStepStartDate="20261120-20261124")).index_filter
    assert flt.station_ae is None and (flt.date_from, flt.date_to) == ("20261120", "20261124")
    assert flt.statuses == ("SCHEDULED", "IN PROGRESS")


def test_item_dataset_roundtrip():
    assert item_from_dataset(item_to_dataset(ITEM), source="") == ITEM.replace(source="")


def _nested(*paths: str) -> Dataset:
    """A query from findscu-style paths: ``Seq[0].Sub[0].Key=value``."""
    ds = Dataset()
    for path in paths:
        keyword_path, _, value = path.partition("=")
        node = ds
        parts = keyword_path.split(".")
        for part in parts[:-1]:
            name = part.removesuffix("[0]")
            if name not in node:
                setattr(node, name, [Dataset()])
            node = getattr(node, name)[0]
        setattr(node, parts[-1], value)
    return ds


PROTOCOL_CODE = "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue"


@pytest.mark.parametrize(
    "paths",
    [
        (PROTOCOL_CODE,),
        (PROTOCOL_CODE, "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodingSchemeDesignator", "AccessionNumber=A1"),
        ("RequestedProcedureCodeSequence[0].CodeValue", "RequestedProcedureCodeSequence[0].CodeMeaning"),
        ("ReferencedStudySequence[0].ReferencedSOPInstanceUID",),  # a sequence the item lacks
        ("ScheduledProcedureStepSequence[0].ScheduledStationNameCodeSequence[0].CodeValue", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=DXA1"),
    ],
)
def test_a_sequence_of_universal_keys_matches_absent_empty_and_present(paths):
    """PS3.4 C.2.2.2.6 / K.6.1.2: an item of universal keys matches a candidate whatever its sequence holds.

    The candidate has an empty Scheduled Protocol Code Sequence and Requested
    Procedure Code Sequence and no Referenced Study Sequence; the same item
    with codes in both must match too.
    """
    query = _nested(*paths)
    assert MwlQuery.compile(query).matches(CANDIDATE)
    coded = item_to_dataset(ITEM.replace(requested_procedure_code=Code("77079", "C4", "DXA axial")))
    protocol = Dataset()
    protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning = "P1", "99GW", "Spine and hip"
    coded.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [protocol]
    assert MwlQuery.compile(query).matches(coded)
    del coded.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence
    del coded.RequestedProcedureCodeSequence
    assert MwlQuery.compile(query).matches(coded)


def test_a_sequence_key_with_a_value_needs_a_matching_item():
    """PS3.4 C.2.2.2.6: a non-universal key inside the item must match one item of the candidate's sequence."""
    query = _nested("RequestedProcedureCodeSequence[0].CodeValue=77079")
    assert not MwlQuery.compile(query).matches(CANDIDATE)  # empty sequence
    coded = item_to_dataset(ITEM.replace(requested_procedure_code=Code("77079", "C4", "DXA axial")))
    assert MwlQuery.compile(query).matches(coded)
    assert not MwlQuery.compile(_nested("RequestedProcedureCodeSequence[0].CodeValue=77080")).matches(coded)
    assert MwlQuery.compile(_nested("RequestedProcedureCodeSequence[0].CodeValue=7707*")).matches(coded)
    del coded.RequestedProcedureCodeSequence
    assert not MwlQuery.compile(query).matches(coded)


def test_the_response_carries_the_universal_sequence_empty_or_with_its_items():
    """K.6.1.2: the response has the sequence as the item has it, projected to the requested keys."""
    query = _nested(PROTOCOL_CODE, "RequestedProcedureCodeSequence[0].CodeValue")
    rsp = MwlQuery.compile(query).response(CANDIDATE)
    assert len(rsp.ScheduledProcedureStepSequence) == 1
    assert len(rsp.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence) == 0
    assert len(rsp.RequestedProcedureCodeSequence) == 0
    coded = item_to_dataset(ITEM.replace(requested_procedure_code=Code("77079", "C4", "DXA axial")))
    rsp = MwlQuery.compile(query).response(coded)
    assert [(e.keyword, e.value) for e in rsp.RequestedProcedureCodeSequence[0]] == [("CodeValue", "77079")]


def test_patient_medical_and_other_iod_attributes_round_trip():
    """PS3.4 Table K.6-1 / PS3.3 C.2.4: every worklist attribute that arrives is kept and returned."""
    ds = item_to_dataset(ITEM)
    ds.MedicalAlerts = ["Pacemaker", "Hip prosthesis left"]
    ds.Allergies = ["Iodine"]
    ds.PregnancyStatus = 4
    ds.PatientSize = "1.62"
    ds.PatientWeight = "58.5"
    ds.SpecialNeeds = "Wheelchair"
    ds.PatientState = "Fasting"
    ds.ConfidentialityConstraintOnPatientDataDescription = "VIP"
    ds.RequestedProcedurePriority = "HIGH"
    ds.ReasonForTheRequestedProcedure = "Osteoporosis screening"
    ds.PatientTransportArrangements = "Ambulant"
    ds.AdditionalPatientHistory = "Wrist fracture 2019"
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedStudySequence = [study_ref]
    sps = ds.ScheduledProcedureStepSequence[0]
    sps.RequestedContrastAgent = "None"
    sps.CommentsOnTheScheduledProcedureStep = "Remove metal"
    protocol = Dataset()
    protocol.CodeValue, protocol.CodingSchemeDesignator, protocol.CodeMeaning = "P1", "99GW", "Spine and hip"
    sps.ScheduledProtocolCodeSequence = [protocol]
    item = item_from_dataset(ds, source="")
    assert item.allergies == ("Iodine",) and item.pregnancy_status == 4 and item.requested_procedure_priority == "HIGH"
    assert hash(item)  # the MWL caches on the frozen item
    again = WorklistItem.from_json(orjson.loads(orjson.dumps(item.to_json())))
    assert again == item and hash(again) == hash(item)
    out = item_to_dataset(again)
    for keyword in ("MedicalAlerts", "Allergies", "PregnancyStatus", "SpecialNeeds", "PatientState", "RequestedProcedurePriority",
                    "ConfidentialityConstraintOnPatientDataDescription", "ReasonForTheRequestedProcedure", "PatientTransportArrangements",
                    "AdditionalPatientHistory"):
        assert out[keyword].value == ds[keyword].value, keyword
    assert float(out.PatientSize) == 1.62 and float(out.PatientWeight) == 58.5
    assert out.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    out_sps = out.ScheduledProcedureStepSequence[0]
    assert out_sps.RequestedContrastAgent == "None" and out_sps.CommentsOnTheScheduledProcedureStep == "Remove metal"
    assert out_sps.ScheduledProtocolCodeSequence[0].CodeMeaning == "Spine and hip"
    # and the MWL returns them when asked
    query = _nested("Allergies", "MedicalAlerts", "ScheduledProcedureStepSequence[0].RequestedContrastAgent", PROTOCOL_CODE)
    rsp = MwlQuery.compile(query).response(out)
    assert list(rsp.MedicalAlerts) == ["Pacemaker", "Hip prosthesis left"]
    assert rsp.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue == "P1"


@pytest.mark.parametrize(
    "keyword, value",
    [("RequestedProcedurePriority", "URGENT"), ("PregnancyStatus", 7), ("PatientWeight", "-58"), ("PatientSize", "-1.6")],
)
def test_out_of_range_patient_medical_values_are_refused_by_name(keyword, value):
    ds = item_to_dataset(ITEM)
    setattr(ds, keyword, value)
    with pytest.raises(ItemError) as err:
        item_from_dataset(ds)
    assert err.value.keyword == keyword


def test_the_candidate_cache_hits_for_an_item_with_patient_medical_attributes():
    """The MWL caches datasets keyed on the frozen item: an item read again from the store is the same key."""
    from gateway.dicom.mwl import WorklistFindHandler, _Lru
    from gateway.store import WorklistRow

    ds = item_to_dataset(ITEM)
    ds.Allergies = ["Iodine", "Latex"]
    ds.ReasonForTheRequestedProcedure = "Screening"
    item = item_from_dataset(ds)
    handler = WorklistFindHandler.__new__(WorklistFindHandler)
    handler._datasets = _Lru(10)
    first = handler._dataset(WorklistRow(id=1, item=item, created_at="", updated_at=""))
    reread = WorklistItem.from_json(orjson.loads(orjson.dumps(item.to_json())))
    assert handler._dataset(WorklistRow(id=1, item=reread, created_at="", updated_at="")) is first
    changed = reread.replace(allergies=("Iodine",))
    assert handler._dataset(WorklistRow(id=1, item=changed, created_at="", updated_at="")) is not first
