"""The clinical context of a DXA request: what the classifier and the report need
beyond the scan (README: "The clinical rules and their sources", "The clinical context").

Read from the order -- HL7 v2 OBX (coded or labelled observations), DG1
(ICD-10 diagnoses), NTE (notes, shown as the indication; only explicit
``Label: value`` lines are read as facts) -- or from a FHIR ServiceRequest
(``reasonCode``, ``supportingInfo`` pointing at contained or bundled
Observations / Conditions), and from the radiographer at the scanner
(``PUT /api/exams/{id}/context``).  Pure: no I/O, no clock.

A value that was not given stays ``None``: "not stated" is not "no".
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Iterable

# -- the model -----------------------------------------------------------------

FLAGS = ("fragility_fracture", "vertebral_fracture", "forearm_indicated", "hyperparathyroidism", "glucocorticoids", "over_table_limit")


@dataclass(frozen=True, slots=True)
class ClinicalContext:
    """Clinical facts about one request; ``None`` means not stated."""

    fragility_fracture: bool | None = None  # low-trauma fracture after 50 (NOGG)
    vertebral_fracture: bool | None = None
    forearm_indicated: bool | None = None  # the referrer asks for the forearm
    hyperparathyroidism: bool | None = None  # ISCD: measure the 33% radius
    menopausal: bool | None = None  # True postmenopausal, False premenopausal
    glucocorticoids: bool | None = None  # current or frequent oral use (NOGG)
    over_table_limit: bool | None = None  # ISCD: exceeds the table's weight limit
    height_cm: Decimal | None = None
    weight_kg: Decimal | None = None
    indication: str = ""  # the reason for the request, as written
    vfa_result: str = ""  # vertebral fracture assessment, as read (radiographer / reporter)
    fracture_history: tuple[str, ...] = ()  # fracture descriptions, as written
    risk_factors: tuple[str, ...] = ()  # other risk factors, as written
    technical_notes: tuple[str, ...] = ()  # operator: artefacts, positioning
    sources: tuple[str, ...] = ()  # where each part came from: hl7, fhir, radiographer

    @property
    def bmi(self) -> Decimal | None:
        """Body mass index kg/m2 to one decimal, when height and weight are known."""
        if not self.height_cm or not self.weight_kg:
            return None
        metres = self.height_cm / 100
        return (self.weight_kg / (metres * metres)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)

    def is_empty(self) -> bool:
        return self == ClinicalContext()

    def merged(self, later: "ClinicalContext") -> "ClinicalContext":
        """``later`` (e.g. the radiographer's) wins wherever it states something."""
        out = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(later, f.name)
            if isinstance(mine, tuple):
                out[f.name] = mine + tuple(x for x in theirs if x not in mine)
            else:
                out[f.name] = theirs if theirs not in (None, "") else mine
        return ClinicalContext(**out)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for k in ("height_cm", "weight_kg"):
            data[k] = None if data[k] is None else str(data[k])
        for k, v in data.items():
            if isinstance(v, tuple):
                data[k] = list(v)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ClinicalContext":
        """Inverse of :meth:`to_dict`; raises :class:`ContextError` naming a bad key."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise ContextError("", "the context is a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ContextError(key, "unknown key")
            if value is None:
                continue
            if key in FLAGS or key == "menopausal":
                if not isinstance(value, bool):
                    raise ContextError(key, "true, false or null")
                out[key] = value
            elif key in ("height_cm", "weight_kg"):
                number = _decimal(value)
                low, high = LIMITS["height" if key == "height_cm" else "weight"]
                if number is None or not low <= number <= high:
                    raise ContextError(key, f"a number from {low} to {high}")
                out[key] = number
            elif key in ("indication", "vfa_result"):
                if not isinstance(value, str):
                    raise ContextError(key, "text")
                out[key] = value.strip()[:500]
            else:
                if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
                    raise ContextError(key, "a list of text")
                out[key] = tuple(x.strip()[:300] for x in value if x.strip())
        return cls(**out)


def with_table_limit(ctx: ClinicalContext, limit_kg: Decimal | None) -> ClinicalContext:
    """ISCD: a patient over the table's weight limit is measured at the forearm;
    the weight says so when nobody stated it."""
    if limit_kg is None or ctx.over_table_limit is not None or ctx.weight_kg is None or ctx.weight_kg <= limit_kg:
        return ctx
    return dataclasses.replace(ctx, over_table_limit=True)


class ContextError(ValueError):
    """A context value the gateway cannot take; ``key`` names it."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"{key}: {expected}" if key else expected)
        self.key = key


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip().replace(",", "."))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


# -- the tables (data: extend here, not in code) -----------------------------------

#: OBX-3 / Observation.code identifiers -> field (LOINC body height / weight).
OBSERVATION_CODES = {
    "8302-2": "height",  # LOINC Body height
    "3137-7": "height",  # LOINC Body height Measured
    "29463-7": "weight",  # LOINC Body weight
    "3141-9": "weight",  # LOINC Body weight Measured
}

#: Labels (OBX-3 text, NTE "Label: value" lines), lower case, punctuation removed.
LABELS = {
    "height": "height",
    "body height": "height",
    "weight": "weight",
    "body weight": "weight",
    "fragility fracture": "fragility_fracture",
    "previous fragility fracture": "fragility_fracture",
    "low trauma fracture": "fragility_fracture",
    "previous fracture": "fragility_fracture",
    "vertebral fracture": "vertebral_fracture",
    "forearm": "forearm_indicated",
    "forearm requested": "forearm_indicated",
    "forearm scan": "forearm_indicated",
    "hyperparathyroidism": "hyperparathyroidism",
    "menopausal status": "menopausal",
    "menopause": "menopausal",
    "postmenopausal": "menopausal",
    "glucocorticoids": "glucocorticoids",
    "steroids": "glucocorticoids",
    "oral glucocorticoids": "glucocorticoids",
    "glucocorticoid use": "glucocorticoids",
    "indication": "indication",
    "clinical indication": "indication",
    "reason for referral": "indication",
    "fracture history": "fracture_history",
    "risk factors": "risk_factors",
    "risk factor": "risk_factors",
}

#: ICD-10 (DG1-3, reasonCode) prefixes -> fact.  WHO ICD-10 unless marked CM.
ICD10 = (
    ("M80", "fragility_fracture"),  # osteoporosis with current pathological fracture
    ("M48.5", "vertebral_fracture"),  # collapsed vertebra, not elsewhere classified
    ("E21.0", "hyperparathyroidism"),  # primary hyperparathyroidism
    ("E21.1", "hyperparathyroidism"),  # secondary hyperparathyroidism, not elsewhere classified
    ("E21.2", "hyperparathyroidism"),  # other hyperparathyroidism
    ("E21.3", "hyperparathyroidism"),  # hyperparathyroidism, unspecified
    ("N25.8", "hyperparathyroidism"),  # incl. secondary hyperparathyroidism of renal origin
    ("Z79.52", "glucocorticoids"),  # ICD-10-CM: long term use of systemic steroids
    ("N95.1", "postmenopausal"),  # menopausal and female climacteric states
    ("Z78.0", "postmenopausal"),  # ICD-10-CM: asymptomatic menopausal state
)
ICD_SYSTEMS = ("I10", "I10C", "ICD10", "ICD-10", "ICD10CM", "I10CM", "http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-cm")

YES = {"y", "yes", "true", "1", "present", "positive", "current"}
NO = {"n", "no", "false", "0", "absent", "negative", "none", "never"}
POST = {"post", "postmenopausal", "post-menopausal", "postmenopause", "yes", "y", "true"}
PRE = {"pre", "premenopausal", "pre-menopausal", "perimenopausal", "peri", "no", "n", "false"}

#: Units -> factor to cm / kg.
HEIGHT_UNITS = {"cm": Decimal(1), "m": Decimal(100), "mm": Decimal("0.1"), "in": Decimal("2.54"), "[in_i]": Decimal("2.54")}
WEIGHT_UNITS = {"kg": Decimal(1), "g": Decimal("0.001"), "lb": Decimal("0.45359237"), "[lb_av]": Decimal("0.45359237")}


def _label(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower()).strip().replace("  ", " ")


LIMITS = {"height": (Decimal(30), Decimal(300)), "weight": (Decimal(1), Decimal(500))}  # cm, kg: outside is a typo


def _quantity(kind: str, value: str, unit: str) -> Decimal | None:
    """A height in cm or weight in kg from a value and its unit; None when the
    unit is unknown or the result is outside :data:`LIMITS` (not guessed)."""
    number = _decimal(value)
    table = HEIGHT_UNITS if kind == "height" else WEIGHT_UNITS
    factor = table.get(unit.strip().lower() or ("cm" if kind == "height" else "kg"))
    if number is None or factor is None or number <= 0:
        return None
    out = (number * factor).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    low, high = LIMITS[kind]
    return out if low <= out <= high else None


class _Builder:
    """Collects facts; the first statement of a fact wins within one source."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values: dict[str, Any] = {}
        self.lists: dict[str, list[str]] = {"fracture_history": [], "risk_factors": [], "technical_notes": []}
        self.indication: list[str] = []

    def fact(self, field: str, value: str, unit: str = "", text: str = "") -> None:
        v = value.strip()
        lv = v.lower()
        if field in ("height", "weight"):
            q = _quantity(field, v, unit)
            if q is not None:
                self.values.setdefault(f"{field}_{'cm' if field == 'height' else 'kg'}", q)
        elif field == "menopausal":
            if lv in POST:
                self.values.setdefault("menopausal", True)
            elif lv in PRE:
                self.values.setdefault("menopausal", False)
        elif field == "postmenopausal":
            self.values.setdefault("menopausal", True)
        elif field in FLAGS:
            if lv in YES or not v:
                self.values.setdefault(field, True)
                if field in ("fragility_fracture", "vertebral_fracture") and text:
                    self.lists["fracture_history"].append(text)
            elif lv in NO:
                self.values.setdefault(field, False)
            else:  # a description: "wrist 2019" states a fracture
                self.values.setdefault(field, True)
                if field in ("fragility_fracture", "vertebral_fracture"):
                    self.lists["fracture_history"].append(v)
            if field == "glucocorticoids" and self.values.get(field):
                self.lists["risk_factors"].append("Glucocorticoid use" + (f": {v}" if v and lv not in YES else ""))
        elif field == "indication" and v:
            self.indication.append(v)
        elif field in self.lists and v:
            self.lists[field].extend(x.strip() for x in re.split(r"[;\n]", v) if x.strip())

    def code(self, system: str, code: str, text: str) -> bool:
        """A diagnosis code; True when it told us something."""
        if system and system.upper() not in {s.upper() for s in ICD_SYSTEMS}:
            return False
        c = code.strip().upper()
        for prefix, field in ICD10:
            if c.startswith(prefix):
                self.fact(field, "", text=text)
                return True
        return False

    def build(self) -> ClinicalContext:
        if not self.values and not self.indication and not any(self.lists.values()):
            return ClinicalContext()
        return ClinicalContext(
            **self.values,
            indication="; ".join(dict.fromkeys(self.indication))[:500],
            fracture_history=tuple(dict.fromkeys(self.lists["fracture_history"])),
            risk_factors=tuple(dict.fromkeys(self.lists["risk_factors"])),
            technical_notes=tuple(dict.fromkeys(self.lists["technical_notes"])),
            sources=(self.source,),
        )


def _labelled_line(b: _Builder, line: str) -> bool:
    """``Label: value`` -> a fact; False when the line is not one."""
    if ":" not in line:
        return False
    label, value = line.split(":", 1)
    field = LABELS.get(_label(label))
    if field is None:
        return False
    unit = ""
    if field in ("height", "weight"):
        m = re.fullmatch(r"\s*([0-9]+(?:[.,][0-9]+)?)\s*([A-Za-z\[\]_]*)\s*", value)
        if not m:
            return False
        value, unit = m.group(1), m.group(2)
    b.fact(field, value, unit, text=line.strip())
    return True


# -- HL7 v2 ------------------------------------------------------------------------


def context_from_hl7(raw: bytes, default_charset: str = "UNICODE UTF-8") -> ClinicalContext:
    """The clinical context an HL7 order carries (OBX, DG1, NTE); empty when none.

    OBX-3 is matched by LOINC code (:data:`OBSERVATION_CODES`) or by its text
    (:data:`LABELS`); OBX-5 is the value, OBX-6 the unit (HL7 v2.5 7.4.2).
    DG1-3 (CWE) is matched by ICD-10 code (:data:`ICD10`), its text kept as
    the indication.  NTE-3 lines: ``Label: value`` are facts, others the
    indication.  A message the order parser accepted never raises here.
    """
    from hl7v2.charsets import CHARSETS, decode_message
    from hl7v2.er7 import split_message

    try:
        text, charset = decode_message(raw, default_charset)
        msg = split_message(text, CHARSETS[charset][0])
    except Exception:  # the order parser reports bad messages; context is best effort
        return ClinicalContext()
    b = _Builder("hl7")
    for seg in msg.segments:
        if seg.id == "OBX":
            ident, label, unit = seg.get(3, 1), seg.get(3, 2), seg.get(6, 1)
            value = seg.get(5, 1) if seg.get(2, 1) in ("CE", "CWE", "CNE") else seg.get(5)
            if seg.get(2, 1) in ("CE", "CWE", "CNE") and not value:
                value = seg.get(5, 2)
            field = OBSERVATION_CODES.get(ident) or LABELS.get(_label(label)) or LABELS.get(_label(ident))
            if field is not None:
                b.fact(field, value, unit, text=f"{label or ident}: {value}".strip())
        elif seg.id == "DG1":
            code, name, system = seg.get(3, 1), seg.get(3, 2), seg.get(3, 3)
            desc = name or seg.get(4)
            b.code(system, code, desc)
            if desc:
                b.fact("indication", desc)
        elif seg.id == "NTE":
            for n in range(1, len(seg.reps(3)) + 1):
                for line in seg.get(3, rep=n).split("\n"):  # \.br\ unescapes to a line break
                    line = line.strip()
                    if line and not _labelled_line(b, line):
                        b.fact("indication", line)
    return b.build()


# -- FHIR R4 -----------------------------------------------------------------------


def _codings(concept: Any) -> Iterable[tuple[str, str, str]]:
    if not isinstance(concept, dict):
        return
    for c in concept.get("coding") or ():
        if isinstance(c, dict):
            yield str(c.get("system") or ""), str(c.get("code") or ""), str(c.get("display") or "")


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return concept["text"].strip()
    return next((d for _, _, d in _codings(concept) if d), "")


def _fhir_observation(b: _Builder, res: dict) -> None:
    code = res.get("code")
    field = None
    for system, value, _ in _codings(code):
        field = field or OBSERVATION_CODES.get(value)
    label = _concept_text(code)
    field = field or LABELS.get(_label(label))
    if field is None:
        return
    if isinstance(res.get("valueQuantity"), dict):
        q = res["valueQuantity"]
        b.fact(field, str(q.get("value", "")), str(q.get("code") or q.get("unit") or ""), text=label)
    elif "valueBoolean" in res:
        b.fact(field, "yes" if res["valueBoolean"] is True else "no", text=label)
    elif isinstance(res.get("valueString"), str):
        b.fact(field, res["valueString"], text=f"{label}: {res['valueString']}")
    elif isinstance(res.get("valueCodeableConcept"), dict):
        b.fact(field, _concept_text(res["valueCodeableConcept"]) or next((v for _, v, _ in _codings(res["valueCodeableConcept"])), ""), text=label)


def _fhir_condition(b: _Builder, res: dict) -> None:
    code = res.get("code")
    text = _concept_text(code)
    if not any(b.code(system, value, text) for system, value, _ in _codings(code)):
        field = LABELS.get(_label(text))
        if field in FLAGS:
            b.fact(field, "", text=text)
    if text:
        b.fact("indication", text)


def context_from_fhir(service_request: dict, resources: Iterable[dict] = ()) -> ClinicalContext:
    """The clinical context of a ServiceRequest: ``reasonCode`` (ICD-10 codes and
    text), ``supportingInfo`` references to Observations or Conditions found
    among its ``contained`` resources or in ``resources`` (the other entries of
    the Bundle it came in), and ``note`` (``Label: value`` lines).  FHIR R4."""
    b = _Builder("fhir")
    if not isinstance(service_request, dict):
        return ClinicalContext()
    for concept in service_request.get("reasonCode") or ():
        text = _concept_text(concept)
        for system, value, _ in _codings(concept):
            b.code(system, value, text)
        if text:
            b.fact("indication", text)
    index: dict[str, dict] = {}
    for res in list(service_request.get("contained") or ()):
        if isinstance(res, dict) and res.get("id"):
            index[f"#{res['id']}"] = res
    for res in resources:
        if isinstance(res, dict) and res.get("id") and res.get("resourceType"):
            index[f"{res['resourceType']}/{res['id']}"] = res
            if isinstance(res.get("_fullUrl"), str):
                index[res["_fullUrl"]] = res
    for ref in service_request.get("supportingInfo") or ():
        res = index.get(ref.get("reference", "")) if isinstance(ref, dict) else None
        if not isinstance(res, dict):
            continue
        if res.get("resourceType") == "Observation":
            _fhir_observation(b, res)
        elif res.get("resourceType") == "Condition":
            _fhir_condition(b, res)
    for note in service_request.get("note") or ():
        text = note.get("text") if isinstance(note, dict) else None
        if isinstance(text, str):
            for line in text.splitlines():
                if line.strip() and not _labelled_line(b, line.strip()):
                    b.fact("indication", line.strip())
    return b.build()


def context_from_fhir_body(body: dict) -> ClinicalContext:
    """:func:`context_from_fhir` for an intake body: a ServiceRequest, or a
    Bundle whose entries hold one (the first) and its supporting resources."""
    if not isinstance(body, dict):
        return ClinicalContext()
    if body.get("resourceType") == "ServiceRequest":
        return context_from_fhir(body)
    if body.get("resourceType") != "Bundle":
        return ClinicalContext()
    resources = []
    for entry in body.get("entry") or ():
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            res = dict(entry["resource"])
            if isinstance(entry.get("fullUrl"), str):
                res["_fullUrl"] = entry["fullUrl"]
            resources.append(res)
    requests = [r for r in resources if r.get("resourceType") == "ServiceRequest"]
    return context_from_fhir(requests[0], resources) if requests else ClinicalContext()
