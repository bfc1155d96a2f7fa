"""BERT: imported models (e.g. multilingual BERT as a distillation teacher), adapted to a language by masked-LM
pretraining (`objectives/bert.py`), and the students `electra-jax distill` makes of them. One HF model
(BertForMaskedLM) each way, a WordPiece vocabulary."""
from __future__ import annotations

from electra_jax import tf1
from electra_jax.families.family import Family, HFSide, TF1Side
from electra_jax.finetune.model import BertClassifier
from electra_jax.hf import bert as hf
from electra_jax.hf.importer import import_single
from electra_jax.hf.names import BERT_TF1_DROPPED, SAME, TRANSPOSE, bert_rows, bert_tf1_rows
from electra_jax.metrics import distill_flops_per_token, encoder_flops_per_token
from electra_jax.models.bert import Bert
from electra_jax.objectives.bert import BertMlmObjective

CLASSIFIER_ROWS = [("classifier/kernel", "classifier.weight", TRANSPOSE), ("classifier/bias", "classifier.bias", SAME)]
QA_ROWS = [("classifier/kernel", "qa_outputs.weight", TRANSPOSE), ("classifier/bias", "qa_outputs.bias", SAME)]

def flops_per_token(config) -> float:
    """A distillation step's (teacher forward + student forward and backward), or a masked-LM step's: forward
    and backward (3x forward) of the encoder and of the MLM head at the masked positions."""
    if config.distill.student_layers:
        return distill_flops_per_token(config, config.model.num_layers)
    m, seq_len = config.model, config.data.seq_len
    forward = encoder_flops_per_token(m.num_layers, m.hidden_size, m.intermediate_size, seq_len)
    forward += config.max_predictions / seq_len * (2 * m.hidden_size ** 2 + 2 * m.hidden_size * m.vocab_size)
    return 3.0 * forward


FAMILY = Family(
    name="bert",
    model=Bert,
    classifier=BertClassifier,
    objective=BertMlmObjective,
    data_format="electra",  # packed segments, for masked-LM adaptation and distillation alike
    tokenizer="wordpiece",
    needs_word_starts=lambda config: config.objective.whole_word_masking,
    progress=(("hidden", "hidden_loss"), ("attention", "attention_loss"), ("logit", "logit_loss"),
              ("mlm", "mlm_loss"), ("mlm_acc", "mlm_accuracy")),
    summary=(("hidden-state MSE", "hidden_loss"), ("attention MSE", "attention_loss"), ("logit KL", "logit_loss"),
             ("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy")),
    flops_per_token=flops_per_token,
    layerwise_depth=lambda model: model.num_layers,
    distillation=True,
    hf=HFSide(
        model_type="bert",
        architectures=("BertForMaskedLM", "BertForPreTraining", "BertModel"),
        base=hf.BASE,
        prefix=hf.PREFIX,
        rows=bert_rows,
        detect=hf.detect_architecture,
        config_problems=hf.config_problems,
        from_hf_config=hf.model_config_from_hf,
        base_config=hf.base_config,
        export=hf.export,
        import_run=import_single,
        token_head=("BertForTokenClassification", CLASSIFIER_ROWS),
        qa_head=("BertForQuestionAnswering", QA_ROWS),
        sequence_head=("BertForSequenceClassification", CLASSIFIER_ROWS),
        read_tokenizer=hf.read_tokenizer,
        fresh_rows=hf.fresh_rows,
    ),
    tf1=TF1Side(
        marker="bert/encoder/layer_",
        rows=bert_tf1_rows,
        model=tf1.config_file_model("bert"),
        vocab_files=("vocab.txt",),
        config_file="bert_config.json",
        dropped=BERT_TF1_DROPPED,
    ),
)
