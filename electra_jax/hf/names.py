"""The one name table between our ELECTRA parameters and Hugging Face's PyTorch state dicts.

Each row is (our parameter path, HF tensor name, layout). `transpose` marks linear kernels: Flax
stores (in, out), PyTorch (out, in). Both layouts are their own inverse, so export and import walk the
same rows in opposite directions.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from electra_jax.config import ModelConfig

SAME, TRANSPOSE = "same", "transpose"


class Row(NamedTuple):
    ours: str  # "/"-separated path in the Flax params tree
    hf: str  # state-dict name, without the "electra." prefix of the task models
    layout: str


EMBEDDINGS = [
    Row("embeddings/word_embeddings/embedding", "embeddings.word_embeddings.weight", SAME),
    Row("embeddings/position_embeddings/embedding", "embeddings.position_embeddings.weight", SAME),
    Row("embeddings/token_type_embeddings/embedding", "embeddings.token_type_embeddings.weight", SAME),
    Row("embeddings/LayerNorm/scale", "embeddings.LayerNorm.weight", SAME),
    Row("embeddings/LayerNorm/bias", "embeddings.LayerNorm.bias", SAME),
]
EMBEDDINGS_PROJECT = [  # only when embedding_size != the tower's hidden size
    Row("{tower}/embeddings_project/kernel", "embeddings_project.weight", TRANSPOSE),
    Row("{tower}/embeddings_project/bias", "embeddings_project.bias", SAME),
]
LAYER = [  # one per encoder layer {i}
    Row("{tower}/encoder/layer_{i}/attention/query/kernel", "encoder.layer.{i}.attention.self.query.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/attention/query/bias", "encoder.layer.{i}.attention.self.query.bias", SAME),
    Row("{tower}/encoder/layer_{i}/attention/key/kernel", "encoder.layer.{i}.attention.self.key.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/attention/key/bias", "encoder.layer.{i}.attention.self.key.bias", SAME),
    Row("{tower}/encoder/layer_{i}/attention/value/kernel", "encoder.layer.{i}.attention.self.value.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/attention/value/bias", "encoder.layer.{i}.attention.self.value.bias", SAME),
    Row("{tower}/encoder/layer_{i}/attention/output/kernel", "encoder.layer.{i}.attention.output.dense.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/attention/output/bias", "encoder.layer.{i}.attention.output.dense.bias", SAME),
    Row("{tower}/encoder/layer_{i}/attention_LayerNorm/scale", "encoder.layer.{i}.attention.output.LayerNorm.weight", SAME),
    Row("{tower}/encoder/layer_{i}/attention_LayerNorm/bias", "encoder.layer.{i}.attention.output.LayerNorm.bias", SAME),
    Row("{tower}/encoder/layer_{i}/intermediate/kernel", "encoder.layer.{i}.intermediate.dense.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/intermediate/bias", "encoder.layer.{i}.intermediate.dense.bias", SAME),
    Row("{tower}/encoder/layer_{i}/output/kernel", "encoder.layer.{i}.output.dense.weight", TRANSPOSE),
    Row("{tower}/encoder/layer_{i}/output/bias", "encoder.layer.{i}.output.dense.bias", SAME),
    Row("{tower}/encoder/layer_{i}/output_LayerNorm/scale", "encoder.layer.{i}.output.LayerNorm.weight", SAME),
    Row("{tower}/encoder/layer_{i}/output_LayerNorm/bias", "encoder.layer.{i}.output.LayerNorm.bias", SAME),
]
DISCRIMINATOR_HEAD = [  # ElectraForPreTraining; names without the "electra." prefix are the head's own
    Row("discriminator_predictions_dense/kernel", "discriminator_predictions.dense.weight", TRANSPOSE),
    Row("discriminator_predictions_dense/bias", "discriminator_predictions.dense.bias", SAME),
    Row("discriminator_predictions_prediction/kernel", "discriminator_predictions.dense_prediction.weight", TRANSPOSE),
    Row("discriminator_predictions_prediction/bias", "discriminator_predictions.dense_prediction.bias", SAME),
]
GENERATOR_HEAD = [  # ElectraForMaskedLM; its decoder weight is tied to the word embeddings
    Row("generator_predictions_dense/kernel", "generator_predictions.dense.weight", TRANSPOSE),
    Row("generator_predictions_dense/bias", "generator_predictions.dense.bias", SAME),
    Row("generator_predictions_LayerNorm/scale", "generator_predictions.LayerNorm.weight", SAME),
    Row("generator_predictions_LayerNorm/bias", "generator_predictions.LayerNorm.bias", SAME),
    Row("generator_lm_head_bias", "generator_lm_head.bias", SAME),
]
TIED_DECODER = "generator_lm_head.weight"  # HF re-ties it on load; we never store it
ENCODER_PREFIX = "electra."  # of the body in ElectraForPreTraining / ElectraForMaskedLM (not ElectraModel)

# Which rows and which tower each HF architecture holds.
ARCHITECTURES = {
    "ElectraForPreTraining": ("discriminator", DISCRIMINATOR_HEAD),
    "ElectraForMaskedLM": ("generator", GENERATOR_HEAD),
    "ElectraModel": ("discriminator", []),
}


def tower_sizes(model: ModelConfig, tower: str) -> tuple[int, int, int]:
    """(hidden, heads, intermediate) of one tower."""
    if tower == "generator":
        return model.generator_hidden_size, model.generator_num_heads, model.generator_intermediate_size
    return model.hidden_size, model.num_heads, model.intermediate_size


def rows_for(model: ModelConfig, architecture: str) -> list[tuple[str, str, str]]:
    """(our path, full HF name, layout) for every tensor of `architecture` under `model`."""
    tower, head = ARCHITECTURES[architecture]
    body_prefix = "" if architecture == "ElectraModel" else ENCODER_PREFIX
    body = list(EMBEDDINGS)
    if model.embedding_size != tower_sizes(model, tower)[0]:
        body += EMBEDDINGS_PROJECT
    body += [row._replace(ours=row.ours.replace("{i}", str(i)), hf=row.hf.replace("{i}", str(i)))
             for i in range(model.num_layers) for row in LAYER]
    rows = [(r.ours.replace("{tower}", tower), body_prefix + r.hf, r.layout) for r in body]
    return rows + [(r.ours, r.hf, r.layout) for r in head]


def convert(array, layout: str) -> np.ndarray:
    """Our layout -> HF's, and (being its own inverse) HF's -> ours."""
    array = np.asarray(array)
    return np.ascontiguousarray(array.T) if layout == TRANSPOSE else array


def get_path(tree: dict, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def set_path(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value
