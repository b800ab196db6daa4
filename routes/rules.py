"""Route rules: which destinations an object goes to (pure).

Every route whose ``match`` holds sends the object to its ``to`` list;
several routes may match, and a destination is named once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RoutedObject:
    """What a rule can see of an object: its kind and a few attributes."""

    kind: str  # image, sr, pdf, dose, report, mpps, order-status, other
    sop_class: str = ""
    modality: str = ""
    calling_ae: str = ""
    manufacturer: str = ""
    attributes: dict[str, str] = field(default_factory=dict)  # DICOM keyword -> value


@dataclass(frozen=True, slots=True)
class Rule:
    kinds: tuple[str, ...]
    sop_classes: tuple[str, ...]
    modalities: tuple[str, ...]
    calling_aes: tuple[str, ...]
    manufacturers: tuple[str, ...]
    keywords: tuple[tuple[str, str | re.Pattern], ...]
    to: tuple[str, ...]

    def matches(self, obj: RoutedObject) -> bool:
        for wanted, value in (
            (self.kinds, obj.kind),
            (self.sop_classes, obj.sop_class),
            (self.modalities, obj.modality),
            (self.calling_aes, obj.calling_ae),
            (self.manufacturers, obj.manufacturer),
        ):
            if wanted and value not in wanted:
                return False
        for keyword, expected in self.keywords:
            value = obj.attributes.get(keyword, "")
            if isinstance(expected, re.Pattern):
                if not expected.search(value):
                    return False
            elif value != expected:
                return False
        return True


def compile_routes(routes: list) -> tuple[Rule, ...]:
    """Rules from the config's ``routes:`` (gateway.config.Route models)."""
    rules = []
    for route in routes:
        m = route.match
        extra = dict(m.model_extra or {})
        keywords = []
        for keyword, expected in extra.items():
            if isinstance(expected, dict) and "regex" in expected:
                keywords.append((keyword, re.compile(str(expected["regex"]))))
            else:
                keywords.append((keyword, str(expected)))
        rules.append(
            Rule(
                kinds=tuple(m.kind),
                sop_classes=tuple(m.sop_class),
                modalities=tuple(m.modality),
                calling_aes=tuple(m.calling_ae),
                manufacturers=tuple(m.manufacturer),
                keywords=tuple(keywords),
                to=tuple(route.to),
            )
        )
    return tuple(rules)


def destinations_for(rules: tuple[Rule, ...], obj: RoutedObject) -> tuple[str, ...]:
    """The destinations of ``obj``, in route order, each once."""
    out: list[str] = []
    for rule in rules:
        if rule.matches(obj):
            out.extend(d for d in rule.to if d not in out)
    return tuple(out)
