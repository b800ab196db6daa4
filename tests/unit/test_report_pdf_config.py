"""Config check of the report-pdf routes (docs/dicom-conformance.md 4.2.10)."""

import pytest

from gateway.config import ConfigError, load_config


def test_report_pdf_goes_to_dicom_dicomweb_or_folder_destinations_only(tmp_path):
    """An Encapsulated PDF is a DICOM object: an hl7 or fhir destination for it is refused at start."""
    p = tmp_path / "c.yaml"
    p.write_text(
        "destinations:\n  pacs: {type: dicom, host: 127.0.0.1, port: 104, ae_title: PACS}\n  emr: {type: hl7, host: 127.0.0.1, port: 2576}\n"
        "routes:\n  - {match: {kind: report-pdf}, to: [pacs]}\n  - {match: {kind: [report, report-pdf]}, to: [emr]}\n"
    )
    with pytest.raises(ConfigError, match=r"routes\.1\.to.*kind report-pdf needs a dicom, dicomweb or folder destination, not hl7"):
        load_config(p)
    p.write_text(
        "destinations:\n  web: {type: dicomweb, url: 'http://127.0.0.1:1/dicom-web'}\n  arch: {type: folder, path: /tmp/x}\n"
        "routes:\n  - {match: {kind: report-pdf}, to: [web, arch]}\n"
    )
    assert load_config(p).routes[0].match.kind == ["report-pdf"]
