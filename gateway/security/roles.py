"""Which role may call which HTTP endpoint (README "Security").

One table: (method, route pattern) -> the roles any one of which grants it.
``OPEN`` needs no credential.  A route not in the table is refused to every
identity (403), so a new endpoint is closed until it is given a line here.
"""

from __future__ import annotations

OPEN: frozenset[str] = frozenset()

ROLES = ("orders", "radiographer", "reporter", "admin", "viewer", "metrics")

_READ_WORKLIST = frozenset({"viewer", "orders", "radiographer", "admin"})
_READ_EXAMS = frozenset({"viewer", "radiographer", "reporter"})

POLICY: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): frozenset({"metrics"}),  # OPEN when http.metrics_public
    # worklist and orders
    ("POST", "/api/worklist"): frozenset({"orders"}),
    ("GET", "/api/worklist"): _READ_WORKLIST,
    ("GET", "/api/worklist/{id}"): _READ_WORKLIST,
    ("DELETE", "/api/worklist/{id}"): frozenset({"orders"}),
    # justifying a held order is the IR(ME)R practitioner's act (README "Running a DXA service")
    ("POST", "/api/worklist/{id}/justify"): frozenset({"reporter"}),
    ("POST", "/fhir/ServiceRequest"): frozenset({"orders"}),
    ("POST", "/fhir"): frozenset({"orders"}),
    # exams and reports
    ("GET", "/api/exams"): _READ_EXAMS,
    ("GET", "/api/exams/{id}"): _READ_EXAMS,
    ("GET", "/api/exams/{id}/report"): _READ_EXAMS,
    ("GET", "/api/exams/{id}/reports"): _READ_EXAMS,
    # the workbench's views of an exam (gateway/http/exam_views.py)
    ("GET", "/api/exams/{id}/images"): _READ_EXAMS,
    ("GET", "/api/exams/{id}/images/{sop_instance_uid}.png"): _READ_EXAMS,
    ("GET", "/api/exams/{id}/trend.svg"): _READ_EXAMS,
    ("GET", "/api/exams/{id}/report.pdf"): _READ_EXAMS,
    ("POST", "/api/exams/{id}/sign"): frozenset({"reporter"}),
    ("PUT", "/api/exams/{id}/context"): frozenset({"radiographer"}),  # clinical context and technical notes
    # priors from the PACS: lookups and backfill progress (patient IDs)
    ("GET", "/api/priors/status"): frozenset({"viewer", "reporter", "admin"}),
    # operations
    ("GET", "/api/outbox"): frozenset({"admin"}),
    ("POST", "/api/outbox/retry"): frozenset({"admin"}),
    ("POST", "/api/outbox/{id}/retry"): frozenset({"admin"}),
    ("GET", "/api/destinations"): frozenset({"admin"}),
    ("GET", "/api/audit"): frozenset({"admin"}),
    # service KPIs (docs/domain.md section 1 item 6)
    ("GET", "/api/kpis"): frozenset({"viewer"}),
    # scanner QA from phantom scans (README "Running a DXA service")
    ("GET", "/api/qa"): frozenset({"viewer", "radiographer", "admin"}),
    ("GET", "/api/qa/{serial}"): frozenset({"viewer", "radiographer", "admin"}),
    # the reporting workbench (README "The reporting workbench"): logging in is open,
    # each page needs the role whose work it shows
    ("GET", "/workbench/login"): OPEN,
    ("POST", "/workbench/login"): OPEN,  # Host, Origin and the login form's CSRF token are still checked
    ("GET", "/workbench/oidc/start"): OPEN,
    ("GET", "/workbench/oidc/callback"): OPEN,
    ("GET", "/workbench/static"): OPEN,  # the style sheet and the small script: no patient data
    ("GET", "/workbench/"): frozenset(ROLES),
    ("POST", "/workbench/logout"): frozenset(ROLES),
    ("GET", "/workbench/queue"): frozenset({"reporter"}),
    ("GET", "/workbench/today"): frozenset({"radiographer"}),
    ("GET", "/workbench/exams/{id}"): _READ_EXAMS,
    ("POST", "/workbench/exams/{id}/sign"): frozenset({"reporter"}),
    ("POST", "/workbench/exams/{id}/context"): frozenset({"radiographer"}),
}


def required_roles(method: str, pattern: str, *, metrics_public: bool = False) -> frozenset[str] | None:
    """The roles granting ``method pattern``; OPEN for none needed; None if unlisted."""
    method = "GET" if method == "HEAD" else method
    if metrics_public and (method, pattern) == ("GET", "/metrics"):
        return OPEN
    return POLICY.get((method, pattern))
