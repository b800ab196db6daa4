"""Modality Worklist query matching and responses (PS3.4 Annex K, C.2.2.2).

A query is compiled once into an :class:`MwlQuery`: the store narrows the
candidates with its :class:`IndexFilter`, :meth:`MwlQuery.matches` applies
the full PS3.4 matching rules to each candidate and :meth:`MwlQuery.response`
returns the requested keys only.  Pure: datasets in, datasets out.
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
            _refuse_text_as_sequence(elem)
            if elem.value and len(elem.value) > 1:
                raise QueryError(elem.tag, f"{keyword}: a query sequence holds at most one item")
            if keyword == "ScheduledProcedureStepSequence" and elem.value:
                for sub in elem.value[0]:
                    if sub.keyword not in SPS_KEYS and not allow_unknown:
                        raise QueryError(sub.tag, f"unsupported matching key {sub.tag} {sub.keyword or 'private'} in the Scheduled Procedure Step Sequence".strip())
                    _check_value(sub)
            continue
        _check_value(elem)


def _refuse_text_as_sequence(elem: DataElement) -> None:
    """A key whose attribute is not a sequence, sent as one, is refused
    before its value is ever turned into a string (pydicom's ``str`` of a
    crafted sequence can take gigabytes; found by bench/fuzz.py)."""
    try:
        vr = dictionary_VR(elem.tag)
    except KeyError:
        return  # private or unknown: refused or skipped by the key check
    if vr != "SQ":
        raise QueryError(elem.tag, f"{elem.keyword} is a sequence, not {vr}")


def _check_value(elem: DataElement) -> None:
    if elem.VR == "SQ":
        _refuse_text_as_sequence(elem)
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


# -- the compiled query --------------------------------------------------------
#
# MwlQuery.compile() turns the identifier into one object: each key with a
# value becomes a matcher (PS3.4 C.2.2.2), which also says what an index
# can narrow on for it; each return key becomes a projection.  The index
# filter, the matcher, the response and its shape all come from these, so
# a matching rule changes in one place.

#: keys an index can narrow on -> IndexFilter field (PS3.4 Table K.6-1 levels)
_TOP_INDEX = {"PatientID": "patient_id", "AccessionNumber": "accession", "PatientName": "name_prefix", "StudyInstanceUID": "study_uids"}
_SPS_INDEX = {
    "ScheduledStationAETitle": "station_ae",
    "Modality": "modality",
    "ScheduledProcedureStepStartDate": "date",
    "ScheduledProcedureStepStatus": "statuses",
}
_NOT_MATCHED = ("SpecificCharacterSet", "TimezoneOffsetFromUTC")
_START_DATE, _START_TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"


def _norm_time(value: str, upper: bool) -> str:
    """TM as HHMMSS.ffffff; an upper bound "17" means up to 17:59:59.999999."""
    main, _, frac = value.replace(":", "").partition(".")
    if upper:
        return f"{main + '235959'[len(main):]}.{frac.ljust(6, '9')}"
    return f"{main.ljust(6, '0')}.{frac.ljust(6, '0')}"


def _values(candidate: Dataset, tag: int) -> list[str] | None:
    """The candidate's values of ``tag``, stripped; None if it lacks the attribute."""
    if tag not in candidate:
        return None
    return [v.strip() for v in _str_values(candidate[tag].value)]


class _Key:
    """One matching key with a value (PS3.4 C.2.2.2), compiled."""

    __slots__ = ("tag", "keyword", "query")

    def __init__(self, elem: DataElement, query: str) -> None:
        self.tag = elem.tag
        self.keyword = elem.keyword
        self.query = query

    def matches(self, candidate: Dataset) -> bool:
        values = _values(candidate, self.tag)
        if values is None:
            return False  # a value cannot match an absent attribute
        return self.match_values(values)

    def match_values(self, values: list[str]) -> bool:
        raise NotImplementedError

    def narrow(self, field: str) -> dict:
        """What an index may narrow on for this key, as IndexFilter fields."""
        return {}


class _Single(_Key):
    """C.2.2.2.1 single value matching (PN case-insensitive by option)."""

    __slots__ = ("ignore_case", "folded")

    def __init__(self, elem: DataElement, query: str, ignore_case: bool) -> None:
        super().__init__(elem, query)
        self.ignore_case = ignore_case
        self.folded = query.upper()

    def match_values(self, values: list[str]) -> bool:
        if self.ignore_case:
            return any(v.upper() == self.folded for v in values)
        return self.query in values

    def narrow(self, field: str) -> dict:
        if field == "name_prefix":
            return {"name_prefix": self.folded}
        if "\\" in self.query:
            return {}
        if field == "study_uids":
            return {"study_uids": (self.query,)}
        if field == "date":
            return {"date_from": self.query, "date_to": self.query}
        if field == "statuses":
            return {"statuses": tuple(s for s in ACTIVE_STATUSES if s == self.query)}
        return {field: self.query}


class _Wildcard(_Key):
    """C.2.2.2.4: * any sequence (incl. none), ? any single character."""

    __slots__ = ("rx",)

    def __init__(self, elem: DataElement, query: str, ignore_case: bool) -> None:
        super().__init__(elem, query)
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in query)
        self.rx = re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)

    def match_values(self, values: list[str]) -> bool:
        return any(self.rx.match(v) for v in values)

    def narrow(self, field: str) -> dict:
        if field != "name_prefix":
            return {}
        prefix = re.split(r"[*?]", self.query, maxsplit=1)[0]
        return {"name_prefix": prefix.upper()} if prefix else {}


class _UidList(_Key):
    """C.2.2.2.2: a list of UIDs, any of which matches."""

    __slots__ = ("uids", "wanted")

    def __init__(self, elem: DataElement, query: str) -> None:
        super().__init__(elem, query)
        self.uids = tuple(v for v in (u.strip() for u in query.split("\\")) if v)
        self.wanted = frozenset(v.strip() for v in query.split("\\"))

    def match_values(self, values: list[str]) -> bool:
        return any(v in self.wanted for v in values)

    def narrow(self, field: str) -> dict:
        if field == "study_uids":
            return {"study_uids": self.uids}
        return {field: self.uids[0]} if len(self.uids) == 1 and field not in ("date", "statuses", "name_prefix") else {}


def _range(value: str) -> tuple[str | None, str | None] | None:
    """``a-b``, ``a-``, ``-b`` -> bounds; a single value -> None."""
    if "-" not in value:
        return None
    lo, hi = value.split("-", 1)
    return (lo or None, hi or None)


class _DateRange(_Key):
    """C.2.2.2.5 range matching of DA: a single date, ``a-b``, ``a-`` or ``-b``."""

    __slots__ = ("lo", "hi")

    def __init__(self, elem: DataElement, query: str) -> None:
        super().__init__(elem, query)
        self.lo, self.hi = _range(query) or (query, query)

    def match_values(self, values: list[str]) -> bool:
        return any(v and (self.lo is None or v >= self.lo) and (self.hi is None or v <= self.hi) for v in values)

    def narrow(self, field: str) -> dict:
        return {"date_from": self.lo, "date_to": self.hi} if field == "date" else {}


class _TimeRange(_Key):
    """C.2.2.2.5 range matching of TM; a single time matches all of its precision."""

    __slots__ = ("lo", "hi")

    def __init__(self, elem: DataElement, query: str) -> None:
        super().__init__(elem, query)
        bounds = _range(query)
        if bounds is None:
            self.lo, self.hi = _norm_time(query, False), _norm_time(query, True)
        else:
            self.lo = _norm_time(bounds[0], False) if bounds[0] is not None else None
            self.hi = _norm_time(bounds[1], True) if bounds[1] is not None else None

    def match_values(self, values: list[str]) -> bool:
        for v in values:
            if not v:
                continue
            t = _norm_time(v, upper=False)
            if (self.lo is None or t >= self.lo) and (self.hi is None or t <= self.hi):
                return True
        return False


class _DateTimeRange(_Key):
    """C.2.2.2.5 range matching of DT (a DT may carry a -ZZZZ offset: split with care)."""

    __slots__ = ("prefix", "lo", "hi")

    def __init__(self, elem: DataElement, query: str) -> None:
        super().__init__(elem, query)
        bounds = _dt_bounds(query)
        self.prefix = query[:14] if bounds is None else None
        lo, hi = bounds if bounds is not None else (None, None)
        self.lo = lo[:14].ljust(14, "0") if lo else None
        self.hi = hi[:14].ljust(14, "9") if hi else None

    def match_values(self, values: list[str]) -> bool:
        for v in values:
            if not v:
                continue
            t = v[:14].ljust(14, "0")
            if self.prefix is not None:
                if t.startswith(self.prefix):
                    return True
            elif (self.lo is None or t >= self.lo) and (self.hi is None or t <= self.hi):
                return True
        return False


class _Sequence(_Key):
    """C.2.2.2.6 sequence matching: some item of the candidate's sequence matches every key of the query's item."""

    __slots__ = ("item",)

    def __init__(self, elem: DataElement, item: "_Level") -> None:
        super().__init__(elem, "")
        self.item = item

    def matches(self, candidate: Dataset) -> bool:
        if self.tag not in candidate:
            return False
        return any(self.item.matches(it) for it in (candidate[self.tag].value or []))


class _CombinedDateTime:
    """C.2.2.2.5.1: the Scheduled Procedure Step Start Date and Time ranges as one datetime range."""

    __slots__ = ("date_from", "date_to", "lo", "hi")

    def __init__(self, date: str, time: str) -> None:
        dr, tr = _range(date) or (date, date), _range(time) or (time, time)
        self.date_from, self.date_to = dr
        self.lo = (dr[0] + _norm_time(tr[0] or "000000", False)) if dr[0] else None
        self.hi = (dr[1] + _norm_time(tr[1] or "235959.999999", True)) if dr[1] else None

    def matches(self, candidate: Dataset) -> bool:
        d = str(candidate.get(_START_DATE, "") or "")
        t = str(candidate.get(_START_TIME, "") or "")
        if not d:
            return False
        value = d + _norm_time(t or "000000", False)
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)


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


def _key(elem: DataElement, opts: MatchOptions) -> _Key | None:
    """The compiled matcher of one query element; None for a universal key (C.2.2.2.3)."""
    if elem.VR == "SQ":
        if is_universal(elem):
            return None
        return _Sequence(elem, _Level.compile(elem.value[0], opts))
    query = _query_value(elem)
    if query == "":
        return None
    vr = elem.VR
    if vr == "DA":
        return _DateRange(elem, query)
    if vr == "TM":
        return _TimeRange(elem, query)
    if vr == "DT":
        return _DateTimeRange(elem, query)
    if vr == "UI":
        return _UidList(elem, query)
    ignore_case = vr == "PN" and opts.case_insensitive_names
    if vr in WILDCARD_VRS and ("*" in query or "?" in query):
        return _Wildcard(elem, query, ignore_case)
    return _Single(elem, query, ignore_case)


class _Level:
    """The matching keys of one dataset level (the identifier, or a sequence's item)."""

    __slots__ = ("keys", "combined")

    def __init__(self, keys: tuple[_Key, ...], combined: _CombinedDateTime | None) -> None:
        self.keys = keys
        self.combined = combined

    @classmethod
    def compile(cls, query: Dataset, opts: MatchOptions) -> "_Level":
        combined = None
        if opts.combined_datetime and _START_DATE in query and _START_TIME in query:
            date, time = _query_value(query[_START_DATE]), _query_value(query[_START_TIME])
            if date and time:
                combined = _CombinedDateTime(date, time)
        keys = []
        for elem in query:
            if elem.keyword in _NOT_MATCHED:
                continue
            if combined is not None and elem.keyword in (_START_DATE, _START_TIME):
                continue
            key = _key(elem, opts)
            if key is not None:
                keys.append(key)
        return cls(tuple(keys), combined)

    def matches(self, candidate: Dataset) -> bool:
        for key in self.keys:
            if not key.matches(candidate):
                return False
        return self.combined is None or self.combined.matches(candidate)

    def narrow(self, index: dict[str, str]) -> dict:
        out: dict = {}
        for key in self.keys:
            field = index.get(key.keyword)
            if field is not None:
                out.update(key.narrow(field))
        if self.combined is not None and "ScheduledProcedureStepStartDate" in index:
            out.update(date_from=self.combined.date_from, date_to=self.combined.date_to)
        return out

    def key(self, keyword: str) -> _Key | None:
        return next((k for k in self.keys if k.keyword == keyword), None)


# -- responses ---------------------------------------------------------------


def _is_return_key(elem: DataElement) -> bool:
    """A query element that asks for a value back (not the character set, not a command element)."""
    return elem.keyword != "SpecificCharacterSet" and elem.tag.group != 0x0000


class _Return:
    """One return key: the candidate's value, zero length where it has none (PS3.4 C.2.2.1.2)."""

    __slots__ = ("tag", "vr", "item")

    def __init__(self, elem: DataElement) -> None:
        self.tag = elem.tag
        self.vr = elem.VR
        # A sequence with keys in its item returns those of each candidate
        # item; an empty one (or an empty item) returns the items whole.
        self.item: tuple[_Return, ...] | None = None
        if elem.VR == "SQ" and elem.value and len(elem.value[0]) > 0:
            self.item = _returns(elem.value[0])

    def shape(self) -> tuple:
        if self.vr == "SQ":
            return (int(self.tag), "SQ", tuple(r.shape() for r in self.item) if self.item is not None else None)
        return (int(self.tag), self.vr)

    def element(self, candidate: Dataset) -> DataElement:
        if self.tag not in candidate:
            if self.vr == "SQ":
                return DataElement(self.tag, "SQ", Sequence([]))
            return DataElement(self.tag, self.vr, None)
        cand = candidate[self.tag]
        if self.vr == "SQ":
            items = cand.value or []
            if self.item is not None:
                return DataElement(self.tag, "SQ", Sequence([_project(self.item, it) for it in items]))
            return DataElement(self.tag, "SQ", Sequence([_copy(it) for it in items]))
        return DataElement(self.tag, cand.VR, cand.value)


def _returns(query: Dataset) -> tuple[_Return, ...]:
    return tuple(_Return(elem) for elem in query if _is_return_key(elem))


def _project(returns: tuple[_Return, ...], candidate: Dataset) -> Dataset:
    out = Dataset()
    for r in returns:
        out.add(r.element(candidate))
    return out


def _copy(ds: Dataset) -> Dataset:
    out = Dataset()
    for elem in ds:
        out.add(DataElement(elem.tag, elem.VR, elem.value))
    return out


def _query_charset(query: Dataset) -> str:
    """The first value of the query's Specific Character Set ("" when absent)."""
    values = _str_values(query.get("SpecificCharacterSet")) if "SpecificCharacterSet" in query else []
    return values[0] if values else ""


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


class MwlQuery:
    """A Modality Worklist C-FIND identifier, compiled once (PS3.4 K.6.1.2, C.2.2.2).

    ``index_filter`` is what the store narrows the candidates on (a
    superset of the matches), :meth:`matches` applies every matching rule
    to a candidate dataset, :meth:`response` builds the identifier returned
    for a match (the requested keys only), and ``shape`` is what that
    response depends on in the query, as a hashable key: two queries of the
    same shape get the same response for one candidate.
    """

    __slots__ = ("identifier", "options", "fallback_charset", "index_filter", "shape", "_level", "_returns", "_charset")

    def __init__(self, identifier: Dataset, options: MatchOptions, fallback_charset: str) -> None:
        self.identifier = identifier
        self.options = options
        self.fallback_charset = fallback_charset
        self._level = _Level.compile(identifier, options)
        self._returns = _returns(identifier)
        self._charset = _query_charset(identifier)
        self.shape: tuple = (tuple(r.shape() for r in self._returns), self._charset, fallback_charset)
        self.index_filter = self._index_filter()

    @classmethod
    def compile(
        cls,
        identifier: Dataset,
        options: MatchOptions = MatchOptions(),
        *,
        fallback_charset: str = "ISO_IR 192",
        allow_unknown: bool = False,
    ) -> "MwlQuery":
        """Check the identifier (raises :class:`QueryError`) and compile it."""
        check_query(identifier, allow_unknown=allow_unknown)
        return cls(identifier, options, fallback_charset)

    def _index_filter(self) -> IndexFilter:
        fields = self._level.narrow(_TOP_INDEX)
        sps = self._level.key("ScheduledProcedureStepSequence")
        if isinstance(sps, _Sequence):
            fields.update(sps.item.narrow(_SPS_INDEX))
        return IndexFilter(**fields)

    @property
    def return_keys(self) -> tuple[int, ...]:
        """The tags the response holds, in order (PS3.4 C.2.2.1.2: every key of the identifier but the character set)."""
        return tuple(int(r.tag) for r in self._returns)

    def matches(self, candidate: Dataset) -> bool:
        """True if ``candidate`` matches every key of the query (PS3.4 C.2.2.2)."""
        return self._level.matches(candidate)

    def response(self, candidate: Dataset) -> Dataset:
        """The identifier returned for one match: requested keys only, in a character set that fits."""
        out = _project(self._returns, candidate)
        charset = choose_charset(self._charset, out, self.fallback_charset)
        if charset:
            out.SpecificCharacterSet = charset
        return out


def describe_tag(tag: int) -> str:
    return f"{Tag(tag)} {keyword_for_tag(tag) or 'unknown'}"


def query_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
