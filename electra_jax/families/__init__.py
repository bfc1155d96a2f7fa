"""The family registry: `FAMILIES[model.architecture]`, one module per family declaring all it owns.

electra.py  generator + discriminator, replaced-token detection, two HF towers
albert.py   factorized embeddings and shared layers, n-gram MLM + SOP, SentencePiece
bert.py     imported models and distilled students (trained by `distill`, not pretrained)
family.py   the `Family`, `HFSide` and `TF1Side` declarations every family fills in
"""
from __future__ import annotations

from electra_jax.config import ConfigError, ModelConfig
from electra_jax.families import albert, bert, electra
from electra_jax.families.family import Family, HFSide, TF1Side, shown

FAMILIES: dict[str, Family] = {f.name: f for f in (electra.FAMILY, albert.FAMILY, bert.FAMILY)}

__all__ = ["FAMILIES", "Family", "HFSide", "TF1Side", "family_of", "shown"]


def family_of(model: ModelConfig) -> Family:
    """The family of a model config (config validation has already refused an unknown architecture)."""
    try:
        return FAMILIES[model.architecture]
    except KeyError:
        raise ConfigError(f"config: model.architecture must be one of {', '.join(FAMILIES)}, "
                          f"got {model.architecture!r}") from None
