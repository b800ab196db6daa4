"""routes.rules and the outbox backoff: pure pieces of delivery."""

from __future__ import annotations

import random

import pytest

from gateway.config import ConfigError, load_config
from gateway.outbox import backoff
from hl7v2.ack import read_msa
from routes.rules import RoutedObject, compile_routes, destinations_for


def rules_from(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return compile_routes(load_config(p).routes)


CONFIG = """
destinations:
  pacs: {type: dicom, host: 127.0.0.1, port: 4242, ae_title: ORTHANC}
  emr:  {type: hl7, host: 127.0.0.1, port: 2576}
  ge:   {type: folder, path: /tmp/ge}
routes:
  - match: {kind: [image, sr, pdf, dose]}
    to: [pacs]
  - match: {kind: report}
    to: [emr]
  - match: {kind: sr, Manufacturer: {regex: "^GE "}, calling_ae: DXA2}
    to: [ge, pacs]
"""


def test_the_issue_example_and_keyword_regex(tmp_path):
    rules = rules_from(tmp_path, CONFIG)
    assert destinations_for(rules, RoutedObject(kind="image")) == ("pacs",)
    assert destinations_for(rules, RoutedObject(kind="report")) == ("emr",)
    assert destinations_for(rules, RoutedObject(kind="mpps")) == ()
    ge_sr = RoutedObject(kind="sr", calling_ae="DXA2", attributes={"Manufacturer": "GE Healthcare"})
    assert destinations_for(rules, ge_sr) == ("pacs", "ge")  # each destination once, in route order
    other = RoutedObject(kind="sr", calling_ae="DXA1", attributes={"Manufacturer": "GE Healthcare"})
    assert destinations_for(rules, other) == ("pacs",)


def test_unknown_destination_is_named_with_its_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CONFIG.replace("to: [emr]", "to: [emr, ris]"))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f"{p}:10: routes.1.to: no destination named 'ris'" in str(err.value)


def test_destination_needs_its_fields(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("destinations:\n  pacs: {type: dicom, host: 127.0.0.1}\n")
    with pytest.raises(ConfigError, match="destinations.pacs"):
        load_config(p)


def test_backoff_grows_with_jitter_and_is_capped():
    rng = random.Random(1)
    delays = [backoff(n, 2.0, 60.0, rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        full = min(60.0, 2.0 * 2 ** (n - 1))
        assert full * 0.5 <= d <= full
    assert max(delays) <= 60.0


def test_ack_matching_reads_msa():
    assert read_msa(b"MSH|^~\\&|E|H|G|D|2026||ACK|1|P|2.5.1\rMSA|AA|CTRL7|ok\r") == ("AA", "CTRL7", "ok")
    assert read_msa(b"MSH|^~\\&|E\r") == ("", "", "")
