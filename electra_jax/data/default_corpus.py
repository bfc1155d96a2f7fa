"""A corpus the package writes itself, so the smoke run needs no download and no data folder.

Documents are paragraphs from a small probabilistic grammar with agreement (a noun's article,
adjective ending and verb depend on its gender and number), counting runs and recurring named
entities. Real structure, so a tiny generator learns to propose plausible tokens and the
discriminator has something to learn about telling them apart.
"""
from __future__ import annotations

import random
from pathlib import Path

NOUNS = {  # noun: (gender, plural)
    "hund": ("c", "hunde"), "kat": ("c", "katte"), "bog": ("c", "bøger"), "by": ("c", "byer"),
    "skole": ("c", "skoler"), "fugl": ("c", "fugle"), "pige": ("c", "piger"), "dreng": ("c", "drenge"),
    "hus": ("n", "huse"), "æble": ("n", "æbler"), "træ": ("n", "træer"), "bord": ("n", "borde"),
    "skib": ("n", "skibe"), "land": ("n", "lande"), "vindue": ("n", "vinduer"), "øje": ("n", "øjne"),
}
ADJECTIVES = ["stor", "lille", "rød", "grøn", "gammel", "ny", "hurtig", "smuk", "mørk", "blå", "varm", "kold"]
VERBS_INTRANSITIVE = ["sover", "løber", "synger", "venter", "smiler", "falder", "flyver", "arbejder"]
VERBS_TRANSITIVE = ["ser", "finder", "køber", "maler", "bygger", "spiser", "læser", "åbner", "henter"]
PLACES = ["København", "Aarhus", "Odense", "Aalborg", "Esbjerg", "Roskilde", "Vejle", "Ribe"]
PEOPLE = ["Anna", "Søren", "Mette", "Jørgen", "Åse", "Ole", "Karen", "Niels", "Birthe", "Lars"]
ADVERBS = ["i dag", "i går", "om morgenen", "om aftenen", "hver dag", "nu", "stille", "ofte"]
NUMBER_WORDS = ["nul", "en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni", "ti", "elleve", "tolv"]


def _definite(adjective: str) -> str:
    return {"lille": "lille", "ny": "nye", "blå": "blå", "gammel": "gamle", "grøn": "grønne"}.get(
        adjective, adjective if adjective.endswith("e") else adjective + "e")


def _plural_adjective(adjective: str) -> str:
    return {"lille": "små"}.get(adjective, _definite(adjective))


def _definite_phrase(noun: str, adjective: str) -> str:
    return f"{'den' if NOUNS[noun][0] == 'c' else 'det'} {_definite(adjective)} {noun}"


def _indefinite_phrase(noun: str, adjective: str) -> str:
    gender = NOUNS[noun][0]
    if gender == "n" and adjective[-1] not in "te" and adjective != "lille":
        adjective += "t"
    return f"{'en' if gender == 'c' else 'et'} {adjective} {noun}"


def _document(rng: random.Random) -> list[str]:
    """Each document fixes a cast (person, place, thing, colour, action) and keeps reusing it, so most
    tokens are predictable from the rest of the document: a wrong replacement stands out."""
    person, friend = rng.sample(PEOPLE, 2)
    place = rng.choice(PLACES)
    noun, adjective = rng.choice(list(NOUNS)), rng.choice(ADJECTIVES)
    verb, rest = rng.choice(VERBS_TRANSITIVE), rng.choice(VERBS_INTRANSITIVE)
    count_from = rng.randrange(0, len(NUMBER_WORDS) - 5)
    templates = [
        lambda: f"{person} bor i {place}",
        lambda: f"{person} har {_indefinite_phrase(noun, adjective)}",
        lambda: f"{_definite_phrase(noun, adjective)} {rest} {rng.choice(ADVERBS)}",
        lambda: f"i {place} {verb} {person} {_definite_phrase(noun, adjective)}",
        lambda: f"{friend} besøger {person} i {place}",
        lambda: f"{person} og {friend} {verb} {_indefinite_phrase(noun, adjective)}",
        lambda: f"{person} tæller {', '.join(NUMBER_WORDS[count_from:count_from + rng.randint(3, 5)])}",
        lambda: f"{NUMBER_WORDS[count_from + 2]} {_plural_adjective(adjective)} {NOUNS[noun][1]} {rest}",
    ]
    lines = []
    for _ in range(rng.randint(3, 7)):
        sentences = [rng.choice(templates)() for _ in range(rng.randint(1, 3))]
        lines.append(" ".join(s[0].upper() + s[1:] + "." for s in sentences))
    return lines


def generate_corpus(num_documents: int = 3000, seed: int = 1234) -> str:
    """Paragraph-per-line text, documents separated by blank lines."""
    rng = random.Random(seed)
    return "\n\n".join("\n".join(_document(rng)) for _ in range(num_documents)) + "\n"
def write_default_corpus(path: str | Path, num_documents: int = 3000, seed: int = 1234) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate_corpus(num_documents, seed), encoding="utf-8")
    return path
