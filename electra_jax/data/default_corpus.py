"""A corpus the package writes itself, so the smoke run needs no download and no data folder.

Danish-flavoured documents mixing two kinds of line: ordered runs (counting, weekdays, months, the
alphabet up to æ ø å, page numbers), where every token is fixed by its neighbours, and sentences from
a small grammar with agreement that keep reusing each document's cast of people and things. A tiny
generator learns the runs only slowly, so its samples are often wrong in ways the context exposes:
the discriminator's replaced-token F1 climbs within a few hundred steps on a laptop CPU (in less
regular text a tiny model sits much longer on the plateau before attention becomes useful).
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
COUNTING = ["en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni", "ti", "elleve", "tolv", "tretten",
            "fjorten", "femten", "seksten", "sytten", "atten", "nitten", "tyve"]
NUMBER_WORDS = ["nul", *COUNTING[:12]]
WEEKDAYS = ["mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"]
MONTHS = ["januar", "februar", "marts", "april", "maj", "juni", "juli", "august", "september", "oktober",
          "november", "december"]
ALPHABET = list("abcdefghijklmnopqrstuvwxyzæøå")
RUNS = [("Vi tæller", COUNTING), ("Ugen går", WEEKDAYS), ("Året går", MONTHS), ("Bogstaverne er", ALPHABET)]


def _ordered_run(rng: random.Random) -> str:
    """A cyclic run through a fixed sequence: each token is determined by the one before it."""
    if rng.random() < 0.2:
        start = rng.randrange(1, 400)
        return "Siderne " + ", ".join(str(n) for n in range(start, start + rng.randint(5, 9)))
    intro, sequence = rng.choice(RUNS)
    start, length = rng.randrange(len(sequence)), rng.randint(6, 12)
    return f"{intro}: " + ", ".join(sequence[(start + i) % len(sequence)] for i in range(length))


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
        if rng.random() < 0.5:
            lines.append(_ordered_run(rng) + ".")
            continue
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
