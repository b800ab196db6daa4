"""Diagnostic category of one exam (docs/domain.md section 4: WHO, ISCD official positions).

* Age: without an age there is no category, only a technical flag.  Under
  20: Z-scores only, on the lumbar spine and total body less head, never
  the hip (ISCD paediatric positions).
* Score: T for postmenopausal women and men aged 50 and over; Z for
  premenopausal women, men under 50.  A woman under 50 whose menopausal
  status is unknown: say so and use Z (ISCD).  A site's default menopausal
  status applies only to women under 50 (:func:`menopausal_status`).
* Scores are rounded to one decimal place, then classified (ISCD).
* Sites: the lowest of lumbar spine (L1-L4 or the valid vertebrae), femoral
  neck and total hip; the 33% radius when spine or hip cannot be used, in
  hyperparathyroidism, when the forearm is requested, or over the table
  limit.  Never Ward's area or the trochanter alone.
* Vertebrae: exclude those with artefact or more than 1.0 T-score from their
  neighbours; at least two must be evaluable, never one.  A spine the
  scanner gave only as a total (L2-L4, L1-L3, a "Total" whose vertebrae it
  did not state) is used as reported -- the exclusions could not be checked
  -- named in the notes and flagged (ISCD: L1-L4, else three, else two
  evaluable vertebrae).
* A site measured more than once with different results (``repeat`` 1, 2...:
  a re-scan, two hip tables without a side): every measurement is shown,
  the lowest valid one decides, and a flag says which (the lowest-site rule).
* WHO (T): >= -1.0 normal; between -1.0 and -2.5 osteopenia; <= -2.5
  osteoporosis; with a fragility fracture established osteoporosis.
  Z <= -2.0: "below the expected range for age".
* Reference: T-scores from a White female, non-race-adjusted young-adult
  reference for men and women of all races (ISCD, NOGG); anything else is
  flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from mappings.bmd import models as m
from mappings.bmd.models import BmdExam, RegionResult
from mappings.clinical_context import ClinicalContext

NORMAL = "normal"
OSTEOPENIA = "osteopenia"
OSTEOPOROSIS = "osteoporosis"
ESTABLISHED = "established_osteoporosis"
WITHIN_RANGE = "within_expected_range"
BELOW_RANGE = "below_expected_range"
INDETERMINATE = "indeterminate"
NO_AGE = "no_category_age_unknown"

CATEGORY_TEXT = {
    NORMAL: "Normal",
    OSTEOPENIA: "Osteopenia (low bone mass)",
    OSTEOPOROSIS: "Osteoporosis",
    ESTABLISHED: "Established (severe) osteoporosis",
    WITHIN_RANGE: "Within the expected range for age",
    BELOW_RANGE: "Below the expected range for age",
    INDETERMINATE: "No diagnostic category: no usable result",
    NO_AGE: "No diagnostic category: the patient's age is unknown",
}

T_NORMAL = Decimal("-1.0")
T_OSTEOPOROSIS = Decimal("-2.5")
Z_LOW = Decimal("-2.0")
VERTEBRA_DISCORDANCE = Decimal("1.0")
ADULT_AGE = 50  # ISCD: T-scores for men >= 50 and postmenopausal women
PAEDIATRIC_AGE = 20  # ISCD paediatric positions: under 20
ONE_DECIMAL = Decimal("0.1")
ROUNDING_NOTE = "T- and Z-scores are rounded to one decimal place before classification (ISCD)."


@dataclass(frozen=True, slots=True)
class Classification:
    """Which score was used, on which sites, and what it means."""

    score_type: str  # "T", "Z", or "" when no score could be chosen (age unknown)
    category: str  # one of the constants above
    category_text: str
    lowest: RegionResult | None  # the site that decided
    lowest_score: Decimal | None  # rounded to one decimal
    sites_used: tuple[RegionResult, ...]
    excluded_vertebrae: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # why this score, what was left out
    flags: tuple[str, ...] = ()  # technical problems for the reporter
    prompts: tuple[str, ...] = ()  # further investigation
    spine: RegionResult | None = None  # the lumbar total the diagnosis uses (or would)

    def used(self, region: RegionResult) -> bool:
        return any(r is region or r == region for r in self.sites_used)


def round_score(score: Decimal) -> Decimal:
    """One decimal place, halves away from zero (-2.45 -> -2.5): ISCD reports to one decimal."""
    return score.quantize(ONE_DECIMAL, rounding=ROUND_HALF_UP)


def menopausal_status(age: int | None, sex: str, stated: bool | None, site_default: bool | None) -> bool | None:
    """The menopausal status to classify with: what was stated, else the
    site's default -- which only concerns women under 50 (ISCD: women of 50
    and over without a statement are taken as postmenopausal)."""
    if sex != "F":
        return None
    if stated is not None:
        return stated
    if age is not None and PAEDIATRIC_AGE <= age < ADULT_AGE:
        return site_default
    return None


def choose_score(age: int | None, sex: str, menopausal: bool | None) -> tuple[str, str]:
    """("T" or "Z", reason) per ISCD official positions; ("", reason) without an age."""
    if age is None:
        return "", "Age unknown: no score can be chosen."
    if age < PAEDIATRIC_AGE:
        return "Z", "Under 20: Z-scores only, lumbar spine and total body less head (ISCD paediatric positions)."
    if sex == "F":
        if menopausal is True:
            return "T", "Postmenopausal woman: T-score used."
        if menopausal is False:
            return "Z", "Premenopausal woman: Z-score used."
        if age < ADULT_AGE:
            return "Z", "Woman under 50 with menopausal status unknown: Z-score used."
        return "T", "Woman aged 50 or over, menopausal status not stated: taken as postmenopausal, T-score used."
    if sex == "M":
        if age >= ADULT_AGE:
            return "T", "Man aged 50 or over: T-score used."
        return "Z", "Man under 50: Z-score used."
    if age >= ADULT_AGE:
        return "T", "Sex not stated, age 50 or over: T-score used."
    return "Z", "Sex not stated, age under 50: Z-score used."


def who_category(t: Decimal, fragility_fracture: bool = False) -> str:
    """WHO category of a T-score, rounded to one decimal first (-2.46 is -2.5)."""
    t = round_score(t)
    if t >= T_NORMAL:
        return NORMAL
    if t > T_OSTEOPOROSIS:
        return OSTEOPENIA
    return ESTABLISHED if fragility_fracture else OSTEOPOROSIS


def z_category(z: Decimal) -> str:
    """ISCD: Z <= -2.0 (after rounding to one decimal) is "below the expected range for age"."""
    return BELOW_RANGE if round_score(z) <= Z_LOW else WITHIN_RANGE


NON_WHITE = {"black", "african", "asian", "hispanic", "mexican", "latino", "chinese", "japanese", "korean", "indian", "arab", "aboriginal"}


def reference_flags(exam: BmdExam) -> list[str]:
    """ISCD and NOGG: T-scores come from a White female, non-race-adjusted
    young-adult reference for men and women of all races.  A reference that
    says otherwise is flagged; one that does not say is flagged for checking."""
    text = f"{exam.reference_database} {exam.reference_population}".lower()
    for c in "/-,.;:()":
        text = text.replace(c, " ")
    text = " ".join(text.split())
    for negated in ("non race adjusted", "not race adjusted", "non ethnic adjusted", "not adjusted"):
        text = text.replace(negated, "unadjusted")
    words = set(text.split())
    flags = []
    unstated = []
    if {"female", "females", "women", "woman"} & words:
        pass
    elif {"male", "males", "men", "man"} & words:
        flags.append("T-scores are from a male reference: ISCD and NOGG use a White female reference for men and women.")
    else:
        unstated.append("sex")
    if "adjusted" in words:
        flags.append("T-scores are race-adjusted: ISCD and NOGG use a non-race-adjusted White female reference.")
    elif NON_WHITE & words:
        flags.append("T-scores are not from a White reference: ISCD and NOGG use a White female reference for all races.")
    elif not ({"white", "caucasian"} & words):
        unstated.append("ethnicity")
    if unstated:
        what = " and ".join(unstated) if words else "population"
        flags.append(f"Reference {what} not stated: confirm the T-scores use a White female, non-race-adjusted reference (ISCD, NOGG).")
    return flags


def discordant_vertebrae(vertebrae: list[RegionResult]) -> list[str]:
    """Vertebrae more than 1.0 T-score from each neighbour (ISCD).

    Inner vertebrae are judged first; an end vertebra is judged against its
    single neighbour only when that neighbour is not itself discordant.
    """
    usable = [v for v in vertebrae if v.t_score is not None and not v.excluded]
    out: list[str] = []

    def far(a: RegionResult, b: RegionResult) -> bool:
        return abs(round_score(a.t_score) - round_score(b.t_score)) > VERTEBRA_DISCORDANCE  # type: ignore[arg-type]

    for i in range(1, len(usable) - 1):
        if far(usable[i], usable[i - 1]) and far(usable[i], usable[i + 1]):
            out.append(usable[i].site)
    if len(usable) >= 2:
        for end, nb in ((usable[0], usable[1]), (usable[-1], usable[-2])):
            if nb.site not in out and far(end, nb) and end.site not in out:
                out.append(end.site)
    return sorted(out)


def _is_spine_total(r: RegionResult) -> bool:
    return r.laterality is None and (len(m.spine_vertebrae(r.site)) > 1 or r.site == m.SPINE_TOTAL)


def _total_rank(r: RegionResult) -> tuple[int, int]:
    """L1-L4 first, then more vertebrae before fewer, a total with its vertebrae
    stated before one without (ISCD: L1-L4, else three, else two vertebrae)."""
    vs = m.spine_vertebrae(r.site)
    return (0 if vs == frozenset({1, 2, 3, 4}) else 1 if vs else 2, -len(vs))


def _spine_measurements(exam: BmdExam) -> list[tuple[int, list[RegionResult]]]:
    """The spine rows per measurement: a row measured once (``repeat`` 0)
    belongs to every measurement, a repeated row (``repeat`` k) to the k-th."""
    rows = [r for r in exam.regions if (r.site in m.VERTEBRAE and r.laterality is None) or _is_spine_total(r)]
    repeats = sorted({r.repeat for r in rows if r.repeat})
    if not repeats:
        return [(0, rows)]
    return [(k, [r for r in rows if r.repeat in (0, k)]) for k in repeats]


def _spine_of(rows: list[RegionResult], kind: str, notes: list[str], flags: list[str]) -> tuple[RegionResult | None, tuple[str, ...]]:
    """The spine total of one measurement to use, and the vertebrae left out."""
    vertebrae = sorted((r for r in rows if r.site in m.VERTEBRAE), key=lambda r: r.site)
    totals = [r for r in rows if _is_spine_total(r)]
    if not vertebrae:
        # Only totals: used as reported (the vertebrae cannot be checked), never dropped.
        usable = [t for t in totals if not t.excluded and _score(t, kind) is not None] or [t for t in totals if not t.excluded]
        if not usable:
            return None, ()
        best = min(_total_rank(t) for t in usable)
        total = _lowest([t for t in usable if _total_rank(t) == best], kind)
        notes.append(f"Lumbar spine assessed on {total.name}, as reported by the scanner without per-vertebra results.")
        flags.append(
            f"Lumbar spine reported only as a total ({total.name}): the vertebrae and their exclusions could not be"
            " checked (ISCD: L1-L4, else the evaluable vertebrae); confirm the analysis on the scanner."
        )
        return total, ()
    discordant = discordant_vertebrae(vertebrae)
    excluded = sorted({v.site for v in vertebrae if v.excluded} | set(discordant))
    for site in discordant:
        flags.append(f"{site} differs by more than 1.0 T-score from its neighbours: excluded from diagnosis.")
    valid = frozenset(int(v.site[1]) for v in vertebrae if v.site not in excluded)
    if len(valid) < 2:
        flags.append("Fewer than two evaluable vertebrae: the lumbar spine cannot be used for diagnosis.")
        return None, tuple(excluded)
    matching = [t for t in totals if m.spine_vertebrae(t.site) == valid]
    if not matching:
        flags.append(
            f"No spine result over the valid vertebrae {m.spine_site(sorted(valid))}: reanalyse on the scanner; spine not used."
        )
        return None, tuple(excluded)
    total = _lowest(matching, kind)
    if excluded:
        notes.append(f"Lumbar spine assessed on {total.site} ({', '.join(excluded)} excluded).")
    return total, tuple(excluded)


def _spine(exam: BmdExam, kind: str, notes: list[str], flags: list[str]) -> tuple[RegionResult | None, tuple[RegionResult, ...], tuple[str, ...]]:
    """(the spine total that counts, every measurement's total, vertebrae left out of it).

    Each measurement of a repeated spine is judged on its own; the lowest
    valid total decides and all are shown (the lowest-site rule, ISCD)."""
    measurements = _spine_measurements(exam)
    chosen: list[tuple[RegionResult, tuple[str, ...]]] = []
    for k, rows in measurements:
        n, f = [], []
        total, excluded = _spine_of(rows, kind, n, f)
        prefix = f"Spine measurement {k}: " if len(measurements) > 1 else ""
        notes.extend(x for x in (prefix + y for y in n) if x not in notes)
        flags.extend(x for x in (prefix + y for y in f) if x not in flags)
        if total is not None and all(total is not c for c, _ in chosen):
            chosen.append((total, excluded))
    if not chosen:
        excluded = _spine_of(measurements[0][1], kind, [], [])[1]
        return None, (), excluded
    totals = tuple(t for t, _ in chosen)
    lowest = _lowest(list(totals), kind)
    if len(totals) > 1:
        flags.append(
            f"Lumbar spine measured {len(totals)} times with different results ({', '.join(t.name for t in totals)}):"
            f" all are shown; the lowest, {lowest.name}, is used for diagnosis."
        )
    return lowest, totals, next(e for t, e in chosen if t is lowest)


def _lowest(rows: list[RegionResult], kind: str) -> RegionResult:
    """The row with the lowest score (rows without one last; the first of equals)."""
    return min(rows, key=lambda r: (_score(r, kind) is None, _score(r, kind) or 0))


def _repeat_flags(used: list[RegionResult], kind: str) -> list[str]:
    """A site other than the spine measured more than once among the rows used: which one decided."""
    groups: dict[tuple[str, str | None], list[RegionResult]] = {}
    for r in used:
        if not _is_spine_total(r):
            groups.setdefault(r.key, []).append(r)
    out = []
    for key, rows in groups.items():
        if len(rows) > 1:
            low = _lowest(rows, kind)
            out.append(
                f"{m.site_name(*key)} measured {len(rows)} times with different results"
                f" ({', '.join(f'{r.name} {kind} {_score(r, kind)}' for r in rows)}): all are shown; the lowest, {low.name}, is used for diagnosis."
            )
    return out


def _score(r: RegionResult, kind: str) -> Decimal | None:
    value = r.t_score if kind == "T" else r.z_score
    return None if value is None else round_score(value)


def classify(
    exam: BmdExam,
    *,
    age: int | None,
    sex: str,
    menopausal: bool | None,
    fragility_fracture: bool | None = None,
    forearm_indicated: bool = False,
    context: ClinicalContext | None = None,
) -> Classification:
    """The exam's diagnostic category.

    ``context`` (the order's and the radiographer's clinical facts) supplies
    the fragility fracture, hyperparathyroidism, forearm request and table
    limit; the keyword flags are kept for callers that know them directly.
    ``menopausal`` is the status to use (see :func:`menopausal_status`).
    """
    ctx = context or ClinicalContext()
    fracture = bool(fragility_fracture or ctx.fragility_fracture)
    hpt = bool(ctx.hyperparathyroidism)
    over_limit = bool(ctx.over_table_limit)
    forearm = bool(forearm_indicated or ctx.forearm_indicated or hpt or over_limit)
    notes: list[str] = []
    flags: list[str] = []
    prompts: list[str] = []
    kind, reason = choose_score(age, sex, menopausal)
    notes.append(reason)

    spine, spine_totals, excluded = _spine(exam, kind or "T", notes, flags)

    def result(category: str, used: list[RegionResult], lowest: RegionResult | None, score: Decimal | None) -> Classification:
        return Classification(
            score_type=kind,
            category=category,
            category_text=CATEGORY_TEXT[category],
            lowest=lowest,
            lowest_score=score,
            sites_used=tuple(used),
            excluded_vertebrae=tuple(excluded),
            notes=tuple(notes),
            flags=tuple(flags),
            prompts=tuple(prompts),
            spine=spine,
        )

    if not kind:
        flags.append("Patient's age unknown: no diagnostic category is given; confirm the date of birth and reissue.")
        return result(NO_AGE, [], None, None)

    paediatric = age is not None and age < PAEDIATRIC_AGE
    if paediatric:
        central = list(spine_totals) + [r for r in exam.regions if r.site == m.TOTAL_BODY_LESS_HEAD and not r.excluded]
        central = [r for r in central if _score(r, kind) is not None]
        used = list(central)
        if any(r.site in m.HIP_SITES for r in exam.regions):
            notes.append("Hip results not used under 20 (ISCD paediatric positions).")
        if not any(r.site == m.TOTAL_BODY_LESS_HEAD for r in used):
            notes.append("Total body less head not available.")
    else:
        hips = [r for r in exam.regions if r.site in (m.NECK, m.TOTAL_HIP) and not r.excluded]
        central = list(spine_totals) + hips
        central = [r for r in central if _score(r, kind) is not None]
        spine_ok = any(_is_spine_total(r) for r in central)
        hip_ok = any(r.site in (m.NECK, m.TOTAL_HIP) for r in central)
        used = list(central)
        if not (spine_ok and hip_ok) or forearm:
            radius = [r for r in exam.regions if r.site == m.RADIUS_33 and not r.excluded and _score(r, kind) is not None]
            if radius:
                used += radius
                why = (
                    "of hyperparathyroidism" if hpt else
                    "the patient exceeds the table limit" if over_limit else
                    "it was requested" if forearm else
                    "spine or hip could not be used"
                )  # fmt: skip
                notes.append(f"33% radius included because {why}.")
            elif forearm:
                flags.append("Forearm (33% radius) indicated but not measured.")
        if not spine_ok:
            notes.append("Lumbar spine not used for diagnosis.")
        if not hip_ok:
            notes.append("Femoral neck and total hip not available for diagnosis.")

    if kind == "T":
        flags.extend(reference_flags(exam))
    flags.extend(_repeat_flags(used, kind))

    if not used:
        return result(INDETERMINATE, [], None, None)

    lowest = min(used, key=lambda r: _score(r, kind))  # type: ignore[arg-type,return-value]
    score = _score(lowest, kind)
    assert score is not None
    raw = lowest.t_score if kind == "T" else lowest.z_score
    notes.append(ROUNDING_NOTE if raw == score else f"{ROUNDING_NOTE[:-1]}: {raw} is read as {score}.")
    if kind == "T":
        category = who_category(score, fracture)
        if fracture and category == ESTABLISHED:
            notes.append("Fragility fracture reported: established osteoporosis (WHO).")
    else:
        category = z_category(score)
        notes.append("Osteoporosis is not diagnosed on BMD alone with Z-scores.")
    zs = [round_score(r.z_score) for r in used if r.z_score is not None]
    if zs and min(zs) <= Z_LOW:
        prompts.append("Z-score -2.0 or below: consider investigation for secondary causes of bone loss.")
    if fracture:
        prompts.append("Fragility fracture reported: consider vertebral fracture assessment and investigation.")
    if ctx.vertebral_fracture:
        prompts.append("Low-trauma vertebral fracture reported: consider investigation for secondary causes (UK DXA service guidance, Reporting).")
    if ctx.glucocorticoids:
        prompts.append("Glucocorticoid use reported: FRAX underestimates the risk at higher doses; adjust for the dose (NOGG).")
    return result(category, used, lowest, score)
