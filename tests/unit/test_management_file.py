"""``reports.management_file``: the site's NOGG-based management wording (seed 001 "Reporting")."""

import pytest

from gateway.exams import load_management


def test_management_file_is_read_and_unknown_categories_refused_by_name(tmp_path):
    """Seed 001 "Reporting": management advice is the site's to word; a category
    the classifier does not produce is refused at start, naming it."""
    good = tmp_path / "management.yaml"
    good.write_text("osteoporosis: |\n  Refer to the bone clinic.\nnormal: Reassure.\n")
    assert load_management(good) == {"osteoporosis": "Refer to the bone clinic.", "normal": "Reassure."}
    bad = tmp_path / "bad.yaml"
    bad.write_text("osteoporsis: typo\n")
    with pytest.raises(ValueError, match="osteoporsis"):
        load_management(bad)
    assert load_management(None) == {}
