"""Fine-tuning hyperparameters that follow the model's size, as the ELECTRA paper's fine-tuning table does
(Clark et al. 2020, appendix table 7: learning rate 3e-4 Small, 1e-4 Base, 5e-5 Large; layerwise decay 0.8,
0.8, 0.9). Models below Small (the smoke and CPU presets, hidden 128) take 1e-3: at 1e-4 such a model was still
under-fitted after 3 epochs of Spanish NER (its best dev epoch was always the last).
"""
from __future__ import annotations

from electra_jax.config import ModelConfig

# (largest hidden size, learning rate, layerwise decay), smallest first; the last row takes every larger model.
BY_HIDDEN_SIZE = ((255, 1e-3, 0.8), (511, 3e-4, 0.8), (1023, 1e-4, 0.8), (None, 5e-5, 0.9))
SIZE_TABLE = ("hidden below 256: 1e-3, 256-511 (ELECTRA Small, Medium): 3e-4, 512-1023 (Base): 1e-4, 1024 and up "
              "(Large): 5e-5")


def size_defaults(model: ModelConfig) -> tuple[float, float]:
    """(learning rate, layerwise decay) for a model of this hidden size."""
    for largest, learning_rate, decay in BY_HIDDEN_SIZE:
        if largest is None or model.hidden_size <= largest:
            return learning_rate, decay
    raise AssertionError("the last row takes every size")
