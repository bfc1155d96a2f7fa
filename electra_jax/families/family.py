"""What a model family declares: everything that differs between ELECTRA, ALBERT and BERT, so that the
trainer, export, import, fine-tuning and bench look the family up once and call it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Rows = list[tuple[str, str, str]]  # (our parameter path, HF tensor name, layout): see hf/names.py


@dataclass(frozen=True)
class HFSide:
    """The family's Hugging Face PyTorch side (`hf/<family>.py` and its rows in `hf/names.py`)."""
    model_type: str  # config.json's model_type
    architectures: tuple[str, ...]  # the HF classes it reads (and, the first ones, writes)
    base: str  # the body alone (e.g. ElectraModel): what the fine-tuning heads extend
    prefix: str  # of the body inside the task models ("electra.")
    rows: Callable[..., Rows]  # (ModelConfig, HF architecture) -> rows
    detect: Callable[[dict, dict], str]  # (config.json, tensors) -> which architecture a folder holds
    config_problems: Callable[[dict], list[str]]  # what in a config.json we cannot represent
    from_hf_config: Callable  # (config.json, base ModelConfig) -> ModelConfig
    base_config: Callable  # ModelConfig -> config.json of the base model
    export: Callable[..., str]  # (config, params, run_dir, step, metrics, out) -> what it wrote
    import_run: Callable[..., Path]  # (source, out_dir, generator, base config path, log) -> run directory
    token_head: tuple[str, Rows]  # (…ForTokenClassification, the head's rows)
    sequence_head: tuple[str, Rows]  # (…ForSequenceClassification, the head's rows)
    qa_head: tuple[str, Rows]  # (…ForQuestionAnswering, its qa_outputs rows: our token head's two outputs)
    read_tokenizer: Callable | None = None  # folder -> (lowercase, strip_accents, write(folder)); one-model families
    fresh_rows: Callable | None = None  # (ModelConfig, architecture) -> our parameters a file of it lacks
    subfolders: tuple[str, ...] = ()  # the model folders its export writes inside OUT_DIR (ELECTRA's two towers)


@dataclass(frozen=True)
class TF1Side:
    """How google-research's TensorFlow 1 code stores the family's pretraining checkpoints (`tf1.py`)."""
    marker: str  # a variable prefix only this family's checkpoints have
    rows: Callable[..., Rows]  # ModelConfig -> (our path, TF1 variable name, layout)
    model: Callable  # (variables, hparams, Config) -> ModelConfig: the sizes, from the shapes or the config file
    vocab_files: tuple[str, ...]  # looked for beside the checkpoint
    tokenizer_class: str = "BertTokenizer"  # for a WordPiece vocabulary
    config_file: str | None = None  # the sizes' file beside the checkpoint (albert_config.json)
    dropped: tuple[str, ...] = ()  # heads with no counterpart here, named in the report
    training: Callable | None = None  # (Config, hparams) -> (Config with the run's optimizer and schedule, taken)
    fixed: Callable | None = None  # (ModelConfig, rows) -> (rows, {our path: value}): tensors the TF model lacks


@dataclass(frozen=True)
class Family:
    name: str  # model.architecture
    model: type  # the Flax module a run's parameters belong to
    classifier: type  # its body with a token or sequence head: (ModelConfig, num_labels, per_token)
    objective: Callable  # (config, model, specials, word_starts_V) -> Objective
    data_format: str  # "electra" (packed segments) or "albert" (sentence pairs with an order label)
    tokenizer: str  # "wordpiece" or "sentencepiece": what a run trains for itself
    needs_word_starts: Callable  # Config -> does the objective mask whole words (word_starts_V from the tokenizer)?
    progress: tuple[tuple[str, str], ...]  # (label, metric) on the progress bar
    summary: tuple[tuple[str, str], ...]  # (label, metric) in the closing lines
    flops_per_token: Callable  # Config -> model FLOPs of one training step per input token
    layerwise_depth: Callable  # ModelConfig -> layers with their own parameters (layerwise lr decay)
    hf: HFSide
    model_options: Callable = lambda config: {}  # Config -> the module's options beyond the ModelConfig
    body_params: Callable = lambda config, params: params  # (Config, params) -> what the fine-tuning body reads
    distillation: bool = False  # its models are also teachers and students of `electra-jax distill`
    tf1: TF1Side | None = None  # its google-research TensorFlow 1 checkpoints

    def build(self, config) -> object:
        """The Flax module of a run with this config."""
        return self.model(config.model, **self.model_options(config))

    def trained_by(self, config) -> str:
        """The command that trains a run of this config: `distill` for a distillation student, else `pretrain`."""
        return "distill" if self.distillation and config.distill.student_layers else "pretrain"

    def next_steps(self, run_dir: Path) -> str:
        """What a user does with an imported run directory of this family."""
        if not self.distillation:
            return f"continue with: electra-jax pretrain --config {run_dir}/config.yaml --run-dir {run_dir}"
        return (f"fine-tune with: electra-jax finetune --init {run_dir} ...; adapt it by masked-LM with: "
                f"electra-jax pretrain --config {run_dir}/config.yaml --run-dir {run_dir} data.corpus=[TEXT] "
                f"(80/10/10 masking: objective.mask_token_prob=0.8 objective.random_token_prob=0.1); or distil it "
                f"with: electra-jax distill --teacher {run_dir} ...")


def shown(table: tuple[tuple[str, str], ...], values: dict) -> list[tuple[str, str]]:
    """The (label, metric) pairs of `table` that these values hold (a switched-off loss is not shown)."""
    return [(label, key) for label, key in table if key in values]
