"""BERT: imported models (e.g. multilingual BERT as a distillation teacher) and the students distilled from
them; no pretraining objective here (`electra-jax distill` trains it). One HF model (BertForMaskedLM) each
way, a WordPiece vocabulary."""
from __future__ import annotations

from electra_jax.families.family import Family, HFSide
from electra_jax.finetune.model import BertClassifier
from electra_jax.hf import bert as hf
from electra_jax.hf.importer import import_single
from electra_jax.hf.names import SAME, TRANSPOSE, bert_rows
from electra_jax.metrics import distill_flops_per_token
from electra_jax.models.bert import Bert

CLASSIFIER_ROWS = [("classifier/kernel", "classifier.weight", TRANSPOSE), ("classifier/bias", "classifier.bias", SAME)]
QA_ROWS = [("classifier/kernel", "qa_outputs.weight", TRANSPOSE), ("classifier/bias", "qa_outputs.bias", SAME)]

FAMILY = Family(
    name="bert",
    model=Bert,
    classifier=BertClassifier,
    objective=None,
    data_format="electra",  # a distillation student reads packed segments
    tokenizer="wordpiece",
    needs_word_starts=lambda config: False,
    progress=(("hidden", "hidden_loss"), ("attention", "attention_loss"), ("logit", "logit_loss"),
              ("mlm_acc", "mlm_accuracy")),
    summary=(("hidden-state MSE", "hidden_loss"), ("attention MSE", "attention_loss"), ("logit KL", "logit_loss"),
             ("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy")),
    flops_per_token=lambda config: distill_flops_per_token(config, config.model.num_layers),
    layerwise_depth=lambda model: model.num_layers,
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
)
