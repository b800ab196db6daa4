"""The one config: YAML validated into typed models at start (docs/architecture.md rule 7).

An error names the key and the file line.  ``${VAR}`` in a string value is
taken from the environment (for secrets).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from mappings.bmd.drl import UNITS as DOSE_UNITS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Model):
    """A TLS listener (DICOM PS3.15 B.9/B.12, BCP 195: TLS 1.2 or later)."""

    port: int = Field(0, ge=0, le=65535)  # DICOM and HL7: the TLS listener's own port
    cert: Path
    key: Path
    ca: Path | None = None  # CA bundle that client certificates must chain to
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _ca(self) -> "TlsSettings":
        if self.require_client_cert and self.ca is None:
            raise ValueError("require_client_cert needs ca (the CA client certificates chain to)")
        return self


class ClientTls(_Model):
    """TLS toward a destination: the CA its certificate chains to (default:
    the system's), and our client certificate when it asks for one."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    check_hostname: bool = True  # the certificate must name the host we connect to


class ServiceAccess(_Model):
    """Calling AE titles allowed for one DICOM service; empty allows any."""

    allowed_calling_aes: list[str] = []


class WorklistSettings(_Model):
    case_insensitive_names: bool = True
    fallback_character_set: Literal["ISO_IR 192", "ISO_IR 100"] = "ISO_IR 192"
    unsupported_keys: Literal["refuse", "ignore"] = "refuse"
    max_results: int = Field(1000, ge=1, le=100000)


class StorageScpSettings(_Model):
    """C-STORE SCP: which SOP classes beyond the DXA set, and duplicates."""

    extra_sop_classes: list[str] = []
    duplicate_policy: Literal["keep_first", "replace", "keep_both"] = "keep_first"
    # A Deflated Explicit VR Little Endian dataset inflating past this is
    # refused with 0xA700 (a deflate bomb: 200 kB can inflate to 200 MB).
    max_inflated_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)


class DicomPeer(_Model):
    """A known peer (by calling AE title): its listening address, for replies
    on a new association, and what it must connect from / prove under TLS."""

    host: str = ""
    port: int = Field(0, ge=0, le=65535)
    addresses: list[str] = []  # source addresses or CIDR networks it may connect from; empty: any
    tls_subject: str = ""  # e.g. "CN=dxa1.hospital.example,O=Hospital": each attribute must be in its certificate's subject
    tls_fingerprint: str = ""  # SHA-256 of its certificate (hex, colons allowed)

    @field_validator("addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value


class CommitmentSettings(_Model):
    """Storage Commitment Push Model (PS3.4 Annex J)."""

    report_on: Literal["same", "new"] = "same"
    report_delay: float = Field(0.2, ge=0)  # seconds between N-ACTION-RSP and N-EVENT-REPORT
    verify_checksum: bool = True
    # Commit an instance only once these destinations have confirmed it
    # (their outbox rows are done); wait up to wait_timeout for them.
    wait_for_destinations: list[str] = []
    wait_timeout: float = Field(60, gt=0)


class DicomSettings(_Model):
    ae_title: str = "DXAGW"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=0, le=65535)
    maximum_pdu_size: int = Field(262144, ge=0)
    maximum_associations: int = Field(50, ge=1)
    network_timeout: float = Field(60, gt=0)
    acse_timeout: float = Field(30, gt=0)
    dimse_timeout: float = Field(60, gt=0)
    # From TCP connect to a complete A-ASSOCIATE-RQ; a slower peer is dropped.
    association_setup_timeout: float = Field(10, gt=0)
    # Open connections one source address may hold; more are closed at accept.
    max_connections_per_address: int = Field(16, ge=1)
    allowed_calling_aes: list[str] = []
    accept_any_called_ae: bool = False  # else an association to another called AE title is rejected
    tls: TlsSettings | None = None
    services: dict[Literal["verification", "worklist", "mpps", "storage", "commitment"], ServiceAccess] = {}
    worklist: WorklistSettings = WorklistSettings()
    storage: StorageScpSettings = StorageScpSettings()
    commitment: CommitmentSettings = CommitmentSettings()
    peers: dict[str, DicomPeer] = {}

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        # PS3.5 6.2: AE is 1-16 characters, no backslash or control characters.
        if not 0 < len(value) <= 16 or "\\" in value or not value.isprintable():
            raise ValueError("an AE title is 1 to 16 printable characters without backslash")
        return value


class Hl7Sender(_Model):
    """One allowed MLLP sender: MSH-3^MSH-4 (namespace IDs) and optionally where from."""

    sender: str = Field(pattern=r"^[^^|]*\^[^^|]*$")
    addresses: list[str] = []
    tls_subject: str = ""  # under MLLP/TLS: attributes its certificate's subject must hold
    tls_fingerprint: str = ""  # or the SHA-256 of its certificate

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: object) -> object:
        return {"sender": value} if isinstance(value, str) else value

    @field_validator("addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return DicomPeer._networks(value)


class Hl7Settings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_connections: int = Field(64, ge=1)
    max_buffered_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    idle_timeout: float = Field(600, gt=0)
    default_charset: Literal["ASCII", "8859/1", "UNICODE UTF-8"] = "UNICODE UTF-8"
    station_ae_field: str = "OBR-21"
    application: str = "DXAGW"
    facility: str = "DXA"
    allowed_senders: list[Hl7Sender] = []  # "RIS^HOSP" or {sender: "RIS^HOSP", addresses: [...]}; empty: any
    tls: TlsSettings | None = None

    @field_validator("station_ae_field")
    @classmethod
    def _field_ref(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}-\d+(\.\d+)?", value):
            raise ValueError("a field reference like OBR-21 or OBR-21.1")
        return value


class HttpSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    metrics_public: bool = False  # /metrics without the `metrics` role
    allowed_hosts: list[str] = []  # Host header values accepted; empty: the bind address and localhost
    tls: TlsSettings | None = None
    session_idle_minutes: float = Field(30, gt=0, le=24 * 60)  # a workbench session ends after this long unused


ROLES = ("orders", "radiographer", "reporter", "admin", "viewer", "metrics")


class TokenEntry(_Model):
    """One HTTP identity holding a bearer token (or only its SHA-256)."""

    name: str = Field(min_length=1, max_length=64)
    token: str = ""
    token_sha256: str = ""
    roles: list[Literal["orders", "radiographer", "reporter", "admin", "viewer", "metrics"]] = Field(min_length=1)
    display_name: str = ""  # the reporter's name on a signed report
    registration: str = ""  # e.g. "GMC 1234567"

    @model_validator(mode="after")
    def _one_secret(self) -> "TokenEntry":
        if bool(self.token) == bool(self.token_sha256):
            raise ValueError("give exactly one of token or token_sha256")
        if self.token and len(self.token) < 16:
            raise ValueError("a token is at least 16 characters (make one with `dxa-gateway token new`)")
        if self.token_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", self.token_sha256):
            raise ValueError("token_sha256 is 64 hex digits")
        return self


class OidcLoginSettings(_Model):
    """The workbench's login at the provider: authorization code with PKCE
    (RFC 6749 4.1, RFC 7636 S256); the access token it gets is checked like
    any bearer token (issuer, audience, roles claim)."""

    client_id: str = Field(min_length=1)
    client_secret: str = ""  # empty: a public client (PKCE alone)
    scope: str = "openid"
    resource: str = ""  # RFC 8707 resource indicator, when the provider needs one to issue a JWT for our audience
    redirect_uri: str = ""  # empty: this request's scheme and Host + /workbench/oidc/callback


class OidcSettings(_Model):
    """Bearer tokens issued by an OpenID provider (checked against its JWKS)."""

    issuer: str
    audience: str
    roles_claim: str = "roles"
    name_claim: str = "preferred_username"
    leeway: float = Field(60, ge=0)  # seconds of clock skew allowed on exp/nbf/iat
    jwks_cache: float = Field(300, gt=0)  # seconds a fetched key set is reused
    ca: Path | None = None  # CA bundle for the issuer's HTTPS
    login: OidcLoginSettings | None = None  # the workbench's "sign in with the hospital's provider"


class SyslogSettings(_Model):
    """Where ATNA audit messages go: RFC 5424 over UDP, TCP or TLS (RFC 5425)."""

    host: str
    port: int = Field(6514, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "tls"
    ca: Path | None = None  # the collector's CA (tls), default the system's
    cert: Path | None = None  # our client certificate, if the collector asks for one
    key: Path | None = None
    check_hostname: bool = True


class AuditSettings(_Model):
    """The audit trail: always in the store; with ``syslog``, also sent as IHE ATNA."""

    syslog: SyslogSettings | None = None
    source_id: str = ""  # AuditSourceID (default: dicom.ae_title)
    site_id: str = ""  # AuditEnterpriseSiteID


class SecuritySettings(_Model):
    tokens: list[TokenEntry] = []
    oidc: OidcSettings | None = None

    @field_validator("tokens")
    @classmethod
    def _unique(cls, value: list[TokenEntry]) -> list[TokenEntry]:
        names = [t.name for t in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"identity names must be unique: {', '.join(dupes)}")
        return value


class StorageSettings(_Model):
    path: Path = Path("./data")  # the spool (and, without ``database``, gateway.sqlite3); replicas share one
    min_free_bytes: int = Field(1024**3, ge=0)  # below this, C-STORE answers 0xA700
    # postgresql://user@host/db: a PostgreSQL database several replicas share
    # (gateway/store/postgres.py); unset: SQLite under ``path``, the embedded default
    database: str | None = None
    replica_id: str = ""  # names this replica's outbox leases; unset: host:pid
    lease_seconds: float | None = Field(None, gt=0)  # an outbox claim's lease, renewed while sending; unset: 60 s

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("storage.database is a postgresql:// URL (unset: SQLite under storage.path)")
        return value or None


class WorklistDefaults(_Model):
    default_modality: str = "BMD"
    default_station_ae: str = ""


class ReportsSettings(_Model):
    """BMD reports: release, template, and the serial-comparison settings."""

    auto_release: bool = False  # release a preliminary report, marked not clinically evaluated, at once
    reporters: list[str] = []  # identities entitled to sign; empty: any identity with the reporter role
    template_file: Path | None = None  # a site's own report template ($placeholders)
    menopausal_default: bool | None = None  # for women under 50 when the order says nothing
    lsc_percent: dict[str, float] = {}  # per site, overrides the ISCD defaults
    lsc_absolute: dict[str, float] = {}  # per site, g/cm2, for all scanners
    lsc_per_scanner: dict[str, dict[str, float]] = {}  # serial or model -> site -> g/cm2
    cross_calibrated: list[list[str]] = []  # groups of models/serials whose BMD compare
    management_file: Path | None = None  # YAML: diagnostic category -> management wording (NOGG-based defaults)
    recommended_interval: str = ""  # report text for the interval to the next scan (default: UK two-year guidance)
    table_limit_kg: float | None = Field(None, gt=0)  # the scanner table's weight limit: heavier patients get the forearm (ISCD)
    # A study's results arrive as several objects (one report image per scan,
    # SRs a day late): the report is drafted this long after the last one.
    settle_seconds: float = Field(30.0, ge=0, le=86400)
    # The result reader process: address-space limit (RLIMIT_AS) and time per object.
    reader_memory_limit_mb: int = Field(1024, ge=0, le=65536)  # 0: no limit
    reader_timeout_seconds: float = Field(60.0, gt=0, le=3600)


class EntitlementSettings(_Model):
    """Referrer entitlement (IR(ME)R): the employer's register of referrers.

    Without ``referrers_file`` orders are not checked.  A relative path is
    taken from the working directory.  The file is read again when its
    modification time or size changes.
    """

    referrers_file: Path | None = None  # CSV: id,name,role,scope,valid_until
    on_unknown: Literal["hold", "accept", "reject"] = "hold"


class DoseLevel(_Model):
    """One diagnostic reference level: a value of a dose quantity, in its units."""

    value: float = Field(gt=0)
    units: str  # e.g. cGy.cm2, dGy.cm2, Gy.m2, mGy (mappings/bmd/drl.py)
    quantity: Literal["dap", "entrance_dose", "dose_rp_total"] = "dap"

    @model_validator(mode="after")
    def _known_units(self) -> "DoseLevel":
        if self.units not in DOSE_UNITS[self.quantity]:
            raise ValueError(f"units {self.units!r} unknown for {self.quantity} (known: {', '.join(DOSE_UNITS[self.quantity])})")
        return self


class DoseSettings(_Model):
    """Dose against reference levels (IR(ME)R; README "Running a DXA service")."""

    reference_levels: dict[Literal["spine", "hip", "forearm", "total_body", "vfa"], DoseLevel] = {}


class QaSettings(_Model):
    """Scanner QA from phantom scans (README "Running a DXA service"; mappings/qa.py)."""

    phantom_patient_ids: list[str] = ["PHANTOM*", "QA*"]  # globs on Patient ID
    baseline_scans: int = Field(10, ge=2, le=1000)
    tolerance_percent: float = Field(1.5, gt=0, le=50)  # from the baseline mean BMD
    overdue_days: float = Field(3, gt=0, le=365)
    block_worklist_on_fail: bool = False  # the scanner's station (calling AE of its phantom scans) gets no MWL items


class LoggingSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Destination(_Model):
    """Where the outbox delivers: one of the kinds routes/ implements."""

    type: Literal["dicom", "dicomweb", "hl7", "fhir", "folder"]
    host: str = ""
    port: int = Field(0, ge=0, le=65535)
    ae_title: str = ""  # called AE of a dicom destination
    calling_ae_title: str = ""  # our AE toward it (default: dicom.ae_title)
    url: str = ""  # dicomweb / fhir base URL
    path: str = ""  # folder
    auth: str = ""  # e.g. "Bearer ${TOKEN}"
    tls: ClientTls | None = None  # dicom, hl7, dicomweb (https) and fhir (https)
    ack_timeout: float = Field(30, gt=0)
    concurrency: int = Field(2, ge=1, le=64)
    retry_base: float = Field(2.0, gt=0)
    retry_cap: float = Field(300.0, gt=0)
    max_attempts: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _needs(self) -> "Destination":
        need = {"dicom": ("host", "port", "ae_title"), "hl7": ("host", "port"), "dicomweb": ("url",), "fhir": ("url",), "folder": ("path",)}
        missing = [k for k in need[self.type] if not getattr(self, k)]
        if missing:
            raise ValueError(f"a {self.type} destination needs {', '.join(missing)}")
        return self


ROUTE_KINDS = ("image", "sr", "pdf", "dose", "report", "mpps", "order-status", "other", "fls", "report-pdf")
#: destination types a kind can go to, where it is narrower than every type
KIND_DESTINATION_TYPES = {
    "fls": ("hl7", "fhir"),  # HL7 REF^I12 or a FHIR Task (docs/fls.md)
    "report-pdf": ("dicom", "dicomweb", "folder"),  # the signed report as Encapsulated PDF (docs/dicom-conformance.md)
}


def _one_of(types: tuple[str, ...]) -> str:
    """("hl7", "fhir") -> "an hl7 or fhir"."""
    words = ", ".join(types[:-1]) + " or " + types[-1] if len(types) > 1 else types[0]
    return ("an " if types[0][0] in "aehiou" else "a ") + words


class RouteMatch(_Model):
    """What a route takes: every given condition must hold.

    Besides the named conditions, any DICOM keyword may be given with an
    exact value or ``{regex: ...}``.  A single value may stand for a list.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    # fls: fracture liaison notifications of released reports (docs/fls.md);
    # report-pdf: the released report as DICOM Encapsulated PDF in the exam's study
    kind: list[Literal["image", "sr", "pdf", "dose", "report", "mpps", "order-status", "other", "fls", "report-pdf"]] = []
    sop_class: list[str] = []
    modality: list[str] = []
    calling_ae: list[str] = []
    manufacturer: list[str] = []

    @field_validator("kind", "sop_class", "modality", "calling_ae", "manufacturer", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Route(_Model):
    match: RouteMatch = RouteMatch()
    to: list[str] = Field(min_length=1)


class PriorSource(_Model):
    """One place to ask for a patient's earlier DXA studies (README "Priors from the PACS")."""

    destination: str  # a dicom (method c-move, c-get) or dicomweb (method dicomweb) destination
    method: Literal["c-move", "c-get", "dicomweb"]
    move_destination: str = ""  # our AE title as the PACS knows it (default: dicom.ae_title)


class PriorMatch(_Model):
    modalities: list[str] = ["OT", "SR", "BMD", "DX"]  # ModalitiesInStudy of a DXA study
    issuer_of_patient_id: bool = True  # the study's IssuerOfPatientID must match too


class BackfillSettings(_Model):
    studies_per_second: float = Field(2.0, gt=0, le=1000)  # rate limit toward the PACS
    query_days: int = Field(31, ge=1, le=3660)  # one C-FIND / QIDO per this many days


class PriorsSettings(_Model):
    sources: list[PriorSource] = []
    lookback_years: int = Field(15, ge=1, le=100)
    match: PriorMatch = PriorMatch()
    timeout: float = Field(30, gt=0, le=3600)  # seconds a report waits for its prior lookup
    backfill: BackfillSettings = BackfillSettings()


class Config(_Model):
    dicom: DicomSettings = DicomSettings()
    hl7: Hl7Settings = Hl7Settings()
    http: HttpSettings = HttpSettings()
    storage: StorageSettings = StorageSettings()
    worklist: WorklistDefaults = WorklistDefaults()
    logging: LoggingSettings = LoggingSettings()
    reports: ReportsSettings = ReportsSettings()
    entitlement: EntitlementSettings = EntitlementSettings()
    dose: DoseSettings = DoseSettings()
    security: SecuritySettings = SecuritySettings()
    audit: AuditSettings = AuditSettings()
    destinations: dict[str, Destination] = {}
    routes: list[Route] = []
    priors: PriorsSettings = PriorsSettings()
    qa: QaSettings = QaSettings()

    def dangling_references(self) -> list[tuple[tuple, str]]:
        """(key path, problem) for each reference to an unknown destination."""
        out = [
            (("routes", i, "to"), f"no destination named {name!r}")
            for i, route in enumerate(self.routes)
            for name in route.to
            if name not in self.destinations
        ]
        out += [
            (("dicom", "commitment", "wait_for_destinations"), f"no destination named {name!r}")
            for name in self.dicom.commitment.wait_for_destinations
            if name not in self.destinations
        ]
        identities = {t.name: t for t in self.security.tokens}
        if self.security.oidc is None:  # OIDC names are known only when they log in
            out += [
                (("reports", "reporters"), f"no identity named {name!r} in security.tokens")
                for name in self.reports.reporters
                if name not in identities
            ]
        out += [
            (("reports", "reporters"), f"identity {name!r} does not hold the reporter role")
            for name in self.reports.reporters
            if name in identities and "reporter" not in identities[name].roles
        ]
        out += [  # fls: HL7 REF^I12 or a FHIR Task (docs/fls.md); report-pdf: a DICOM object
            (("routes", i, "to"), f"kind {kind} needs {_one_of(types)} destination, not {self.destinations[name].type} ({name!r})")
            for i, route in enumerate(self.routes)
            for kind, types in KIND_DESTINATION_TYPES.items()
            if kind in route.match.kind
            for name in route.to
            if name in self.destinations and self.destinations[name].type not in types
        ]
        for i, src in enumerate(self.priors.sources):
            dest = self.destinations.get(src.destination)
            want = "dicomweb" if src.method == "dicomweb" else "dicom"
            if dest is None:
                out.append((("priors", "sources", i, "destination"), f"no destination named {src.destination!r}"))
            elif dest.type != want:
                out.append((("priors", "sources", i, "destination"), f"method {src.method} needs a {want} destination, not {dest.type}"))
        return out


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and line."""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path to its 1-based line in the YAML file."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = key.start_mark.line + 1
            _lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            out[path + (i,)] = value.start_mark.line + 1
            _lines(value, path + (i,), out)
    return out


def _expand(value: object, path: str) -> object:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"{path}: environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]

        return _ENV.sub(sub, value)
    return value


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a config file (the embedded default when None)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    lines = _lines(node) if node is not None else {}
    data = _expand(data, "")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc)
            line = None
            for n in range(len(loc), 0, -1):
                if loc[:n] in lines:
                    line = lines[loc[:n]]
                    break
            where = f"{path}:{line}" if line else str(path)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{where}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None
    problems = []
    for loc, problem in config.dangling_references():
        line = lines.get(loc)
        where = f"{path}:{line}" if line else str(path)
        problems.append(f"{where}: {'.'.join(str(p) for p in loc)}: {problem}")
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def open_configured_store(config: Config):
    """The store ``storage`` names: SQLite under ``storage.path``, or ``storage.database``."""
    from gateway.store import open_store

    return open_store(
        str(storage_path(config)), config.storage.database,
        replica_id=config.storage.replica_id or None, lease_seconds=config.storage.lease_seconds,
    )  # fmt: skip


def storage_path(config: Config, base: Path | None = None) -> Path:
    """``storage.path``; relative paths are taken from the working directory."""
    return config.storage.path if config.storage.path.is_absolute() else (base or Path.cwd()) / config.storage.path
