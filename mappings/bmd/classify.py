"""Diagnostic category of one exam (DOMAIN.md section 4: WHO, ISCD official positions).

* Score: T for postmenopausal women and men aged 50 and over; Z for
  premenopausal women, men under 50 and children.  A woman under 50 whose
  menopausal status is unknown: say so and use Z (ISCD).
* Sites: the lowest of lumbar spine (L1-L4 or the valid vertebrae), femoral
  neck and total hip; the 33% radius only when spine or hip cannot be used.
  Never Ward's area or the trochanter alone.
* Vertebrae: exclude those with artefact or more than 1.0 T-score from their
  neighbours; at least two must be evaluable, never one.
* WHO (T): >= -1.0 normal; between -1.0 and -2.5 osteopenia; <= -2.5
  osteoporosis; with a fragility fracture established osteoporosis.
  Z <= -2.0: "below the expected range for age".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mappings.bmd import models as m
from mappings.bmd.models import BmdExam, RegionResult

NORMAL = "normal"
OSTEOPENIA = "osteopenia"
OSTEOPOROSIS = "osteoporosis"
ESTABLISHED = "established_osteoporosis"
WITHIN_RANGE = "within_expected_range"
BELOW_RANGE = "below_expected_range"
INDETERMINATE = "indeterminate"

CATEGORY_TEXT = {
    NORMAL: "Normal",
    OSTEOPENIA: "Osteopenia (low bone mass)",
    OSTEOPOROSIS: "Osteoporosis",
    ESTABLISHED: "Established (severe) osteoporosis",
    WITHIN_RANGE: "Within the expected range for age",
    BELOW_RANGE: "Below the expected range for age",
    INDETERMINATE: "No diagnostic category: no usable result",
}

T_NORMAL = Decimal("-1.0")
T_OSTEOPOROSIS = Decimal("-2.5")
Z_LOW = Decimal("-2.0")
VERTEBRA_DISCORDANCE = Decimal("1.0")
ADULT_AGE = 50  # ISCD: T-scores for men >= 50 and postmenopausal women


@dataclass(frozen=True, slots=True)
class Classification:
    """Which score was used, on which sites, and what it means."""

    score_type: str  # "T" or "Z"
    category: str  # one of the constants above
    category_text: str
    lowest: RegionResult | None  # the site that decided
    lowest_score: Decimal | None
    sites_used: tuple[RegionResult, ...]
    excluded_vertebrae: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # why this score, what was left out
    flags: tuple[str, ...] = ()  # technical problems for the reporter
    prompts: tuple[str, ...] = ()  # further investigation


def choose_score(age: int | None, sex: str, menopausal: bool | None) -> tuple[str, str]:
    """("T" or "Z", reason) per ISCD official positions."""
    if age is None:
        return "T", "Age unknown: T-score used; confirm the patient is an adult over 50."
    if age < 20:
        return "Z", "Child or adolescent: Z-score used."
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
    """WHO category of a T-score (boundaries exact: -1.0 normal, -2.5 osteoporosis)."""
    if t >= T_NORMAL:
        return NORMAL
    if t > T_OSTEOPOROSIS:
        return OSTEOPENIA
    return ESTABLISHED if fragility_fracture else OSTEOPOROSIS


def z_category(z: Decimal) -> str:
    """ISCD: Z <= -2.0 is "below the expected range for age"."""
    return BELOW_RANGE if z <= Z_LOW else WITHIN_RANGE


def discordant_vertebrae(vertebrae: list[RegionResult]) -> list[str]:
    """Vertebrae more than 1.0 T-score from each neighbour (ISCD).

    Inner vertebrae are judged first; an end vertebra is judged against its
    single neighbour only when that neighbour is not itself discordant.
    """
    usable = [v for v in vertebrae if v.t_score is not None and not v.excluded]
    out: list[str] = []

    def far(a: RegionResult, b: RegionResult) -> bool:
        return abs(a.t_score - b.t_score) > VERTEBRA_DISCORDANCE  # type: ignore[operator]

    for i in range(1, len(usable) - 1):
        if far(usable[i], usable[i - 1]) and far(usable[i], usable[i + 1]):
            out.append(usable[i].site)
    if len(usable) >= 2:
        for end, nb in ((usable[0], usable[1]), (usable[-1], usable[-2])):
            if nb.site not in out and far(end, nb) and end.site not in out:
                out.append(end.site)
    return sorted(out)


def _spine(exam: BmdExam, notes: list[str], flags: list[str]) -> tuple[RegionResult | None, tuple[str, ...]]:
    """The spine total to use, and the vertebrae left out."""
    vertebrae = [r for r in exam.regions if r.site in m.VERTEBRAE and r.laterality is None]
    vertebrae.sort(key=lambda r: r.site)
    totals = {m.spine_vertebrae(r.site): r for r in exam.regions if len(m.spine_vertebrae(r.site)) > 1}
    if not vertebrae:
        total = totals.get(frozenset({1, 2, 3, 4}))
        return (total, ()) if total else (None, ())
    excluded = sorted({v.site for v in vertebrae if v.excluded} | set(discordant_vertebrae(vertebrae)))
    for site in discordant_vertebrae(vertebrae):
        flags.append(f"{site} differs by more than 1.0 T-score from its neighbours: excluded from diagnosis.")
    valid = frozenset(int(v.site[1]) for v in vertebrae if v.site not in excluded)
    if len(valid) < 2:
        flags.append("Fewer than two evaluable vertebrae: the lumbar spine cannot be used for diagnosis.")
        return None, tuple(excluded)
    total = totals.get(valid)
    if total is None:
        flags.append(
            f"No spine result over the valid vertebrae {m.spine_site(sorted(valid))}: reanalyse on the scanner; spine not used."
        )
        return None, tuple(excluded)
    if excluded:
        notes.append(f"Lumbar spine assessed on {total.site} ({', '.join(excluded)} excluded).")
    return total, tuple(excluded)


def _score(r: RegionResult, kind: str) -> Decimal | None:
    return r.t_score if kind == "T" else r.z_score


def classify(
    exam: BmdExam,
    *,
    age: int | None,
    sex: str,
    menopausal: bool | None,
    fragility_fracture: bool,
    forearm_indicated: bool = False,
) -> Classification:
    """The exam's diagnostic category; ``forearm_indicated`` (e.g. hyperparathyroidism)
    adds the 33% radius even when spine and hip are usable."""
    notes: list[str] = []
    flags: list[str] = []
    prompts: list[str] = []
    kind, reason = choose_score(age, sex, menopausal)
    notes.append(reason)

    spine, excluded = _spine(exam, notes, flags)
    hips = [r for r in exam.regions if r.site in (m.NECK, m.TOTAL_HIP)]
    central = ([spine] if spine else []) + hips
    central = [r for r in central if _score(r, kind) is not None]
    spine_ok = any(r is spine for r in central)
    hip_ok = any(r.site in (m.NECK, m.TOTAL_HIP) for r in central)
    used = list(central)
    if not (spine_ok and hip_ok) or forearm_indicated:
        radius = [r for r in exam.regions if r.site == m.RADIUS_33 and _score(r, kind) is not None]
        if radius:
            used += radius
            notes.append("33% radius included because " + ("it was requested." if forearm_indicated else "spine or hip could not be used."))
    if not spine_ok:
        notes.append("Lumbar spine not used for diagnosis.")
    if not hip_ok:
        notes.append("Femoral neck and total hip not available for diagnosis.")

    if not used:
        return Classification(kind, INDETERMINATE, CATEGORY_TEXT[INDETERMINATE], None, None, (), tuple(excluded), tuple(notes), tuple(flags), tuple(prompts))

    lowest = min(used, key=lambda r: _score(r, kind))  # type: ignore[arg-type,return-value]
    score = _score(lowest, kind)
    assert score is not None
    if kind == "T":
        category = who_category(score, fragility_fracture)
    else:
        category = z_category(score)
        notes.append("Osteoporosis is not diagnosed on BMD alone with Z-scores.")
    zs = [r.z_score for r in used if r.z_score is not None]
    if zs and min(zs) <= Z_LOW:
        prompts.append("Z-score -2.0 or below: consider investigation for secondary causes of bone loss.")
    if fragility_fracture:
        prompts.append("Fragility fracture reported: consider vertebral fracture assessment and investigation.")
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
    )
