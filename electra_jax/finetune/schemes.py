"""NER tag schemes. Every scheme is read as IOB2 (what the model learns and what entity F1 scores) and can be
written back, so that predictions come out in the scheme of the input file.

  iob2    B-X starts every entity, I-X continues it. Bare types (IO: PER on every word of a name) are read as
          one entity per run of a type; a stray I-X (after O or another type) is read as B-X, as conlleval does.
  iob1    I-X starts an entity too; B-X only where an entity directly follows one of the same type (CoNLL-2003's
          original files).
  bioes   B-X first, I-X inside, E-X last, S-X a one-word entity; BILOU's L-X and U-X are read as E-X and S-X.
  suffix  the position after the type, X-B / X-I (or X_B / X_I), as in Naver's Korean NER data.

`--outside-tag` names the tag of words outside entities (O unless the corpus says otherwise, such as 0).
"""
from __future__ import annotations

SCHEMES = ("iob2", "iob1", "bioes", "suffix")
_PREFIXES = {"iob2": "BI", "iob1": "BI", "bioes": "BIESLU"}
_BIOES_AS_IOB2 = {"B": "B", "I": "I", "E": "I", "L": "I", "S": "B", "U": "B"}


def tag_problem(tag: str, scheme: str, outside: str = "O") -> str | None:
    """Why `tag` cannot be a tag of `scheme` (the end of a one-line error message), or None when it fits."""
    if tag in (outside, "O"):
        return None
    suffixed = len(tag) > 2 and tag[-2] in "-_" and tag[-1] in "BI"
    prefix = tag[0] if len(tag) > 2 and tag[1] == "-" else None
    if scheme == "suffix":
        fits, shape = suffixed, "TYPE-B or TYPE-I"
    elif scheme == "iob2":  # a bare type is an IO tag
        fits, shape = prefix in (None, "B", "I") and not (prefix is None and suffixed), "B-TYPE, I-TYPE or TYPE"
    else:
        fits, shape = prefix is not None and prefix in _PREFIXES[scheme], "-TYPE, ".join(_PREFIXES[scheme]) + "-TYPE"
    if fits:
        return None
    guess = ("suffix" if suffixed and prefix is None else "iob2" if prefix in ("B", "I")
             else "bioes" if prefix in ("E", "S", "L", "U") else None)
    hint = (f"; the file looks like --tag-scheme {guess}" if guess and guess != scheme
            else "; if 0 marks the words outside entities, pass --outside-tag 0" if tag == "0" else "")
    return f"tag {tag!r} does not fit --tag-scheme {scheme} ({shape}; {outside!r} outside entities){hint}"


def to_iob2(tags: list[str], scheme: str, outside: str = "O") -> tuple[list[str], dict[str, int]]:
    """The tags as IOB2, and counts of what was changed beyond the scheme's own rewriting: "bare" (IO tags read
    as IOB2) and "stray" (an I-X that starts an entity, read as B-X; in iob1 that is the scheme itself)."""
    counts = {"bare": 0, "stray": 0}
    prefixed, previous = [], "O"
    for tag in tags:
        if tag in (outside, "O"):
            tag = "O"
        elif scheme == "suffix":
            tag = f"{tag[-1]}-{tag[:-2]}"
        elif scheme == "bioes":
            tag = f"{_BIOES_AS_IOB2[tag[0]]}-{tag[2:]}"
        elif not (len(tag) > 2 and tag[1] == "-"):  # iob2's bare types
            tag = ("I-" if previous[2:] == tag else "B-") + tag
            counts["bare"] += 1
        prefixed.append(tag)
        previous = tag
    converted, previous = [], "O"
    for tag in prefixed:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
            counts["stray"] += scheme != "iob1"
        converted.append(tag)
        previous = tag
    return converted, counts


def from_iob2(tags: list[str], scheme: str, outside: str = "O") -> list[str]:
    """Valid IOB2 tags (every I-X continues an X) written in `scheme`; `outside` for O."""
    written = []
    for i, tag in enumerate(tags):
        previous = tags[i - 1] if i else "O"
        following = tags[i + 1] if i + 1 < len(tags) else "O"
        if tag == "O":
            written.append(outside)
            continue
        position, kind = tag[0], tag[2:]
        continues = following == f"I-{kind}"
        if scheme == "iob1" and position == "B" and previous[2:] != kind:
            position = "I"
        elif scheme == "bioes":
            position = {("B", True): "B", ("B", False): "S", ("I", True): "I", ("I", False): "E"}[position, continues]
        written.append(f"{kind}-{position}" if scheme == "suffix" else f"{position}-{kind}")
    return written


def drop_types(tags: list[str], dropped: frozenset[str]) -> tuple[list[str], int]:
    """IOB2 tags with the entity types in `dropped` set to O (trained and scored as outside); returns the count."""
    kept = ["O" if tag != "O" and tag[2:] in dropped else tag for tag in tags]
    return kept, sum(a != b for a, b in zip(tags, kept))
