"""The name tables between our ELECTRA, ALBERT and BERT parameters and Hugging Face's PyTorch state dicts.

Each row is (our parameter path, HF tensor name, layout, TF1 variable name). `transpose` marks linear kernels:
Flax stores (in, out), PyTorch (out, in). Both layouts are their own inverse, so export and import walk the
same rows in opposite directions. The TF1 column names the variable of google-research's TensorFlow 1 code
(electra, albert, bert) under its tower or `bert/` scope; TF1 stores kernels (in, out) as Flax does, so only
the rows marked `tf_layout` (ALBERT's and BERT's `output_weights`, stored (out, in)) are transposed.
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
    tf: str = ""  # TF1 variable name, without the tower's scope ("electra/", "generator/", "bert/")
    tf_layout: str = SAME


EMBEDDINGS = [
    Row("embeddings/word_embeddings/embedding", "embeddings.word_embeddings.weight", SAME, "embeddings/word_embeddings"),
    Row("embeddings/position_embeddings/embedding", "embeddings.position_embeddings.weight", SAME,
        "embeddings/position_embeddings"),
    Row("embeddings/token_type_embeddings/embedding", "embeddings.token_type_embeddings.weight", SAME,
        "embeddings/token_type_embeddings"),
    Row("embeddings/LayerNorm/scale", "embeddings.LayerNorm.weight", SAME, "embeddings/LayerNorm/gamma"),
    Row("embeddings/LayerNorm/bias", "embeddings.LayerNorm.bias", SAME, "embeddings/LayerNorm/beta"),
]
EMBEDDINGS_PROJECT = [  # only when embedding_size != the tower's hidden size; TF1: right under the tower's scope
    Row("{tower}/embeddings_project/kernel", "embeddings_project.weight", TRANSPOSE, "embeddings_project/kernel"),
    Row("{tower}/embeddings_project/bias", "embeddings_project.bias", SAME, "embeddings_project/bias"),
]
# The shared Transformer block: our path inside it, BERT/ELECTRA's HF name, ALBERT's HF name, layout, then the
# TF1 names: BERT/ELECTRA's (under encoder/layer_{i}/), ALBERT's (under encoder/transformer/group_{g}/inner_group_{i}/).
BLOCK = [
    ("attention/query/kernel", "attention.self.query.weight", "attention.query.weight", TRANSPOSE,
     "attention/self/query/kernel", "attention_1/self/query/kernel"),
    ("attention/query/bias", "attention.self.query.bias", "attention.query.bias", SAME,
     "attention/self/query/bias", "attention_1/self/query/bias"),
    ("attention/key/kernel", "attention.self.key.weight", "attention.key.weight", TRANSPOSE,
     "attention/self/key/kernel", "attention_1/self/key/kernel"),
    ("attention/key/bias", "attention.self.key.bias", "attention.key.bias", SAME,
     "attention/self/key/bias", "attention_1/self/key/bias"),
    ("attention/value/kernel", "attention.self.value.weight", "attention.value.weight", TRANSPOSE,
     "attention/self/value/kernel", "attention_1/self/value/kernel"),
    ("attention/value/bias", "attention.self.value.bias", "attention.value.bias", SAME,
     "attention/self/value/bias", "attention_1/self/value/bias"),
    ("attention/output/kernel", "attention.output.dense.weight", "attention.dense.weight", TRANSPOSE,
     "attention/output/dense/kernel", "attention_1/output/dense/kernel"),
    ("attention/output/bias", "attention.output.dense.bias", "attention.dense.bias", SAME,
     "attention/output/dense/bias", "attention_1/output/dense/bias"),
    ("attention_LayerNorm/scale", "attention.output.LayerNorm.weight", "attention.LayerNorm.weight", SAME,
     "attention/output/LayerNorm/gamma", "LayerNorm/gamma"),
    ("attention_LayerNorm/bias", "attention.output.LayerNorm.bias", "attention.LayerNorm.bias", SAME,
     "attention/output/LayerNorm/beta", "LayerNorm/beta"),
    ("intermediate/kernel", "intermediate.dense.weight", "ffn.weight", TRANSPOSE,
     "intermediate/dense/kernel", "ffn_1/intermediate/dense/kernel"),
    ("intermediate/bias", "intermediate.dense.bias", "ffn.bias", SAME,
     "intermediate/dense/bias", "ffn_1/intermediate/dense/bias"),
    ("output/kernel", "output.dense.weight", "ffn_output.weight", TRANSPOSE,
     "output/dense/kernel", "ffn_1/intermediate/output/dense/kernel"),
    ("output/bias", "output.dense.bias", "ffn_output.bias", SAME,
     "output/dense/bias", "ffn_1/intermediate/output/dense/bias"),
    ("output_LayerNorm/scale", "output.LayerNorm.weight", "full_layer_layer_norm.weight", SAME,
     "output/LayerNorm/gamma", "LayerNorm_1/gamma"),
    ("output_LayerNorm/bias", "output.LayerNorm.bias", "full_layer_layer_norm.bias", SAME,
     "output/LayerNorm/beta", "LayerNorm_1/beta"),
]
LAYER = [Row(f"{{tower}}/encoder/layer_{{i}}/{ours}", f"encoder.layer.{{i}}.{bert}", layout,  # per layer {i}
             f"encoder/layer_{{i}}/{bert_tf}") for ours, bert, _, layout, bert_tf, _ in BLOCK]
DISCRIMINATOR_HEAD = [  # ElectraForPreTraining; names without the "electra." prefix are the head's own
    Row("discriminator_predictions_dense/kernel", "discriminator_predictions.dense.weight", TRANSPOSE,
        "discriminator_predictions/dense/kernel"),
    Row("discriminator_predictions_dense/bias", "discriminator_predictions.dense.bias", SAME,
        "discriminator_predictions/dense/bias"),
    Row("discriminator_predictions_prediction/kernel", "discriminator_predictions.dense_prediction.weight", TRANSPOSE,
        "discriminator_predictions/dense_1/kernel"),
    Row("discriminator_predictions_prediction/bias", "discriminator_predictions.dense_prediction.bias", SAME,
        "discriminator_predictions/dense_1/bias"),
]
GENERATOR_HEAD = [  # ElectraForMaskedLM; its decoder weight is tied to the word embeddings
    Row("generator_predictions_dense/kernel", "generator_predictions.dense.weight", TRANSPOSE,
        "generator_predictions/dense/kernel"),
    Row("generator_predictions_dense/bias", "generator_predictions.dense.bias", SAME, "generator_predictions/dense/bias"),
    Row("generator_predictions_LayerNorm/scale", "generator_predictions.LayerNorm.weight", SAME,
        "generator_predictions/LayerNorm/gamma"),
    Row("generator_predictions_LayerNorm/bias", "generator_predictions.LayerNorm.bias", SAME,
        "generator_predictions/LayerNorm/beta"),
    Row("generator_lm_head_bias", "generator_lm_head.bias", SAME, "generator_predictions/output_bias"),
]
TIED_DECODER = "generator_lm_head.weight"  # HF re-ties it on load; we never store it
ENCODER_PREFIX = "electra."  # of the body in ElectraForPreTraining / ElectraForMaskedLM (not ElectraModel)

# Which rows and which tower each HF architecture holds.
ARCHITECTURES = {
    "ElectraForPreTraining": ("discriminator", DISCRIMINATOR_HEAD),
    "ElectraForMaskedLM": ("generator", GENERATOR_HEAD),
    "ElectraModel": ("discriminator", []),
}


def tower_sizes(model: ModelConfig, tower: str) -> tuple[int, int, int, int]:
    """(hidden, heads, intermediate, layers) of one tower."""
    if tower == "generator":
        return (model.generator_hidden_size, model.generator_num_heads, model.generator_intermediate_size,
                model.generator_num_layers)
    return model.hidden_size, model.num_heads, model.intermediate_size, model.num_layers


def electra_rows(model: ModelConfig, hf_class: str) -> list[tuple[str, str, str]]:
    """(our path, full HF name, layout) for every tensor of an ELECTRA `hf_class` (an HF class name) under `model`.
    The `embeddings/` rows name the tower's own tables: read and write them through `models.electra.tower_params`."""
    tower, head = ARCHITECTURES[hf_class]
    body_prefix = "" if hf_class == "ElectraModel" else ENCODER_PREFIX
    hidden, _, _, layers = tower_sizes(model, tower)
    body = list(EMBEDDINGS)
    if model.embedding_size != hidden:
        body += EMBEDDINGS_PROJECT
    body += [row._replace(ours=row.ours.replace("{i}", str(i)), hf=row.hf.replace("{i}", str(i)))
             for i in range(layers) for row in LAYER]
    rows = [(r.ours.replace("{tower}", tower), body_prefix + r.hf, r.layout) for r in body]
    return rows + [(r.ours, r.hf, r.layout) for r in head]


TF1_TOWER_SCOPES = {"discriminator": "electra", "generator": "generator"}  # google-research/electra's scopes


def electra_tf1_rows(model: ModelConfig) -> list[tuple[str, str, str]]:
    """(our path, TF1 variable name, layout) for every tensor of a google-research/electra pretraining
    checkpoint: the shared embeddings once (under `electra/embeddings`), each tower's body under its scope,
    the two heads at the top."""
    rows = [(r.ours, f"electra/{r.tf}", r.tf_layout) for r in EMBEDDINGS]
    for tower, scope in TF1_TOWER_SCOPES.items():
        hidden, _, _, layers = tower_sizes(model, tower)
        body = (EMBEDDINGS_PROJECT if model.embedding_size != hidden else []) + [
            row._replace(ours=row.ours.replace("{i}", str(i)), tf=row.tf.replace("{i}", str(i)))
            for i in range(layers) for row in LAYER]
        rows += [(r.ours.replace("{tower}", tower), f"{scope}/{r.tf}", r.tf_layout) for r in body]
    return rows + [(r.ours, r.tf, r.tf_layout) for r in DISCRIMINATOR_HEAD + GENERATOR_HEAD]


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


# ---------------------------------------------------------------------------- ALBERT

ALBERT_PREFIX = "albert."  # of the body in AlbertForPreTraining / AlbertForMaskedLM (not AlbertModel)
ALBERT_MAPPING_IN = [  # always present in HF, even when embedding and hidden sizes match (TF1: only then)
    Row("embedding_hidden_mapping_in/kernel", "encoder.embedding_hidden_mapping_in.weight", TRANSPOSE,
        "encoder/embedding_hidden_mapping_in/kernel"),
    Row("embedding_hidden_mapping_in/bias", "encoder.embedding_hidden_mapping_in.bias", SAME,
        "encoder/embedding_hidden_mapping_in/bias"),
]
ALBERT_LAYER = [  # one per shared block: layer {i} of group {g}
    Row(f"group_{{g}}_layer_{{i}}/{ours}", f"encoder.albert_layer_groups.{{g}}.albert_layers.{{i}}.{albert}", layout,
        f"encoder/transformer/group_{{g}}/inner_group_{{i}}/{albert_tf}")
    for ours, _, albert, layout, _, albert_tf in BLOCK]
ALBERT_POOLER = [Row("pooler/kernel", "pooler.weight", TRANSPOSE, "pooler/dense/kernel"),
                 Row("pooler/bias", "pooler.bias", SAME, "pooler/dense/bias")]
# TF1: the heads are under cls/, outside the bert/ scope of the body.
ALBERT_MLM_HEAD = [  # the decoder weight is tied to the word embeddings, its bias to predictions.bias
    Row("predictions_dense/kernel", "predictions.dense.weight", TRANSPOSE, "cls/predictions/transform/dense/kernel"),
    Row("predictions_dense/bias", "predictions.dense.bias", SAME, "cls/predictions/transform/dense/bias"),
    Row("predictions_LayerNorm/scale", "predictions.LayerNorm.weight", SAME, "cls/predictions/transform/LayerNorm/gamma"),
    Row("predictions_LayerNorm/bias", "predictions.LayerNorm.bias", SAME, "cls/predictions/transform/LayerNorm/beta"),
    Row("predictions_bias", "predictions.bias", SAME, "cls/predictions/output_bias"),
]
ALBERT_SOP_HEAD = [  # TF1 stores the (2, hidden) output_weights as PyTorch does
    Row("sop_classifier/kernel", "sop_classifier.classifier.weight", TRANSPOSE, "cls/seq_relationship/output_weights",
        TRANSPOSE),
    Row("sop_classifier/bias", "sop_classifier.classifier.bias", SAME, "cls/seq_relationship/output_bias"),
]
ALBERT_TIED = {"predictions.decoder.weight": ALBERT_PREFIX + "embeddings.word_embeddings.weight",
               "predictions.decoder.bias": "predictions.bias"}  # HF re-ties them on load; we never store them

# (rows added to the body, head rows) of each HF ALBERT architecture.
ALBERT_ARCHITECTURES = {
    "AlbertForPreTraining": (ALBERT_POOLER, ALBERT_MLM_HEAD + ALBERT_SOP_HEAD),
    "AlbertForMaskedLM": ([], ALBERT_MLM_HEAD),
    "AlbertModel": (ALBERT_POOLER, []),
}


def albert_rows(model: ModelConfig, hf_class: str) -> list[tuple[str, str, str]]:
    """(our path, full HF name, layout) for every tensor of an ALBERT `hf_class` under `model`."""
    pooler, head = ALBERT_ARCHITECTURES[hf_class]
    prefix = "" if hf_class == "AlbertModel" else ALBERT_PREFIX
    layers = [row._replace(ours=row.ours.format(g=g, i=i), hf=row.hf.format(g=g, i=i))
              for g in range(model.num_hidden_groups) for i in range(model.inner_group_num) for row in ALBERT_LAYER]
    body = [*EMBEDDINGS, *ALBERT_MAPPING_IN, *layers, *pooler]
    return [(r.ours, prefix + r.hf, r.layout) for r in body] + [(r.ours, r.hf, r.layout) for r in head]


def _tf1_rows(body: list[Row], head: list[Row]) -> list[tuple[str, str, str]]:
    """(our path, TF1 name, layout): the body under google-research/albert's and /bert's `bert/` scope."""
    return [(r.ours, f"bert/{r.tf}", r.tf_layout) for r in body] + [(r.ours, r.tf, r.tf_layout) for r in head]


def albert_tf1_rows(model: ModelConfig) -> list[tuple[str, str, str]]:
    """Every tensor of a google-research/albert pretraining checkpoint (the model, the MLM and SOP heads)."""
    layers = [row._replace(ours=row.ours.format(g=g, i=i), tf=row.tf.format(g=g, i=i))
              for g in range(model.num_hidden_groups) for i in range(model.inner_group_num) for row in ALBERT_LAYER]
    return _tf1_rows([*EMBEDDINGS, *ALBERT_MAPPING_IN, *layers, *ALBERT_POOLER], ALBERT_MLM_HEAD + ALBERT_SOP_HEAD)


# ---------------------------------------------------------------------------- BERT

BERT_PREFIX = "bert."  # of the body in BertForMaskedLM / BertForPreTraining (not BertModel)
BERT_LAYER = [Row(f"encoder/layer_{{i}}/{ours}", f"encoder.layer.{{i}}.{bert}", layout, f"encoder/layer_{{i}}/{bert_tf}")
              for ours, bert, _, layout, bert_tf, _ in BLOCK]
BERT_POOLER = [Row("pooler/kernel", "pooler.dense.weight", TRANSPOSE, "pooler/dense/kernel"),
               Row("pooler/bias", "pooler.dense.bias", SAME, "pooler/dense/bias")]
BERT_MLM_HEAD = [  # the decoder weight is tied to the word embeddings, its bias to cls.predictions.bias
    Row("predictions_dense/kernel", "cls.predictions.transform.dense.weight", TRANSPOSE,
        "cls/predictions/transform/dense/kernel"),
    Row("predictions_dense/bias", "cls.predictions.transform.dense.bias", SAME, "cls/predictions/transform/dense/bias"),
    Row("predictions_LayerNorm/scale", "cls.predictions.transform.LayerNorm.weight", SAME,
        "cls/predictions/transform/LayerNorm/gamma"),
    Row("predictions_LayerNorm/bias", "cls.predictions.transform.LayerNorm.bias", SAME,
        "cls/predictions/transform/LayerNorm/beta"),
    Row("predictions_bias", "cls.predictions.bias", SAME, "cls/predictions/output_bias"),
]
BERT_TF1_DROPPED = ("cls/seq_relationship/",)  # the next-sentence head of google-research/bert's checkpoints
BERT_TIED = {"cls.predictions.decoder.weight": BERT_PREFIX + "embeddings.word_embeddings.weight",
             "cls.predictions.decoder.bias": "cls.predictions.bias"}
BERT_DROPPED = ("cls.seq_relationship.",)  # BertForPreTraining's next-sentence head: not part of our BERT

# (rows added to the body, head rows) of each HF BERT architecture.
BERT_ARCHITECTURES = {
    "BertForMaskedLM": ([], BERT_MLM_HEAD),  # transformers builds it without the pooler
    "BertForPreTraining": (BERT_POOLER, BERT_MLM_HEAD),
    "BertModel": (BERT_POOLER, []),
}


def bert_rows(model: ModelConfig, hf_class: str) -> list[tuple[str, str, str]]:
    """(our path, full HF name, layout) for every tensor of a BERT `hf_class` under `model`."""
    pooler, head = BERT_ARCHITECTURES[hf_class]
    prefix = "" if hf_class == "BertModel" else BERT_PREFIX
    layers = [row._replace(ours=row.ours.format(i=i), hf=row.hf.format(i=i))
              for i in range(model.num_layers) for row in BERT_LAYER]
    body = [*EMBEDDINGS, *layers, *pooler]
    return [(r.ours, prefix + r.hf, r.layout) for r in body] + [(r.ours, r.hf, r.layout) for r in head]


def bert_tf1_rows(model: ModelConfig) -> list[tuple[str, str, str]]:
    """Every tensor of a google-research/bert pretraining checkpoint but its next-sentence head."""
    layers = [row._replace(ours=row.ours.format(i=i), tf=row.tf.format(i=i))
              for i in range(model.num_layers) for row in BERT_LAYER]
    return _tf1_rows([*EMBEDDINGS, *layers, *BERT_POOLER], BERT_MLM_HEAD)


# Tensors a file may store beside what they are tied to (HF re-ties them on load): name -> the source.
TIED = {TIED_DECODER: ENCODER_PREFIX + "embeddings.word_embeddings.weight", **ALBERT_TIED, **BERT_TIED}
