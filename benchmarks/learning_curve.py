"""Learning-curve parity: our ELECTRA step against the HF PyTorch reference step, on the same batches of real text.

Both sides start from the same weights (ours, initialised with the seed and exported through the export name
table into `ElectraForMaskedLM` + `ElectraForPreTraining` with shared embeddings and the tied generator head),
read the same prepared batches of the shared Spanish text (Bible, LibreOffice help, Debian handbook; 16k cased
WordPiece, seq 128), and train with the same rule: ELECTRA masking (round(15%) of the non-special tokens, at
most `max_predictions`, 85% [MASK]), generator logits at the masked positions, a sample from the generator at
temperature 1 (Gumbel-max on the PyTorch side, inverse CDF on ours: the same distribution), discriminator
loss weight 50 over the real tokens, dropout 0.1, global-norm clipping at 1, AdamW (eps 1e-6, weight decay
0.01 off biases and LayerNorm) and the same warmup + linear decay. Masking, sampling and dropout draw from each
side's own random streams, so two seeds of one side give the spread to compare the sides against.

Every `--eval-every` steps both models are evaluated by the same PyTorch code (ours after export), without
dropout, on fixed held-out batches (whole documents held out by `prepare --eval-fraction`) with fixed masks
and fixed sampling uniforms. Prints per window of `--window` steps, for both sides (mean +- sd over seeds):
generator and discriminator loss and replaced-token F1 of the training batches, then the held-out losses,
with the ratio ours / reference and the seed-to-seed spread; writes results.json and learning_curve.png.

    python benchmarks/learning_curve.py [--steps 2000] [--seeds 2] [--window 250] [--eval-every 250]
                                        [--out runs/learning_curve] [--sides jax,torch] [section.key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAW_TEXT = REPO.parent / "shared" / "data" / "raw_text"
SPANISH = ["bible_es_reina_valera_1909.txt", "libreoffice_help_es.txt", "debian_handbook_es.txt"]
PARAGRAPHS_PER_DOCUMENT = 20  # the files have no blank lines: documents of 20 paragraphs, in file order
# The smoke model at sequence length 128: small enough for thousands of steps on two cores.
MODEL = ["model.embedding_size=64", "model.hidden_size=128", "model.num_layers=2", "model.num_heads=2",
         "model.intermediate_size=512", "model.generator_fraction=0.25", "model.max_position_embeddings=128",
         "data.seq_len=128", "train.batch_size=32", "optimizer.learning_rate=5e-4", "schedule.kind=linear",
         "schedule.warmup_steps=100", "objective.max_predictions=0", "mesh.data=1"]
EVAL_BATCHES = 8
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4


# ---------------------------------------------------------------------------- data

def spanish_corpus(out: Path) -> Path:
    """The shared Spanish text as one file, documents of PARAGRAPHS_PER_DOCUMENT paragraphs."""
    if out.is_file():
        return out
    missing = [name for name in SPANISH if not (RAW_TEXT / name).is_file()]
    if missing:
        sys.exit(f"learning_curve: the shared text {RAW_TEXT} lacks {', '.join(missing)} (only the project's own "
                 f"checkout has ../shared/data)")
    out.parent.mkdir(parents=True, exist_ok=True)
    documents = []
    for name in SPANISH:
        lines = [line.strip() for line in (RAW_TEXT / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        documents += ["\n".join(lines[i:i + PARAGRAPHS_PER_DOCUMENT])
                      for i in range(0, len(lines), PARAGRAPHS_PER_DOCUMENT)]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    tmp.rename(out)
    return out


def prepared_spanish(work: Path, vocab_size: int, seq_len: int, eval_fraction: float) -> Path:
    """Tokenizer + packed shards (with held-out documents), made once in `work`."""
    from electra_jax.data.prepare import PackOptions, prepare
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
    corpus = spanish_corpus(work / "es.txt")
    tokenizer = work / f"tokenizer-{vocab_size}"
    if not (tokenizer / "tokenizer.json").is_file():
        save_tokenizer(train_wordpiece([corpus], vocab_size), tokenizer)
    folder = work / f"prepared-{vocab_size}-L{seq_len}"
    if not (folder / "metadata.json").is_file():
        prepare([str(corpus)], tokenizer, folder, PackOptions(seq_len=seq_len, eval_fraction=eval_fraction),
                workers=1, progress=False)
    return folder


def eval_probe(folder: Path, batch: int, max_predictions: int) -> list[dict]:
    """Fixed held-out batches with fixed masks and sampling uniforms, the same for every evaluation."""
    from electra_jax.data.loader import held_out_batches
    rng = np.random.default_rng(12345)
    probes = []
    for b in held_out_batches(folder, "eval", batch, EVAL_BATCHES):
        ids = b["input_ids"].astype(np.int64)
        maskable = (ids != PAD) & (ids != CLS) & (ids != SEP) & (ids != MASK)
        count = np.clip(np.round(maskable.sum(1) * 0.15), 1, max_predictions).astype(int)
        scores = np.where(maskable, rng.random(ids.shape), -1.0)
        positions = np.argsort(-scores, axis=1)[:, :max_predictions]
        weights = (np.arange(max_predictions)[None] < count[:, None]).astype(np.float32)
        positions = np.where(weights > 0, positions, 0)
        masked = ids.copy()
        use_mask = (rng.random(positions.shape) < 0.85) & (weights > 0)
        rows = np.nonzero(use_mask)
        masked[rows[0], positions[rows]] = MASK
        probes.append({"ids": ids, "segments": b["segment_ids"].astype(np.int64), "masked": masked,
                       "positions": positions, "weights": weights, "uniforms": rng.random(positions.shape)})
    return probes


# ---------------------------------------------------------------------------- the PyTorch side

def hf_pair(config, params=None):
    """(generator, discriminator) HF models sharing their embeddings and the tied head, with our `params`."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining
    from electra_jax.hf.electra import hf_config
    generator = ElectraForMaskedLM(ElectraConfig(**hf_config(config, "generator")))
    discriminator = ElectraForPreTraining(ElectraConfig(**hf_config(config, "discriminator")))
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
    if params is not None:
        load(generator, discriminator, config, params)
    return generator, discriminator


def load(generator, discriminator, config, params) -> None:
    import torch
    from electra_jax.hf.electra import state_dict
    for model, architecture in ((generator, "ElectraForMaskedLM"), (discriminator, "ElectraForPreTraining")):
        tensors = {name: torch.from_numpy(np.array(value)) for name, value in
                   state_dict(config, params, architecture).items()}
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if unexpected or [name for name in missing if name != "generator_lm_head.weight"]:
            raise RuntimeError(f"learning_curve: export rows do not fit {architecture}: {missing} {unexpected}")


def generator_logits(generator, masked, segments, attention, positions):
    hidden = generator.electra(masked, attention_mask=attention, token_type_ids=segments).last_hidden_state
    hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
    return generator.generator_lm_head(generator.generator_predictions(hidden))


def rtd_counts(logits, replaced, attention) -> dict:
    predicted = (logits > 0).float() * attention
    return {"tp": float((predicted * replaced).sum()), "predicted": float(predicted.sum()),
            "replaced": float(replaced.sum())}


def f1(counts: dict) -> float:
    precision = counts["tp"] / max(counts["predicted"], 1.0)
    recall = counts["tp"] / max(counts["replaced"], 1.0)
    return 2 * precision * recall / max(precision + recall, 1e-9)


class TorchSide:
    """The reference training step: ElectraForMaskedLM + ElectraForPreTraining, the original's objective."""

    def __init__(self, config, params, schedule, seed: int):
        import torch
        torch.manual_seed(seed)
        self.config = config
        self.generator, self.discriminator = hf_pair(config, params)
        named = {id(p): (n, p) for model in (self.generator, self.discriminator) for n, p in model.named_parameters()}
        decay = [p for n, p in named.values() if not ("bias" in n or "LayerNorm" in n)]
        no_decay = [p for n, p in named.values() if "bias" in n or "LayerNorm" in n]
        self.params = decay + no_decay
        o = config.optimizer
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
        # optax applies schedule(count) at the update made after `count` updates; LambdaLR's factor(k) likewise.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: float(schedule(k)) / o.learning_rate)

    def step(self, batch) -> dict:
        import torch
        import torch.nn.functional as F
        config, obj = self.config, self.config.objective
        P = config.max_predictions
        self.generator.train()
        self.discriminator.train()
        ids = torch.from_numpy(batch["input_ids"]).long()
        segments = torch.from_numpy(batch["segment_ids"]).long()
        attention = (ids != PAD).long()
        maskable = (ids != PAD) & (ids != CLS) & (ids != SEP) & (ids != MASK)
        count = maskable.sum(1).mul(obj.mask_prob).round().clamp(1, P)
        scores = torch.where(maskable, torch.rand(ids.shape), torch.full(ids.shape, -1.0))
        positions = scores.topk(P, dim=1).indices
        weights = (torch.arange(P)[None] < count[:, None]).float()
        positions = torch.where(weights > 0, positions, torch.zeros_like(positions))
        labels = ids.gather(1, positions)
        use_mask = (torch.rand(positions.shape) < obj.mask_token_prob) & (weights > 0)
        masked = ids.scatter(1, positions, torch.where(use_mask, torch.full_like(positions, MASK), labels))
        logits = generator_logits(self.generator, masked, segments, attention, positions)
        mlm = (F.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * weights).sum() / weights.sum()
        with torch.no_grad():
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape).clamp_min(1e-20)))
            sampled = (logits / obj.temperature + gumbel).argmax(-1)
        # Padded prediction slots point at position 0 ([CLS]) and write it back unchanged.
        corrupted = masked.scatter(1, positions, torch.where(weights > 0, sampled, masked.gather(1, positions)))
        token_mask = attention.float()
        replaced = (corrupted != ids).float() * token_mask
        disc_logits = self.discriminator(corrupted, attention_mask=attention, token_type_ids=segments).logits
        rtd = (F.binary_cross_entropy_with_logits(disc_logits, replaced, reduction="none") * token_mask).sum()
        rtd = rtd / token_mask.sum()
        loss = mlm + obj.discriminator_weight * rtd
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, config.optimizer.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        return {"generator_loss": float(mlm.detach()), "discriminator_loss": float(rtd.detach()),
                **rtd_counts(disc_logits.detach(), replaced, token_mask)}


def evaluate(generator, discriminator, probes) -> dict:
    """Held-out metrics of an HF pair: no dropout, the probes' fixed masks and sampling uniforms."""
    import torch
    import torch.nn.functional as F
    generator.eval()
    discriminator.eval()
    sums = {"mlm": 0.0, "hits": 0.0, "predictions": 0.0, "rtd": 0.0, "tokens": 0.0, "tp": 0.0, "predicted": 0.0,
            "replaced": 0.0}
    with torch.no_grad():
        for p in probes:
            ids, segments, masked = (torch.from_numpy(p[k]) for k in ("ids", "segments", "masked"))
            positions, weights = torch.from_numpy(p["positions"]), torch.from_numpy(p["weights"])
            attention = (ids != PAD).long()
            logits = generator_logits(generator, masked, segments, attention, positions).float()
            labels = ids.gather(1, positions)
            sums["mlm"] += float((F.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * weights).sum())
            sums["hits"] += float(((logits.argmax(-1) == labels).float() * weights).sum())
            sums["predictions"] += float(weights.sum())
            cdf = torch.softmax(logits.double(), -1).cumsum(-1)  # inverse CDF with the probe's uniforms
            sampled = torch.searchsorted(cdf, torch.from_numpy(p["uniforms"])[..., None] * cdf[..., -1:]).squeeze(-1)
            sampled = sampled.clamp(max=logits.shape[-1] - 1)
            corrupted = masked.scatter(1, positions, torch.where(weights > 0, sampled, masked.gather(1, positions)))
            token_mask = attention.float()
            replaced = (corrupted != ids).float() * token_mask
            disc = discriminator(corrupted, attention_mask=attention, token_type_ids=segments).logits
            sums["rtd"] += float((F.binary_cross_entropy_with_logits(disc, replaced, reduction="none")
                                  * token_mask).sum())
            sums["tokens"] += float(token_mask.sum())
            for key, value in rtd_counts(disc, replaced, token_mask).items():
                sums[key] += value
    return {"eval_generator_loss": sums["mlm"] / sums["predictions"],
            "eval_generator_accuracy": sums["hits"] / sums["predictions"],
            "eval_discriminator_loss": sums["rtd"] / sums["tokens"], "eval_replaced_f1": f1(sums)}


# ---------------------------------------------------------------------------- one run of one side

def run_side(side: str, config, folder: Path, seed: int, steps: int, eval_every: int, probes, log) -> list[dict]:
    """Per-step training metrics and, every `eval_every` steps, held-out metrics of one side and seed."""
    import dataclasses
    import jax
    from electra_jax.data.loader import PretrainingData
    from electra_jax.mesh import make_mesh
    from electra_jax.run_dir import special_ids
    from electra_jax.train import setup_training
    from electra_jax.data.prepare import read_metadata
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), special_ids(read_metadata(folder)))
    state = training.init()  # both sides start here
    data = PretrainingData(folder, config.train.batch_size, config.data.seed)
    reference = TorchSide(config, jax.device_get(state.params), training.schedule, seed) if side == "torch" else None
    probe_pair = hf_pair(config) if reference is None else None  # our parameters are evaluated through these
    records, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        batch = next(data)
        if reference is None:
            state, metrics = training.step_fn(state, {k: jax.device_put(v, training.batch_sharding)
                                                      for k, v in batch.items()})
            m = jax.device_get(metrics)
            precision, recall = float(m["replaced_precision"]), float(m["replaced_recall"])
            record = {"generator_loss": float(m["generator_loss"]), "discriminator_loss": float(m["discriminator_loss"]),
                      "replaced_f1": 2 * precision * recall / max(precision + recall, 1e-9)}
        else:
            counts = reference.step(batch)
            record = {"generator_loss": counts["generator_loss"], "discriminator_loss": counts["discriminator_loss"],
                      "replaced_f1": f1(counts)}
        record["step"] = step
        if step % eval_every == 0 or step == steps:
            if reference is None:
                load(*probe_pair, config, jax.device_get(state.params))
                record.update(evaluate(*probe_pair, probes))
            else:
                record.update(evaluate(reference.generator, reference.discriminator, probes))
            log(f"  {side} seed {seed} step {step}: train generator {record['generator_loss']:.3f}, held-out "
                f"generator {record['eval_generator_loss']:.3f}, discriminator {record['eval_discriminator_loss']:.4f}, "
                f"F1 {record['eval_replaced_f1']:.3f} ({time.perf_counter() - start:.0f} s)")
        records.append(record)
    return records


# ---------------------------------------------------------------------------- report

TRAIN_METRICS = [("generator loss", "generator_loss"), ("discriminator loss", "discriminator_loss"),
                 ("replaced-token F1", "replaced_f1")]
EVAL_METRICS = [("held-out generator loss", "eval_generator_loss"),
                ("held-out discriminator loss", "eval_discriminator_loss"),
                ("held-out replaced-token F1", "eval_replaced_f1"),
                ("held-out generator accuracy", "eval_generator_accuracy")]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def window_table(runs: dict, steps: int, window: int, metrics, eval_points=False) -> list[str]:
    """Markdown rows: per window (or eval point), each side's mean +- sd over seeds, the ratio ours / reference,
    and the spread between seeds (max - min of the seeds' values, per side)."""
    sides = [s for s in ("jax", "torch") if s in runs]
    lines = []
    for label, key in metrics:
        header = f"| {label} | " + " | ".join({"jax": "electra-jax", "torch": "HF PyTorch"}[s] for s in sides)
        header += " | ours / reference | seed spread (ours, reference) |" if len(sides) == 2 else " |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        ends = ([r["step"] for r in runs[sides[0]][0] if key in r] if eval_points
                else list(range(window, steps + 1, window)))
        for end in ends:
            per_side = {}
            for side in sides:
                values = []
                for records in runs[side]:
                    chosen = [r[key] for r in records if key in r and (r["step"] == end if eval_points
                                                                       else end - window < r["step"] <= end)]
                    values.append(statistics.fmean(chosen))
                per_side[side] = values
            name = f"step {end}" if eval_points else f"steps {end - window + 1}-{end}"
            cells = [f"{_mean_sd(v)[0]:.4f} +- {_mean_sd(v)[1]:.4f}" for v in per_side.values()]
            row = f"| {name} | " + " | ".join(cells)
            if len(sides) == 2:
                ratio = _mean_sd(per_side["jax"])[0] / max(_mean_sd(per_side["torch"])[0], 1e-12)
                spread = ", ".join(f"{max(v) - min(v):.4f}" for v in per_side.values())
                row += f" | {ratio:.3f} | {spread} |"
            else:
                row += " |"
            lines.append(row)
        lines.append("")
    return lines


def plot(runs: dict, out: Path, window: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("generator loss (train, window mean)", "generator_loss", False),
              ("discriminator loss (train, window mean)", "discriminator_loss", False),
              ("held-out generator loss", "eval_generator_loss", True),
              ("held-out replaced-token F1", "eval_replaced_f1", True)]
    colours = {"jax": "tab:blue", "torch": "tab:orange"}
    names = {"jax": "electra-jax", "torch": "HF PyTorch"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8))
    for axis, (title, key, points) in zip(axes, panels):
        for side, seeds in runs.items():
            for i, records in enumerate(seeds):
                kept = [r for r in records if key in r]
                steps, values = [r["step"] for r in kept], np.array([r[key] for r in kept])
                if not points:  # a moving window mean of the per-step values
                    values = np.convolve(values, np.ones(window) / window, mode="valid")
                    steps = steps[window - 1:]
                axis.plot(steps, values, marker="o" if points else None, markersize=3, color=colours[side],
                          alpha=0.8, linestyle="-" if i == 0 else "--", label=f"{names[side]} seed {i}")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--window", type=int, default=250, help="steps per row of the training-metric tables")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--sides", default="jax,torch", help="jax, torch or both")
    parser.add_argument("--out", default=str(REPO / "runs" / "learning_curve"))
    parser.add_argument("overrides", nargs="*", help="section.key=value on top of the benchmark's model")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(os.cpu_count())
    from electra_jax.config import load_config
    from electra_jax.host_memory import keep_freed_memory
    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(REPO / "configs" / "electra_smoke.yaml", [*MODEL, f"train.steps={args.steps}",
                                                                  *args.overrides])
    folder = prepared_spanish(out, args.vocab, config.data.seq_len, eval_fraction=0.02)
    from electra_jax.run_dir import with_vocab
    from electra_jax.data.prepare import read_metadata
    config = with_vocab(config, read_metadata(folder)["tokenizer"]["vocab_size"])
    probes = eval_probe(folder, config.train.batch_size, config.max_predictions)
    sides = args.sides.split(",")
    started = time.strftime("%Y-%m-%d %H:%M")
    runs = {side: [] for side in sides}
    for seed in range(args.seeds):
        for side in sides:
            runs[side].append(run_side(side, config, folder, seed, args.steps, args.eval_every, probes, print))
    m = config.model
    head = (f"ELECTRA L{m.num_layers} H{m.hidden_size} E{m.embedding_size} (generator H{m.generator_hidden_size}), "
            f"vocab {m.vocab_size}, batch {config.train.batch_size} x seq {config.data.seq_len}, "
            f"{config.max_predictions} predictions, lr {config.optimizer.learning_rate} (warmup "
            f"{config.schedule.warmup_steps}, {config.schedule.kind} decay over {args.steps}), {args.seeds} seeds; "
            f"held-out: {len(probes)} batches; started {started}")
    lines = [head, "", *window_table(runs, args.steps, args.window, TRAIN_METRICS),
             *window_table(runs, args.steps, args.window, EVAL_METRICS, eval_points=True)]
    print(machine.describe())
    print("\n".join(lines))
    (out / "results.json").write_text(json.dumps({"setup": head, "overrides": args.overrides, "runs": runs}) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(runs, out / "learning_curve.png", min(args.window, 100))
    print(f"results: {out / 'results.md'}, {out / 'results.json'}; plot: {out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
