from hl7apy.parser import parse_message

from mappings.bmd.hl7_oru import OruContext, build_oru_r01
from tests.unit.bmd.pipeline import exam_and_report


def _message(status="F"):
    exam, c, comp, text = exam_and_report(status)
    ctx = OruContext(
        message_control_id="MSG0001",
        timestamp="20240501120000",
        sending_application="DXA|GW",
        sending_facility="HOSP",
        receiving_application="RIS",
        receiving_facility="HOSP",
        placer_order_number="PL-1",
        filler_order_number="FL-1",
        result_status=status,
    )
    return exam, c, comp, text, build_oru_r01(exam, c, comp, text, ctx)


def test_oru_parses_with_hl7apy_and_obx_values_match():
    exam, c, comp, text, msg = _message()
    assert "\n" not in msg and msg.count("\r") >= 5
    m = parse_message(msg, find_groups=False)
    assert m.msh.msh_9.value == "ORU^R01^ORU_R01"
    assert m.msh.msh_10.value == "MSG0001" and m.msh.msh_12.value == "2.5.1"
    assert m.msh.msh_3.value == "DXA\\F\\GW"  # escaped field separator
    assert m.obr.obr_18.value == "ACC-42" and m.obr.obr_25.value == "F"
    assert m.obr.obr_4.value.startswith("83311-1^")
    obx = list(m.obx)
    assert [int(s.obx_1.value) for s in obx] == list(range(1, len(obx) + 1))
    nm = {s.obx_3.value.split("^")[3] if s.obx_3.value.count("^") >= 3 else s.obx_3.value.split("^")[0]: s for s in obx if s.obx_2.value == "NM"}
    left_neck = nm["L.neck.bmd"]
    assert left_neck.obx_3.value.split("^")[:3] == ["80954-1", "Left femoral neck BMD", "LN"]
    assert left_neck.obx_5.value == "0.571" and left_neck.obx_6.value == "g/cm2^g/cm2^UCUM"
    assert nm["L.neck.t_score"].obx_5.value == "-2.5" and nm["L.neck.t_score"].obx_6.value == "1^1^UCUM"
    assert nm["L.neck.z_score"].obx_5.value == "-1.80"
    assert nm["L1.bmd"].obx_5.value == "0.810"
    assert nm["90265-0"].obx_5.value == "18.0"
    # the diagnosis used L1,L2,L4 (L3 excluded): the lumbar-spine LOINC goes there (issue 14 defect 1)
    assert nm["L1,L2,L4.bmd"].obx_3.value.split("^")[:3] == ["24966-4", "Lumbar spine L1,L2,L4 BMD", "LN"]
    (category,) = [s for s in obx if s.obx_2.value == "CWE"]
    assert category.obx_5.value == "osteoporosis^Osteoporosis^99DXAGW^64859006^Osteoporosis (disorder)^SCT"
    assert all(s.obx_11.value == "F" for s in obx)


def test_report_text_lines_round_trip_through_escaping():
    exam, c, comp, text, msg = _message()
    m = parse_message(msg, find_groups=False)
    lines = [s.obx_5.value for s in m.obx if s.obx_2.value == "TX"]
    unescaped = [
        v.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\T\\", "&").replace("\\R\\", "~").replace("\\E\\", "\\")
        for v in lines
    ]
    assert unescaped == text.split("\n")
    assert any("O'Brien\\F\\Smith Anne\\T\\Marie" in v for v in lines)


def test_pid_name_components_escaped():
    *_, msg = _message()
    pid = [s for s in msg.split("\r") if s.startswith("PID")][0]
    assert pid.split("|")[5] == "O'Brien\\F\\Smith^Anne\\T\\Marie"


def test_preliminary_status_everywhere():
    *_, msg = _message("P")
    m = parse_message(msg, find_groups=False)
    assert m.obr.obr_25.value == "P" and {s.obx_11.value for s in m.obx} == {"P"}
