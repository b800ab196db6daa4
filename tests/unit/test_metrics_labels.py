"""Metric labels come from closed sets (issue 11.5)."""

from prometheus_client import generate_latest

from gateway.app import known_ae_titles
from gateway.config import Config
from gateway.metrics import Metrics, message_type_label
from hl7v2.er7 import Header


def _header(msg_type: str, trigger: str) -> Header:
    return Header("RIS", "H", "GW", "D", "", msg_type, trigger, "1", "P", "2.5.1", "")


def test_message_types_outside_what_the_gateway_takes_are_other():
    assert message_type_label(_header("ORM", "O01")) == "ORM^O01"
    assert message_type_label(_header("Z" * 100_000, "Q")) == "other"
    assert message_type_label(_header("ORM", "O99")) == "other"
    assert message_type_label(None) == "unknown"


def test_only_configured_ae_titles_are_labels():
    config = Config.model_validate(
        {
            "dicom": {"allowed_calling_aes": ["DXA1"], "peers": {"DXA2": {"host": "h", "port": 104}}},
            "worklist": {"default_station_ae": "DXA3"},
        }
    )
    metrics = Metrics(known_aes=known_ae_titles(config))
    for i in range(500):
        metrics.associations.labels(metrics.ae_label(f"SCU{i}"), "accepted").inc()
    for ae in ("DXA1", "DXA2", "DXA3 "):
        metrics.associations.labels(metrics.ae_label(ae), "accepted").inc()
    text = generate_latest(metrics.registry).decode()
    assert "SCU" not in text
    assert 'calling_ae="other",result="accepted"} 500.0' in text
    assert all(f'calling_ae="{ae}"' in text for ae in ("DXA1", "DXA2", "DXA3"))
