"""Config check of the fracture liaison routes (docs/fls.md)."""

import pytest

from gateway.config import ConfigError, load_config


def test_fls_route_to_a_dicom_destination_is_refused_at_start(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "destinations:\n  pacs: {type: dicom, host: 127.0.0.1, port: 104, ae_title: PACS}\n  fls: {type: hl7, host: 127.0.0.1, port: 2576}\n"
        "routes:\n  - {match: {kind: fls}, to: [fls]}\n  - {match: {kind: fls}, to: [pacs]}\n"
    )
    with pytest.raises(ConfigError, match=r"routes\.1\.to.*kind fls needs an hl7 or fhir destination, not dicom"):
        load_config(p)
    p.write_text("destinations:\n  fls: {type: fhir, url: 'http://127.0.0.1:1/fhir'}\nroutes:\n  - {match: {kind: fls}, to: [fls]}\n")
    assert load_config(p).routes[0].match.kind == ["fls"]
