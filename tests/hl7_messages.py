"""HL7 v2 test messages built field by field (so field numbers are right),
with the one ER7 writer (hl7v2.er7.segment: MSH counts MSH-1 too)."""

from __future__ import annotations

from hl7v2.er7 import segment


def msh(control_id: str, msg_type: str = "ORM^O01", version: str = "2.3.1", charset: str = "", ts: str = "20261124080000") -> str:
    return segment(
        "MSH",
        {3: "RIS", 4: "HOSP", 5: "DXAGW", 6: "DXA", 7: ts, 9: msg_type, 10: control_id, 11: "P", 12: version, 18: charset},
    )


def pid(patient_id: str = "P001", name: str = "Smith^Jane", dob: str = "19580312", sex: str = "F", ethnic: str = "") -> str:
    return segment("PID", {1: "1", 3: f"{patient_id}^^^HOSP^MR", 5: name, 7: dob, 8: sex, 22: ethnic})


def orm(
    control_id: str,
    *,
    control: str = "NW",
    placer: str = "PO1",
    filler: str = "FO1",
    accession: str = "ACC1",
    station: str = "DXA1",
    start: str = "20261124093000",
    patient_id: str = "P001",
    name: str = "Smith^Jane",
    dob: str = "19580312",
    sex: str = "F",
    charset: str = "",
    version: str = "2.3.1",
    study_uid: str = "",
    order_status: str = "",
) -> str:
    segs = [
        msh(control_id, "ORM^O01", version, charset),
        pid(patient_id, name, dob, sex),
        segment("PV1", {1: "1", 2: "O", 8: "D123^Referrer^Rita"}),
        segment("ORC", {1: control, 2: placer, 3: filler, 5: order_status, 7: f"^^^{start}", 12: "D456^Orderer^Olga"}),
        segment(
            "OBR",
            {1: "1", 2: placer, 3: filler, 4: "DXAHS^DXA hip and spine^L", 18: accession, 19: "RP1", 20: "SPS1", 21: station, 24: "BMD", 27: f"^^^{start}"},
        ),
    ]
    if study_uid:
        segs.append(segment("ZDS", {1: f"{study_uid}^DXAGW^Application^DICOM"}))
    return "\r".join(segs) + "\r"


def omi(control_id: str, *, placer: str = "PO9", steps: list[tuple[str, str, str]] = (("ACC9", "RP9", "SPS9"),), station: str = "DXA1", start: str = "20261124100000", study_uid: str = "1.2.826.0.1.3680043.8.498.1") -> str:
    segs = [
        msh(control_id, "OMI^O23", "2.5.1"),
        pid("P009", "Jones^Ann", "19700101", "F"),
        segment("PV1", {1: "1", 2: "O"}),
        segment("ORC", {1: "NW", 2: placer, 3: "F" + placer}),
        segment("TQ1", {1: "1", 7: start}),
        segment("OBR", {1: "1", 2: placer, 3: "F" + placer, 4: "DXAHS^DXA hip and spine^L"}),
    ]
    for acc, rp, sps in steps:
        segs.append(segment("IPC", {1: acc, 2: rp, 3: study_uid, 4: sps, 5: "BMD", 9: station}))
    return "\r".join(segs) + "\r"


def adt(control_id: str, trigger: str = "A08", *, patient_id: str = "P001", name: str = "Smith^Janet", prior: str = "") -> str:
    segs = [msh(control_id, f"ADT^{trigger}", "2.5.1"), segment("EVN", {1: trigger}), pid(patient_id, name, "19580312", "F")]
    if prior:
        segs.append(segment("MRG", {1: f"{prior}^^^HOSP^MR"}))
    return "\r".join(segs) + "\r"
