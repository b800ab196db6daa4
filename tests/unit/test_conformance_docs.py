"""docs/dicom-conformance.md says what the daemon does: its marked tables against the code.

The SOP classes and transfer syntaxes come from the code that builds the
acceptor's presentation contexts (DicomServer._make_ae); the worklist keys
from the key sets the MWL SCP checks queries against.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag

from gateway.config import DicomSettings
from gateway.dicom.server import DicomServer
from mappings.instances import STORAGE_SOP_CLASSES
from mappings.mpps import CREATE_TYPE1, SET_NOT_ALLOWED
from mappings.mwl import SPS_KEYS, TOP_LEVEL_KEYS

DOCS = Path(__file__).resolve().parents[2] / "docs"
STATEMENT = DOCS / "dicom-conformance.md"
UID = re.compile(r"`(\d+(?:\.\d+)+)`")


def marked(name: str, text: str | None = None) -> list[str]:
    """The table rows between ``<!-- conformance:name -->`` and its closing marker."""
    text = STATEMENT.read_text() if text is None else text
    m = re.search(rf"<!-- conformance:{name} -->\n(.*?)<!-- /conformance:{name} -->", text, re.S)
    assert m, f"no marked table {name!r} in {STATEMENT.name}"
    rows = [line for line in m.group(1).splitlines() if line.startswith("|")]
    return [r for r in rows[2:]]  # after the header and the |---| line


def uids(name: str) -> list[str]:
    out = []
    for row in marked(name):
        found = UID.findall(row)
        assert len(found) == 1, f"one UID per row: {row}"
        out.append(found[0])
    return out


def accepted_contexts():
    """The presentation contexts the daemon's acceptor offers, built by its own code."""
    stub = SimpleNamespace(settings=DicomSettings(), storage_classes=set(STORAGE_SOP_CLASSES))
    return DicomServer._make_ae(stub).supported_contexts


def test_the_sop_classes_listed_are_exactly_those_accepted():
    listed = uids("sop-classes")
    assert len(listed) == len(set(listed)), "a SOP class is listed twice"
    assert set(listed) == {str(cx.abstract_syntax) for cx in accepted_contexts()}


def test_the_transfer_syntaxes_listed_are_exactly_those_accepted():
    storage = set(STORAGE_SOP_CLASSES)
    by_kind: dict[bool, set[tuple[str, ...]]] = {True: set(), False: set()}
    for cx in accepted_contexts():
        by_kind[str(cx.abstract_syntax) in storage].add(tuple(str(t) for t in cx.transfer_syntax))
    # one list for every storage class, one for the other services, each in order
    assert by_kind[True] == {tuple(uids("storage-transfer-syntaxes"))}
    assert by_kind[False] == {tuple(uids("service-transfer-syntaxes"))}


@pytest.mark.parametrize("name, keys", [("mwl-return-keys", TOP_LEVEL_KEYS), ("mwl-sps-return-keys", SPS_KEYS)])
def test_the_worklist_keys_listed_are_the_supported_ones(name, keys):
    listed = {}
    for row in marked(name):
        cells = [c.strip() for c in row.strip("|").split("|")]
        tag_text, keyword = cells[0], cells[1].strip("`")
        group, element = (int(x, 16) for x in tag_text.strip("()").split(","))
        assert Tag(group, element) == Tag(tag_for_keyword(keyword)), f"{keyword}: tag {tag_text} is not its tag"
        listed[keyword] = row
    assert set(listed) == set(keys)


def test_the_marker_parser_sees_a_missing_row():
    """The check can fail: a table without a row the code has is told apart."""
    text = STATEMENT.read_text()
    rows = marked("sop-classes", text)
    dropped = text.replace(rows[0] + "\n", "", 1)
    assert len(marked("sop-classes", dropped)) == len(rows) - 1


def test_the_companion_documents_exist_and_are_linked():
    text = STATEMENT.read_text()
    assert "tolerated-defects.md" in text  # written by the UID-tolerance work (issue 12 item 4)
    for doc in ("hl7-interface.md", "fhir.md"):
        assert (DOCS / doc).is_file(), doc
        assert f"docs/{doc}" in text


@pytest.mark.parametrize("name, keywords", [("mpps-create-required", CREATE_TYPE1), ("mpps-set-not-allowed", SET_NOT_ALLOWED)])
def test_the_mpps_attribute_rules_listed_are_those_enforced(name, keywords):
    listed = [row.strip("|").split("|")[1].strip().strip("`") for row in marked(name)]
    assert sorted(listed) == sorted(keywords)
