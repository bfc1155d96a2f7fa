"""ALBERT (google-research/albert): factorized embeddings and cross-layer parameter sharing, pretrained by
whole-word n-gram MLM + sentence-order prediction on sentence pairs with a SentencePiece vocabulary; one HF
model (AlbertForPreTraining) each way."""
from __future__ import annotations

from electra_jax.config import Config
from electra_jax import tf1
from electra_jax.families.family import Family, HFSide, TF1Side
from electra_jax.finetune.model import AlbertClassifier
from electra_jax.hf import albert as hf
from electra_jax.hf.importer import import_single
from electra_jax.hf.names import SAME, TRANSPOSE, albert_rows, albert_tf1_rows
from electra_jax.metrics import encoder_flops_per_token
from electra_jax.models.albert import Albert
from electra_jax.objectives.albert import AlbertObjective


def train_flops_per_token(config: Config) -> float:
    """Forward + backward (3x forward) matmul FLOPs per input token of one ALBERT step: shared layers cost
    their compute on every application; the MLM head runs only at the masked positions."""
    m, seq_len = config.model, config.data.seq_len
    applications = m.num_layers * m.inner_group_num
    forward = encoder_flops_per_token(applications, m.hidden_size, m.intermediate_size, seq_len)
    forward += 2 * m.embedding_size * m.hidden_size  # embedding_hidden_mapping_in
    forward += (2 * m.hidden_size * m.hidden_size + 4 * m.hidden_size) / seq_len  # pooler + SOP, once per sequence
    predicted_fraction = config.max_predictions / seq_len
    forward += predicted_fraction * (2 * m.hidden_size * m.embedding_size + 2 * m.embedding_size * m.vocab_size)
    return 3.0 * forward


CLASSIFIER_ROWS = [("classifier/kernel", "classifier.weight", TRANSPOSE), ("classifier/bias", "classifier.bias", SAME)]
QA_ROWS = [("classifier/kernel", "qa_outputs.weight", TRANSPOSE), ("classifier/bias", "qa_outputs.bias", SAME)]

FAMILY = Family(
    name="albert",
    model=Albert,
    classifier=AlbertClassifier,
    objective=AlbertObjective,
    data_format="albert",
    tokenizer="sentencepiece",
    needs_word_starts=lambda config: True,
    progress=(("mlm_acc", "mlm_accuracy"), ("sop_acc", "sop_accuracy")),
    summary=(("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy"), ("SOP accuracy", "sop_accuracy")),
    flops_per_token=train_flops_per_token,
    layerwise_depth=lambda model: model.num_hidden_groups,  # a group of shared blocks is one layer
    hf=HFSide(
        model_type="albert",
        architectures=("AlbertForPreTraining", "AlbertForMaskedLM", "AlbertModel"),
        base=hf.BASE,
        prefix=hf.PREFIX,
        rows=albert_rows,
        detect=hf.detect_architecture,
        config_problems=hf.config_problems,
        from_hf_config=hf.model_config_from_hf,
        base_config=hf.base_config,
        export=hf.export,
        import_run=import_single,
        token_head=("AlbertForTokenClassification", CLASSIFIER_ROWS),
        qa_head=("AlbertForQuestionAnswering", QA_ROWS),
        sequence_head=("AlbertForSequenceClassification", CLASSIFIER_ROWS),
        read_tokenizer=hf.read_tokenizer,
        fresh_rows=hf.fresh_rows,
    ),
    tf1=TF1Side(
        marker="bert/encoder/transformer/",
        rows=albert_tf1_rows,
        model=tf1.config_file_model("albert"),
        vocab_files=("30k-clean.model", "spiece.model", "*.model"),
        config_file="albert_config.json",
        fixed=tf1.albert_identity_mapping,
    ),
)
