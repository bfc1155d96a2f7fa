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


def _noun_phrase(rng: random.Random) -> str:
    noun = rng.choice(list(NOUNS))
    gender, plural = NOUNS[noun]
    adjective = rng.choice(ADJECTIVES)
    roll = rng.random()
    if roll < 0.4:  # indefinite singular: en/et + adjective (+t for neuter)
        article = "en" if gender == "c" else "et"
        adjective = adjective + "t" if gender == "n" and adjective[-1] not in "te" and adjective != "lille" else adjective
        return f"{article} {adjective} {noun}"
    if roll < 0.7:  # definite singular: den/det + adjective-e
        article = "den" if gender == "c" else "det"
        return f"{article} {_definite(adjective)} {noun}"
    if roll < 0.85:  # plural with number
        return f"{rng.choice(NUMBER_WORDS[2:])} {_plural_adjective(adjective)} {plural}"
    return f"de {_plural_adjective(adjective)} {plural}"


def _definite(adjective: str) -> str:
    return {"lille": "lille", "ny": "nye", "blå": "blå", "gammel": "gamle", "grøn": "grønne"}.get(
        adjective, adjective if adjective.endswith("e") else adjective + "e")


def _plural_adjective(adjective: str) -> str:
    return {"lille": "små"}.get(adjective, _definite(adjective))


def _sentence(rng: random.Random, topic_person: str, topic_place: str) -> str:
    roll = rng.random()
    if roll < 0.3:
        s = f"{_noun_phrase(rng)} {rng.choice(VERBS_INTRANSITIVE)} {rng.choice(ADVERBS)}"
    elif roll < 0.6:
        s = f"{topic_person} {rng.choice(VERBS_TRANSITIVE)} {_noun_phrase(rng)} i {topic_place}"
    elif roll < 0.75:
        start = rng.randrange(0, len(NUMBER_WORDS) - 4)
        run = ", ".join(NUMBER_WORDS[start:start + rng.randint(3, 5)])
        s = f"{topic_person} tæller {run}"
    elif roll < 0.9:
        s = f"i {topic_place} {rng.choice(VERBS_TRANSITIVE)} {topic_person} {_noun_phrase(rng)} {rng.choice(ADVERBS)}"
    else:
        s = f"{_noun_phrase(rng)} og {_noun_phrase(rng)} {rng.choice(VERBS_INTRANSITIVE)}"
    return s[0].upper() + s[1:] + "."


def generate_corpus(num_documents: int = 3000, seed: int = 1234) -> str:
    """Paragraph-per-line text, documents separated by blank lines."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_documents):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        lines = [" ".join(_sentence(rng, person, place) for _ in range(rng.randint(1, 3)))
                 for _ in range(rng.randint(2, 6))]
        documents.append("\n".join(lines))
    return "\n\n".join(documents) + "\n"


def write_default_corpus(path: str | Path, num_documents: int = 3000, seed: int = 1234) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate_corpus(num_documents, seed), encoding="utf-8")
    return path
