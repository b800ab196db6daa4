"""deploy/: the Prometheus rules pass promtool's own tests, and every metric
the rules and the Grafana dashboard name is one the real daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dxa-gateway.json"
# Series the daemon does not export itself: Prometheus's own.
PROMETHEUS_SERIES = {"up"}
_NAME = re.compile(r"\b(dxagw_[a-zA-Z0-9_]+|up)\b(?!\s*\()")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed (Debian package prometheus; ./run-tests installs it)"
    return path


def test_rules_are_valid():
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_pass():
    r = subprocess.run([promtool(), "test", "rules", "alerts.test.yml", "alerts.service.test.yml"], cwd=RULES.parent, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def exported_names(daemon) -> set[str]:
    """Every sample name /metrics can carry, from its # TYPE lines."""
    with urllib.request.urlopen(urllib.request.Request(daemon.http + "/metrics", headers=daemon.headers), timeout=10) as rsp:
        text = rsp.read().decode()
    names = set()
    # text format 0.0.4: a counter's TYPE line already ends in _total
    suffixes = {"counter": ("",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",), "summary": ("_count", "_sum", "")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.update(name + s for s in suffixes.get(kind, ("",)))
    return names


def expressions() -> list[tuple[str, str]]:
    out = [(f"alert {r['alert']}", r["expr"]) for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dash["templating"]["list"]:
        out.append((f"variable {var['name']}", var["definition"]))
    return out


def test_every_expression_names_an_exported_metric(daemon):
    exported = exported_names(daemon)
    assert "dxagw_orders_held_total" in exported and "dxagw_referral_to_scan_seconds_bucket" in exported
    exprs = expressions()
    assert len(exprs) > 30
    for where, expr in exprs:
        names = set(_NAME.findall(re.sub(r'"[^"]*"', '""', expr)))  # not inside label values
        assert names, f"{where}: names no metric: {expr}"
        unknown = names - exported - PROMETHEUS_SERIES
        assert not unknown, f"{where}: {sorted(unknown)} not exported by /metrics"


def test_dashboard_is_importable_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "dxa-gateway" and dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"], p["title"]


def test_certificate_expiry_gauge(tmp_path):
    """The DxaCertificateExpiring alerts read this gauge: one sample per configured certificate."""
    import trustme
    from cryptography import x509

    from tests.support import free_port, start_daemon

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.pem"))
    tls = {"cert": str(tmp_path / "gw.pem"), "key": str(tmp_path / "gw.key"), "require_client_cert": False}
    d = start_daemon(tmp_path / "gw", {"dicom": {"tls": {**tls, "port": free_port()}}, "hl7": {"tls": {**tls, "port": free_port()}}})
    try:
        with urllib.request.urlopen(urllib.request.Request(d.http + "/metrics", headers=d.headers), timeout=10) as rsp:
            text = rsp.read().decode()
    finally:
        d.stop()
    want = x509.load_pem_x509_certificate((tmp_path / "gw.pem").read_bytes()).not_valid_after_utc.timestamp()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("dxagw_tls_certificate_not_after")}
    assert samples == {
        'dxagw_tls_certificate_not_after_timestamp_seconds{certificate="dicom"}': want,
        'dxagw_tls_certificate_not_after_timestamp_seconds{certificate="hl7"}': want,
    }
