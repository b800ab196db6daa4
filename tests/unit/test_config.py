from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config


def test_embedded_default_is_the_contract():
    c = load_config()
    assert (c.dicom.ae_title, c.dicom.host, c.dicom.port) == ("DXAGW", "127.0.0.1", 11112)
    assert (c.hl7.port, c.http.port, c.storage.path) == (2575, 8080, Path("./data"))


def test_errors_name_key_and_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dicom:\n  ae_title: THIS_AE_TITLE_IS_TOO_LONG\nhttp:\n  port: 99999\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    text = str(err.value)
    assert f"{p}:2: dicom.ae_title" in text and f"{p}:4: http.port" in text


def test_environment_values(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("dicom:\n  ae_title: ${GW_AET}\n")
    monkeypatch.setenv("GW_AET", "FROMENV")
    assert load_config(p).dicom.ae_title == "FROMENV"
    monkeypatch.delenv("GW_AET")
    with pytest.raises(ConfigError, match="GW_AET"):
        load_config(p)
