"""mappings.mwl.MwlQuery: one object compiled from the identifier gives the index
filter, the matcher, the response and its shape (PS3.4 K.6.1.2, C.2.2.2)."""

from __future__ import annotations

import random

import pytest
from pydicom.dataset import Dataset

from gateway.store.sqlite import SqliteStore
from mappings.mwl import MatchOptions, MwlQuery, QueryError
from mappings.worklist import ACTIVE_STATUSES, Code, WorklistItem, item_to_dataset

NAMES = ["Müller^Jürgen", "DOE^JANE", "doe^john", "Smith^Anna", "Dö^Ö"]


def _items(rnd: random.Random, n: int) -> list[WorklistItem]:
    return [
        WorklistItem(
            patient_id=rnd.choice(["P1", "P2", "p1", "P10"]),
            patient_name=rnd.choice(NAMES),
            birth_date=rnd.choice(["19600101", "19451231", ""]),
            sex=rnd.choice(["M", "F", ""]),
            accession_number=f"A{i}",
            requested_procedure_id="R1",
            study_instance_uid=rnd.choice(["1.2.3.4", "1.2.3.5", "9.9"]),
            sps_id=f"S{i}",
            station_ae=rnd.choice(["DXA1", "DXA2", "DXA1\\DXA2"]),
            start_date=rnd.choice(["20261124", "20261120", "20261201"]),
            start_time=rnd.choice(["093000", "170000", "000000", "235959"]),
            status=rnd.choice(["SCHEDULED", "IN PROGRESS", "COMPLETED"]),
            requested_procedure_code=rnd.choice([None, Code("77079", "C4", "DXA axial")]),
        )
        for i in range(n)
    ]


TOP = {
    "PatientID": ["", "P1", "P*", "p1", "P1\\P2"],
    "PatientName": ["", "müller*", "DOE^JANE", "doe*", "*", "M?ller^J*", "d*^*"],
    "AccessionNumber": ["", "A1", "A1*", "a1"],
    "StudyInstanceUID": ["", "1.2.3.4", "9.9\\1.2.3.4", "1.2.3"],
    "PatientBirthDate": ["", "19500101-19651231", "-19591231", "19600101"],
}
SPS = {
    "ScheduledStationAETitle": ["", "DXA1", "DXA*", "DXA2"],
    "ScheduledProcedureStepStartDate": ["", "20261124", "20261120-20261124", "20261121-", "-20261123"],
    "ScheduledProcedureStepStartTime": ["", "0930", "09-17", "1700-", "-0930"],
    "Modality": ["", "BMD", "OT", "B*"],
    "ScheduledProcedureStepStatus": ["", "SCHEDULED", "IN PROGRESS", "COMPLETED"],
}


def _query(rnd: random.Random) -> Dataset:
    ds = Dataset()
    for keyword, values in TOP.items():
        if rnd.random() < 0.5:
            setattr(ds, keyword, rnd.choice(values))
    step = Dataset()
    for keyword, values in SPS.items():
        if rnd.random() < 0.5:
            setattr(step, keyword, rnd.choice(values))
    ds.ScheduledProcedureStepSequence = [step]
    if rnd.random() < 0.2:
        code = Dataset()
        code.CodeValue = rnd.choice(["", "77079", "7707*"])
        ds.RequestedProcedureCodeSequence = [code]
    return ds


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = SqliteStore(tmp_path_factory.mktemp("mwlq") / "gw.sqlite")
    items = _items(random.Random(7), 60)
    store.add_worklist_items(items)
    yield store, [item_to_dataset(i) for i in items if i.status in ACTIVE_STATUSES]
    store.close()


def test_the_index_filter_never_drops_a_match(store):
    """The store's candidates for a query's filter hold every open step the query matches.

    PS3.4 C.2.2.2: the matches are what the matching rules select from all
    scheduled steps; the index is only a way to reach them sooner.
    """
    db, open_steps = store
    rnd = random.Random(11)
    narrowed = 0
    for _ in range(300):
        opts = MatchOptions(case_insensitive_names=rnd.random() < 0.7, combined_datetime=rnd.random() < 0.4)
        query = MwlQuery.compile(_query(rnd), opts)
        everywhere = sorted(str(ds.AccessionNumber) for ds in open_steps if query.matches(ds))
        candidates = [item_to_dataset(row.item) for row in db.find_worklist(query.index_filter)]
        assert sorted(str(ds.AccessionNumber) for ds in candidates if query.matches(ds)) == everywhere, query.identifier
        narrowed += len(candidates) < len(open_steps)
    assert narrowed > 100  # the filter does narrow


def _q(top: dict, sps: dict) -> Dataset:
    ds = Dataset()
    for k, v in top.items():
        setattr(ds, k, v)
    step = Dataset()
    for k, v in sps.items():
        setattr(step, k, v)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def test_each_key_narrows_as_it_matches():
    """Exact keys narrow exactly, a wildcard only by its literal prefix (names), a UID list by its UIDs (C.2.2.2.1-4)."""
    flt = MwlQuery.compile(_q({"PatientID": "P1", "PatientName": "Doe^Jane", "StudyInstanceUID": "1.2\\1.3"}, {"ScheduledStationAETitle": "DXA1", "ScheduledProcedureStepStatus": "SCHEDULED"})).index_filter
    assert (flt.patient_id, flt.name_prefix, flt.study_uids, flt.station_ae, flt.statuses) == ("P1", "DOE^JANE", ("1.2", "1.3"), "DXA1", ("SCHEDULED",))
    flt = MwlQuery.compile(_q({"PatientID": "P*", "PatientName": "do?*", "AccessionNumber": "A1\\A2"}, {"Modality": "B*"})).index_filter
    assert (flt.patient_id, flt.name_prefix, flt.accession, flt.modality) == (None, "DO", None, None)
    assert flt.statuses == ACTIVE_STATUSES


def test_combined_date_time_narrows_by_its_dates():
    """C.2.2.2.5.1: with combined matching the date and time form one range; the index takes its dates."""
    identifier = _q({}, {"ScheduledProcedureStepStartDate": "20261120-20261124", "ScheduledProcedureStepStartTime": "1700-0800"})
    combined = MwlQuery.compile(identifier, MatchOptions(combined_datetime=True))
    assert (combined.index_filter.date_from, combined.index_filter.date_to) == ("20261120", "20261124")
    evening = item_to_dataset(WorklistItem(patient_id="P1", start_date="20261120", start_time="180000"))
    assert combined.matches(evening)
    assert not MwlQuery.compile(identifier).matches(evening)  # separately: 18:00 is not in 17:00-08:00


def test_the_response_and_its_shape_come_from_the_same_return_keys():
    """K.6.1.2.2: the response holds the requested keys only; the shape changes when they do, not with the values."""
    item = item_to_dataset(WorklistItem(patient_id="P1", patient_name="Doe^Jane", station_ae="DXA1", start_date="20261124"))
    a = MwlQuery.compile(_q({"PatientName": "", "PatientID": "P1"}, {"ScheduledStationAETitle": ""}))
    b = MwlQuery.compile(_q({"PatientName": "Doe*", "PatientID": ""}, {"ScheduledStationAETitle": "DXA1"}))
    assert a.shape == b.shape and a.response(item) == b.response(item)
    assert [e.keyword for e in a.response(item)] == ["PatientName", "PatientID", "ScheduledProcedureStepSequence"]
    assert a.return_keys == tuple(int(e.tag) for e in a.response(item)) == (0x00100010, 0x00100020, 0x00400100)
    c = MwlQuery.compile(_q({"PatientName": ""}, {"ScheduledStationAETitle": ""}))
    assert c.shape != a.shape and "PatientID" not in c.response(item)


def test_compile_refuses_what_the_scp_refuses():
    """PS3.4 C.4.1.1.3 / K.4.1.1.3.1: an unsupported key or a malformed range is 0xA900, with the offending tag."""
    ds = Dataset()
    ds.StudyDescription = "x"
    with pytest.raises(QueryError) as err:
        MwlQuery.compile(ds)
    assert err.value.tag == 0x00081030
    assert MwlQuery.compile(ds, allow_unknown=True).index_filter.statuses == ACTIVE_STATUSES
