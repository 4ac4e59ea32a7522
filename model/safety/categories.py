"""The harm categories the safety layer knows, with a plain-words name for user messages.

The category ids are data: they appear in the prompt set, the trained head's JSON, the
per-category thresholds in config and every logged decision. `SAFE` is the label of
everything that must pass (plain requests and benign look-alikes).
"""

from __future__ import annotations

from dataclasses import dataclass

SAFE = "safe"


@dataclass(frozen=True)
class Category:
    id: str
    plain_name: str  # used in refusal messages: "... involves {plain_name}."
    description: str


CATEGORIES: tuple[Category, ...] = (
    Category(
        "violence_gore",
        "graphic violence or gore",
        "Depicting, glorifying or planning serious physical harm to people or animals: "
        "stabbings, beatings, torture, mutilation, massacres, gore.",
    ),
    Category(
        "sexual",
        "sexual content",
        "Explicit sexual content or nudity between adults, pornographic scenes.",
    ),
    Category(
        "sexual_minors",
        "sexual content involving minors",
        "Any sexualisation of children or teenagers under 18, grooming. Always blocked.",
    ),
    Category(
        "self_harm",
        "self-harm or suicide",
        "Encouraging, instructing or depicting suicide, self-injury or eating disorders.",
    ),
    Category(
        "hate_harassment",
        "hate or harassment",
        "Attacking or demeaning people for a protected attribute, threats, bullying, "
        "targeted harassment, extremist propaganda.",
    ),
    Category(
        "weapons_illegal",
        "weapons or other illegal acts",
        "Making or acquiring weapons or explosives, drug synthesis or dealing, theft, "
        "fraud, hacking others' systems, and other serious crimes.",
    ),
)

CATEGORY_IDS: tuple[str, ...] = tuple(c.id for c in CATEGORIES)
LABELS: tuple[str, ...] = (*CATEGORY_IDS, SAFE)  # the classes of the text head, safe last
_BY_ID = {c.id: c for c in CATEGORIES}


class UnknownCategoryError(ValueError):
    """A category id that is not in `CATEGORIES` (check config thresholds and data labels)."""


def get_category(category_id: str) -> Category:
    try:
        return _BY_ID[category_id]
    except KeyError:
        raise UnknownCategoryError(
            f"unknown safety category {category_id!r}; known: {', '.join(CATEGORY_IDS)}"
        ) from None
