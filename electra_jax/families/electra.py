"""ELECTRA (google-research/electra): a small generator and a discriminator sharing one embedding module,
pretrained by replaced-token detection on packed segments with a WordPiece vocabulary; exported as the two
HF towers ElectraForPreTraining and ElectraForMaskedLM; fine-tuned from the discriminator."""
from __future__ import annotations

from electra_jax.config import Config
from electra_jax import tf1
from electra_jax.families.family import Family, HFSide, TF1Side
from electra_jax.finetune.model import ElectraClassifier
from electra_jax.hf import bert as hf_bert
from electra_jax.hf import electra as hf
from electra_jax.hf.names import SAME, TRANSPOSE, electra_rows, electra_tf1_rows
from electra_jax.metrics import encoder_flops_per_token
from electra_jax.models.electra import Electra, tower_params
from electra_jax.objectives.electra import ElectraObjective


def train_flops_per_token(config: Config) -> float:
    """Forward + backward (3x forward) matmul FLOPs per input token of one ELECTRA step: both towers, their
    embedding projections, the discriminator head, and the generator head only at the masked positions."""
    m, seq_len = config.model, config.data.seq_len
    gen_h, disc_h, emb = m.generator_hidden_size, m.hidden_size, m.embedding_size
    forward = encoder_flops_per_token(m.num_layers, disc_h, m.intermediate_size, seq_len)
    forward += encoder_flops_per_token(m.generator_num_layers, gen_h, m.generator_intermediate_size, seq_len)
    forward += 2 * emb * disc_h * (emb != disc_h) + 2 * emb * gen_h * (emb != gen_h)  # projections
    forward += 2 * disc_h * disc_h + 2 * disc_h  # discriminator head
    predicted_fraction = config.max_predictions / seq_len
    forward += predicted_fraction * (2 * gen_h * emb + 2 * emb * m.vocab_size)
    return 3.0 * forward


def _linear(ours: str, theirs: str):
    return [(f"{ours}/kernel", f"{theirs}.weight", TRANSPOSE), (f"{ours}/bias", f"{theirs}.bias", SAME)]


FAMILY = Family(
    name="electra",
    model=Electra,
    classifier=ElectraClassifier,
    objective=ElectraObjective,
    data_format="electra",
    tokenizer="wordpiece",
    needs_word_starts=lambda config: config.objective.whole_word_masking,
    progress=(("f1", "replaced_f1"),),
    summary=(("generator loss", "generator_loss"), ("discriminator accuracy", "discriminator_accuracy"),
             ("replaced-token F1", "replaced_f1")),
    flops_per_token=train_flops_per_token,
    layerwise_depth=lambda model: model.num_layers,
    hf=HFSide(
        model_type="electra",
        architectures=("ElectraForPreTraining", "ElectraForMaskedLM", "ElectraModel"),
        base=hf.BASE,
        prefix=hf.PREFIX,
        rows=electra_rows,
        detect=hf.detect_architecture,
        config_problems=hf_bert.config_problems,  # ELECTRA's blocks are BERT's
        from_hf_config=lambda config_json, base: hf.model_config_from_hf(config_json, None, base),
        base_config=hf.base_config,
        export=hf.export,
        import_run=hf.import_pair,
        token_head=("ElectraForTokenClassification", _linear("classifier", "classifier")),
        qa_head=("ElectraForQuestionAnswering", _linear("classifier", "qa_outputs")),
        sequence_head=("ElectraForSequenceClassification", _linear("classifier_dense", "classifier.dense")
                       + _linear("classifier_out_proj", "classifier.out_proj")),
        subfolders=tuple(hf.TOWERS),
    ),
    model_options=lambda config: {"embedding_sharing": config.objective.embedding_sharing},
    body_params=lambda config, params: tower_params(params, config.objective.embedding_sharing, "discriminator"),
    tf1=TF1Side(
        marker="discriminator_predictions/",
        rows=electra_tf1_rows,
        model=tf1.electra_model,
        vocab_files=("vocab.txt",),
        tokenizer_class="ElectraTokenizer",
        training=tf1.electra_training,
    ),
)
