"""The UID rule (mappings/uids.py) and the file-name guard (routes/base.py)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from mappings.uids import LEADING_ZERO, SPACE_PADDING, UidError, check_dataset_uids, check_uid, uid_problem
from routes.base import PathOutsideRoot, path_inside


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "empty"),
        ("../x", "characters other than digits and dots"),
        ("/tmp/x", "characters other than digits and dots"),
        ("1.2.3\\4", "characters other than digits and dots"),
        ("1.2.a", "characters other than digits and dots"),
        ("1.2..3", "an empty component"),
        (".1.2", "an empty component"),
        ("1.2.", "an empty component"),
        ("..", "an empty component"),
        ("1." + "2" * 63, "longer than 64 characters"),
    ],
)
def test_unsafe_values_are_refused(value, reason):
    """PS3.5 9.1 / Table 6.2-1: digits and dots, non-empty components, <= 64."""
    with pytest.raises(UidError) as exc:
        check_uid(value)
    assert exc.value.reason == reason
    assert uid_problem(value) == reason


def test_defects_are_tolerated_and_named():
    """A leading zero (PS3.5 9.1 note: registration authorities hand them
    out) and space padding (PS3.5 6.2 says NUL) are accepted as received."""
    assert check_uid("1.2.840.10008.1.2").defects == ()
    assert check_uid("1.2.0").defects == ()  # "0" alone is right
    lz = check_uid("1.2.840.0099.1")
    assert lz.value == "1.2.840.0099.1" and lz.defects == (LEADING_ZERO,)
    padded = check_uid("1.2.3 ")
    assert padded.value == "1.2.3" and padded.defects == (SPACE_PADDING,)
    assert check_uid("1.2.3\0").defects == ()
    assert check_uid("1" * 64).value == "1" * 64


def test_dataset_walk_finds_uids_in_sequences():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.3.1.2.3.3"
    item = Dataset()
    item.StudyInstanceUID = "1.2.03"
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = ""  # type 2, empty: fine
    item.ReferencedStudySequence = [ref]
    ds.ScheduledStepAttributesSequence = [item]
    problem, defects = check_dataset_uids(ds)
    assert problem is None and defects == (LEADING_ZERO,)
    ref.ReferencedSOPInstanceUID = "../../etc"
    problem, _ = check_dataset_uids(ds)
    assert problem.tag == 0x00081155
    assert problem.path == "ScheduledStepAttributesSequence[0].ReferencedStudySequence[0].ReferencedSOPInstanceUID"


def test_path_inside_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert path_inside(root, "1.2.3.json") == (root / "1.2.3.json").resolve()
    for name in ("../x", "/etc/passwd", "..", ".", "", "a/b", "a\\b", "x\0y"):
        with pytest.raises(PathOutsideRoot):
            path_inside(root, name)
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathOutsideRoot):
        path_inside(root, "link")
