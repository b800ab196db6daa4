"""Modality Worklist query matching and responses (PS3.4 Annex K, C.2.2.2).

The store narrows the candidates with an :class:`IndexFilter` taken from the
query; :func:`matches` then applies the full PS3.4 matching rules to each
candidate and :func:`build_response` returns the requested keys only.
Pure: datasets in, datasets out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from mappings.uids import uid_problem
from mappings.worklist import ACTIVE_STATUSES, MWL_ATTRIBUTES, SPS_ATTRIBUTES

# PS3.4 Table K.6-1 return keys (the worklist IOD's attributes, kept from
# whatever order arrives: mappings.worklist).  A key outside these is
# "unsupported".
TOP_LEVEL_KEYS = MWL_ATTRIBUTES
SPS_KEYS = SPS_ATTRIBUTES
# VRs on which * and ? are wildcards (PS3.4 C.2.2.2.4).
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")


class QueryError(ValueError):
    """A query the SCP refuses: 0xA900, Identifier does not match SOP Class.

    ``tag`` is the offending element (PS3.7 C.4.1.1.3, Offending Element).
    """

    def __init__(self, tag: int, reason: str) -> None:
        super().__init__(reason)
        self.tag = tag
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """Matching choices: names case-insensitive, combined date-time ranges."""

    case_insensitive_names: bool = True
    combined_datetime: bool = False


@dataclass(frozen=True, slots=True)
class IndexFilter:
    """What the store can narrow on; a superset of the true matches."""

    station_ae: str | None = None
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    patient_id: str | None = None
    accession: str | None = None
    name_prefix: str | None = None  # upper-cased, before the first wildcard
    study_uids: tuple[str, ...] = ()
    statuses: tuple[str, ...] = field(default=ACTIVE_STATUSES)


def _str_values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def _query_value(elem: DataElement) -> str:
    """A query element's value as one string ("" means universal)."""
    if elem.value is None:
        return ""
    return "\\".join(_str_values(elem.value)).strip()


def check_query(query: Dataset, *, allow_unknown: bool = False) -> None:
    """Refuse unsupported keys and malformed values (raises QueryError)."""
    for elem in query:
        if elem.tag.group == 0x0000 or elem.tag.group % 2 == 1 and allow_unknown:
            continue
        keyword = elem.keyword
        if keyword not in TOP_LEVEL_KEYS and not allow_unknown:
            raise QueryError(elem.tag, f"unsupported matching key {elem.tag} {keyword or 'private'}".strip())
        if elem.VR == "SQ":
            if elem.value and len(elem.value) > 1:
                raise QueryError(elem.tag, f"{keyword}: a query sequence holds at most one item")
            if keyword == "ScheduledProcedureStepSequence" and elem.value:
                for sub in elem.value[0]:
                    if sub.keyword not in SPS_KEYS and not allow_unknown:
                        raise QueryError(sub.tag, f"unsupported matching key {sub.tag} {sub.keyword or 'private'} in the Scheduled Procedure Step Sequence".strip())
                    _check_value(sub)
            continue
        _check_value(elem)


def _check_value(elem: DataElement) -> None:
    if elem.VR == "SQ":
        return
    value = _query_value(elem)
    if elem.VR == "UI" and value:
        # PS3.4 C.2.2.2.2: a list of UIDs; each must be a safe UID (mappings/uids.py)
        for uid in value.split("\\"):
            problem = uid_problem(uid.strip())
            if problem:
                raise QueryError(elem.tag, f"{elem.keyword}: not a valid UID ({problem})")
        return
    if not value or elem.VR not in RANGE_VRS:
        return
    pattern = {"DA": _DA, "TM": _TM, "DT": _DT}[elem.VR]
    if elem.VR == "DT":
        bounds = _dt_bounds(value)
        parts = [value] if bounds is None else [b or "" for b in bounds]
    else:
        parts = value.split("-")
    if len(parts) > 2 or not any(parts):
        raise QueryError(elem.tag, f"{elem.keyword}: malformed {elem.VR} range")
    for part in parts:
        if part and not pattern.match(part):
            raise QueryError(elem.tag, f"{elem.keyword}: malformed {elem.VR} value")


_DT_RANGE = re.compile(r"^(\d*(?:[+-]\d{4})?)-(\d*(?:[+-]\d{4})?)$")


def _dt_bounds(value: str) -> tuple[str | None, str | None] | None:
    """A DT range (a DT may carry a -ZZZZ offset, so split with care)."""
    m = _DT_RANGE.match(value)
    return (m.group(1) or None, m.group(2) or None) if m else None


def _range(value: str) -> tuple[str | None, str | None] | None:
    """``a-b``, ``a-``, ``-b`` -> bounds; a single value -> None."""
    if "-" not in value:
        return None
    lo, hi = value.split("-", 1)
    return (lo or None, hi or None)


def index_filter(query: Dataset) -> IndexFilter:
    """The part of the query that an index can answer (exact or prefix)."""
    sps = Dataset()
    seq = query.get("ScheduledProcedureStepSequence")
    if seq:
        sps = seq[0]

    def exact(ds: Dataset, keyword: str) -> str | None:
        elem = ds.data_element(keyword) if keyword in ds else None
        if elem is None:
            return None
        value = _query_value(elem)
        if not value or "*" in value or "?" in value or "\\" in value:
            return None
        return value

    date_from = date_to = None
    date = exact(sps, "ScheduledProcedureStepStartDate")
    if date:
        bounds = _range(date)
        date_from, date_to = bounds if bounds else (date, date)
    name_prefix = None
    if "PatientName" in query:
        name = _query_value(query["PatientName"])
        prefix = re.split(r"[*?]", name, maxsplit=1)[0]
        if prefix:
            name_prefix = prefix.upper()
    uids: tuple[str, ...] = ()
    if "StudyInstanceUID" in query:
        uids = tuple(v for v in _str_values(query.StudyInstanceUID) if v)
    status = exact(sps, "ScheduledProcedureStepStatus")
    statuses = tuple(s for s in ACTIVE_STATUSES if not status or s == status)
    return IndexFilter(
        station_ae=exact(sps, "ScheduledStationAETitle"),
        modality=exact(sps, "Modality"),
        date_from=date_from,
        date_to=date_to,
        patient_id=exact(query, "PatientID"),
        accession=exact(query, "AccessionNumber"),
        name_prefix=name_prefix,
        study_uids=uids,
        statuses=statuses,
    )


# -- matching ----------------------------------------------------------------


def _wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern:
    # PS3.4 C.2.2.2.4: * any sequence (incl. none), ? any single character.
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _norm_time(value: str, upper: bool) -> str:
    """TM as HHMMSS.ffffff; an upper bound "17" means up to 17:59:59.999999."""
    main, _, frac = value.replace(":", "").partition(".")
    if upper:
        return f"{main + '235959'[len(main):]}.{frac.ljust(6, '9')}"
    return f"{main.ljust(6, '0')}.{frac.ljust(6, '0')}"


def _match_range(vr: str, query: str, value: str) -> bool:
    bounds = _dt_bounds(query) if vr == "DT" else _range(query)
    if vr == "TM":
        v = _norm_time(value, upper=False)
        if bounds is None:
            return _norm_time(query, False) <= v <= _norm_time(query, True)
        lo, hi = bounds
        return (lo is None or v >= _norm_time(lo, False)) and (hi is None or v <= _norm_time(hi, True))
    if vr == "DT":
        v = value[:14].ljust(14, "0")
        if bounds is None:
            return v.startswith(query[:14]) if query else True
        lo, hi = bounds
        return (not lo or v >= lo[:14].ljust(14, "0")) and (not hi or v <= hi[:14].ljust(14, "9"))
    # DA
    if bounds is None:
        return value == query
    lo, hi = bounds
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def is_universal(elem: DataElement) -> bool:
    """A key that matches everything: zero length, or a sequence of such keys.

    PS3.4 C.2.2.2.3 (universal matching) and C.2.2.2.6: a sequence key
    whose item holds only universal keys (at any depth) matches every
    candidate -- one without the sequence, with it empty, or with items.
    """
    if elem.VR != "SQ":
        return _query_value(elem) == ""
    if not elem.value:
        return True
    return all(is_universal(sub) for sub in elem.value[0] if _is_return_key(sub))


def _match_element(elem: DataElement, candidate: Dataset, opts: MatchOptions) -> bool:
    if elem.VR == "SQ":
        if is_universal(elem):
            return True
        if elem.tag not in candidate:
            return False
        # PS3.4 C.2.2.2.6 sequence matching: some item of the candidate's
        # sequence must match every key of the query item.
        return any(_match_dataset(elem.value[0], item, opts) for item in (candidate[elem.tag].value or []))
    query = _query_value(elem)
    if query == "":
        return True  # C.2.2.2.3 universal matching
    if elem.tag not in candidate:
        return False  # a value cannot match an absent attribute
    cand = candidate[elem.tag]
    values = [v.strip() for v in _str_values(cand.value)]
    vr = elem.VR
    if vr in RANGE_VRS:
        return any(v and _match_range(vr, query, v) for v in values)
    if vr == "UI":
        wanted = {v.strip() for v in query.split("\\")}  # C.2.2.2.2 list of UID
        return any(v in wanted for v in values)
    ignore_case = vr == "PN" and opts.case_insensitive_names
    if vr in WILDCARD_VRS and ("*" in query or "?" in query):
        rx = _wildcard_regex(query, ignore_case)
        return any(rx.match(v) for v in values)
    if ignore_case:
        return any(v.upper() == query.upper() for v in values)
    return any(v == query for v in values)


def _match_dataset(query: Dataset, candidate: Dataset, opts: MatchOptions) -> bool:
    combined = (
        opts.combined_datetime
        and "ScheduledProcedureStepStartDate" in query
        and "ScheduledProcedureStepStartTime" in query
        and _query_value(query["ScheduledProcedureStepStartDate"])
        and _query_value(query["ScheduledProcedureStepStartTime"])
    )
    for elem in query:
        if elem.keyword in ("SpecificCharacterSet", "TimezoneOffsetFromUTC"):
            continue
        if combined and elem.keyword in ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"):
            continue
        if not _match_element(elem, candidate, opts):
            return False
    if combined:
        return _match_combined(query, candidate)
    return True


def _match_combined(query: Dataset, candidate: Dataset) -> bool:
    """PS3.4 C.2.2.2.5.1: a date range and a time range as one datetime range."""
    qd = _query_value(query["ScheduledProcedureStepStartDate"])
    qt = _query_value(query["ScheduledProcedureStepStartTime"])
    d = str(candidate.get("ScheduledProcedureStepStartDate", "") or "")
    t = str(candidate.get("ScheduledProcedureStepStartTime", "") or "")
    if not d:
        return False
    value = d + _norm_time(t or "000000", False)
    dr, tr = _range(qd) or (qd, qd), _range(qt) or (qt, qt)
    lo = (dr[0] + _norm_time(tr[0] or "000000", False)) if dr[0] else None
    hi = (dr[1] + _norm_time(tr[1] or "235959.999999", True)) if dr[1] else None
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def matches(query: Dataset, candidate: Dataset, opts: MatchOptions = MatchOptions()) -> bool:
    """True if ``candidate`` matches every key of ``query`` (PS3.4 C.2.2.2)."""
    return _match_dataset(query, candidate, opts)


# -- responses ---------------------------------------------------------------


def _empty_like(elem: DataElement) -> DataElement:
    if elem.VR == "SQ":
        return DataElement(elem.tag, "SQ", Sequence([]))
    return DataElement(elem.tag, elem.VR, None)


def _is_return_key(elem: DataElement) -> bool:
    """A query element that asks for a value back (not the character set, not a command element)."""
    return elem.keyword != "SpecificCharacterSet" and elem.tag.group != 0x0000


def _query_charset(query: Dataset) -> str:
    """The first value of the query's Specific Character Set ("" when absent)."""
    values = _str_values(query.get("SpecificCharacterSet")) if "SpecificCharacterSet" in query else []
    return values[0] if values else ""


def _project(query: Dataset, candidate: Dataset) -> Dataset:
    """The requested keys of ``candidate``; zero length where it has none."""
    out = Dataset()
    for elem in query:
        if not _is_return_key(elem):
            continue
        if elem.tag not in candidate:
            out.add(_empty_like(elem))
            continue
        cand = candidate[elem.tag]
        if elem.VR == "SQ":
            items = cand.value or []
            if elem.value and len(elem.value[0]) > 0:
                out.add(DataElement(elem.tag, "SQ", Sequence([_project(elem.value[0], it) for it in items])))
            else:
                out.add(DataElement(elem.tag, "SQ", Sequence([_copy(it) for it in items])))
            continue
        out.add(DataElement(elem.tag, cand.VR, cand.value))
    return out


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    for elem in ds:
        out.add(DataElement(elem.tag, elem.VR, elem.value))
    return out


def _python_codec(charset: str) -> str:
    return {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}.get(charset, "utf-8")


def _text_values(ds: Dataset):
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _text_values(item)
        elif elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") and elem.value:
            yield from _str_values(elem.value)


def choose_charset(query_charset: str, response: Dataset, fallback: str) -> str:
    """Answer in the query's character set when the values fit in it.

    PS3.4 K.4.1.2.2 leaves the response's character set to the SCP; the
    gateway keeps the query's (e.g. ISO_IR 100 for a Latin-1-only scanner)
    and only falls back (default ISO_IR 192) when a value cannot be written
    in it.  Plain ASCII needs no Specific Character Set.
    """
    texts = list(_text_values(response))
    if all(t.isascii() for t in texts):
        return query_charset if query_charset else ""
    for charset in (query_charset, fallback):
        if charset in ("", "ISO_IR 6"):
            continue
        try:
            for t in texts:
                t.encode(_python_codec(charset))
            return charset
        except UnicodeEncodeError:
            continue
    return "ISO_IR 192"


def build_response(query: Dataset, candidate: Dataset, *, fallback_charset: str = "ISO_IR 192") -> Dataset:
    """The identifier returned for one match: requested keys only."""
    out = _project(query, candidate)
    charset = choose_charset(_query_charset(query), out, fallback_charset)
    if charset:
        out.SpecificCharacterSet = charset
    return out


def response_shape(query: Dataset, fallback_charset: str = "ISO_IR 192") -> tuple:
    """What :func:`build_response` depends on in ``query``, as a hashable key.

    The response holds the requested keys (their tags, the VR of an empty
    one, the keys asked for inside a sequence item) in the query's first
    character set or the fallback; the matching values play no part.  Two
    queries with the same shape get the same response for one candidate.
    """

    def shape(ds: Dataset) -> tuple:
        out = []
        for elem in ds:
            if not _is_return_key(elem):
                continue
            if elem.VR == "SQ":
                item = elem.value[0] if elem.value and len(elem.value[0]) > 0 else None
                out.append((int(elem.tag), "SQ", shape(item) if item is not None else None))
            else:
                out.append((int(elem.tag), elem.VR))
        return tuple(out)

    return (shape(query), _query_charset(query), fallback_charset)


def describe_tag(tag: int) -> str:
    return f"{Tag(tag)} {keyword_for_tag(tag) or 'unknown'}"


def query_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
