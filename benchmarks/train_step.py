"""ELECTRA-small (paper dims) or ALBERT-base train step on this CPU: electra-jax against HF PyTorch, same run.

Both sides do the same work: ELECTRA masking, generator (ElectraForMaskedLM dims) logits only at the
masked positions, Gumbel sampling, discriminator (ElectraForPreTraining) on the corrupted input,
loss = MLM + 50 * RTD, global-norm clipping and AdamW, with the same thread count; each side is
timed in its own process, in rounds (jax, torch, jax, torch), so both sample the machine's load. Prints tokens/s
for each, their ratio, and each side's MFU against this CPU's fp32 matmul peak measured here. Both sides
keep freed host memory in the process, as the electra-jax CLI does (--default-malloc: neither does).

    python benchmarks/train_step.py [--model electra|albert] [--batch 32] [--seq 128] [--steps 5] [--rounds 2]
                                    [--ops auto|xla|cpu] [--default-malloc] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def matmul_peak_flops(side: str, size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul throughput of one framework on this CPU (FLOP/s)."""
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    if side == "jax":
        import jax
        import jax.numpy as jnp
        x = jnp.asarray(a)
        matmul = jax.jit(lambda x, y: x @ y)
        run = lambda: matmul(x, x).block_until_ready()  # noqa: E731
    else:
        import torch
        x = torch.from_numpy(a)
        run = lambda: torch.mm(x, x)  # noqa: E731
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def synthetic_batch(batch: int, seq: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, seq // 2], ids[:, -1] = 2, 3, 3  # [CLS] A [SEP] B [SEP]
    segments = np.zeros_like(ids)
    segments[:, seq // 2 + 1:] = 1
    return ids, segments


def synthetic_word_starts(vocab: int, seed: int = 0) -> np.ndarray:
    """Per token id: does it begin a word? About 70% do, as in a SentencePiece vocabulary."""
    return np.random.default_rng(seed).random(vocab) < 0.7


def sop_labels(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, batch).astype(np.int32)


def median_step_seconds(step, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):  # compile / allocator warm-up; async dispatch makes first steps lie
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def jax_step(config, ids, segments):
    import jax
    from electra_jax.mesh import make_mesh
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.train import setup_training

    specials = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    from electra_jax.families import family_of
    family = family_of(config.model)
    albert = family.data_format == "albert"
    word_starts = synthetic_word_starts(config.model.vocab_size) if family.needs_word_starts(config) else None
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), specials, word_starts)
    batch = {"input_ids": ids, "segment_ids": segments, **({"sop_label": sop_labels(len(ids))} if albert else {})}
    batch = {name: jax.device_put(array, training.batch_sharding) for name, array in batch.items()}
    holder = {"state": training.init()}

    def step():
        holder["state"], metrics = training.step_fn(holder["state"], batch)
        metrics["loss"].block_until_ready()

    return step


def torch_step(config, ids, segments, device: str = "cpu", autocast: bool = False):
    """The HF PyTorch step on `device` ("cpu" or "cuda"), in bf16 autocast with `autocast`."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    m, obj = config.model, config.objective
    common = dict(vocab_size=m.vocab_size, embedding_size=m.embedding_size, num_hidden_layers=m.num_layers,
                  max_position_embeddings=m.max_position_embeddings, hidden_act="gelu", layer_norm_eps=1e-12,
                  hidden_dropout_prob=m.dropout_rate, attention_probs_dropout_prob=m.attention_dropout_rate)
    generator = ElectraForMaskedLM(ElectraConfig(hidden_size=m.generator_hidden_size,
                                                 num_attention_heads=m.generator_num_heads,
                                                 intermediate_size=m.generator_intermediate_size, **common))
    discriminator = ElectraForPreTraining(ElectraConfig(hidden_size=m.hidden_size, num_attention_heads=m.num_heads,
                                                        intermediate_size=m.intermediate_size, **common))
    # ELECTRA sharing: one embedding module; the generator head tied to the shared word embeddings.
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
    generator.to(device)
    discriminator.to(device)
    params = {id(p): p for p in [*generator.parameters(), *discriminator.parameters()]}.values()
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.optimizer.learning_rate, eps=1e-6)
    generator.train()
    discriminator.train()
    input_ids = torch.from_numpy(ids).long().to(device)
    token_types = torch.from_numpy(segments).long().to(device)
    attention = torch.ones_like(input_ids)
    maskable = (input_ids != 0) & (input_ids != 2) & (input_ids != 3) & (input_ids != 4)
    num_predict = maskable.sum(1).mul(obj.mask_prob).round().clamp(1, obj.max_predictions)
    all_params = list(params)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            forward_backward()
        torch.nn.utils.clip_grad_norm_(all_params, config.optimizer.clip_norm)
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()

    def forward_backward():
        scores = torch.where(maskable, torch.rand(input_ids.shape, device=device),
                             torch.full(input_ids.shape, -1.0, device=device))
        positions = scores.topk(obj.max_predictions, dim=1).indices
        weights = (torch.arange(obj.max_predictions, device=device)[None] < num_predict[:, None]).float()
        labels = input_ids.gather(1, positions)
        use_mask = (torch.rand(positions.shape, device=device) < obj.mask_token_prob) & (weights > 0)
        masked = input_ids.scatter(1, positions, torch.where(use_mask, torch.full_like(positions, 4), labels))
        hidden = generator.electra(masked, attention_mask=attention, token_type_ids=token_types).last_hidden_state
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = generator.generator_lm_head(generator.generator_predictions(hidden))
        mlm = (F.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * weights).sum() / weights.sum()
        with torch.no_grad():
            gumbel = -torch.log(-torch.log(torch.rand(logits.shape, device=device).clamp_min(1e-20)))
            sampled = (logits / obj.temperature + gumbel).argmax(-1)
        corrupted = masked.scatter(1, positions, torch.where(weights > 0, sampled, masked.gather(1, positions)))
        replaced = (corrupted != input_ids).float()
        disc_logits = discriminator(corrupted, attention_mask=attention, token_type_ids=token_types).logits
        rtd = F.binary_cross_entropy_with_logits(disc_logits, replaced)
        loss = mlm + obj.discriminator_weight * rtd
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    return step


def torch_albert_step(config, ids, segments):
    """AlbertForPreTraining doing what ours does: 15% masked (80/10/10; whole words on our side), the MLM head
    only at the masked positions, SOP on the pooled [CLS], clipping and AdamW (LAMB on neither side)."""
    import torch
    import torch.nn.functional as F
    from transformers import AlbertConfig, AlbertForPreTraining

    m, obj = config.model, config.objective
    model = AlbertForPreTraining(AlbertConfig(
        vocab_size=m.vocab_size, embedding_size=m.embedding_size, hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers, num_hidden_groups=m.num_hidden_groups, inner_group_num=m.inner_group_num,
        num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size, hidden_act="gelu_new",
        hidden_dropout_prob=m.dropout_rate, attention_probs_dropout_prob=m.attention_dropout_rate,
        classifier_dropout_prob=m.dropout_rate, max_position_embeddings=m.max_position_embeddings,
        layer_norm_eps=1e-12))
    model.train()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.01},
                                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=config.optimizer.learning_rate, eps=1e-6)
    input_ids = torch.from_numpy(ids).long()
    token_types = torch.from_numpy(segments).long()
    attention = torch.ones_like(input_ids)
    order = torch.from_numpy(sop_labels(len(ids))).long()
    maskable = (input_ids > 4)
    num_predict = maskable.sum(1).mul(obj.mask_prob).round().clamp(1, obj.max_predictions)

    def step():
        scores = torch.where(maskable, torch.rand(input_ids.shape), torch.full(input_ids.shape, -1.0))
        positions = scores.topk(obj.max_predictions, dim=1).indices
        weights = (torch.arange(obj.max_predictions)[None] < num_predict[:, None]).float()
        labels = input_ids.gather(1, positions)
        u = torch.rand(positions.shape)
        values = torch.where(u < 0.8, torch.full_like(positions, 4), torch.randint(5, m.vocab_size, positions.shape))
        values = torch.where((u < 0.9) & (weights > 0), values, labels)
        masked = input_ids.scatter(1, positions, values)
        outputs = model.albert(masked, attention_mask=attention, token_type_ids=token_types)
        hidden = outputs.last_hidden_state.gather(1, positions[..., None].expand(-1, -1, m.hidden_size))
        logits = model.predictions(hidden)
        mlm = (F.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * weights).sum() / weights.sum()
        sop = F.cross_entropy(model.sop_classifier(outputs.pooler_output), order)
        loss = mlm + sop
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.optimizer.clip_norm)
        optimizer.step()

    return step


def measure(side: str, make_step, steps: int) -> dict:
    """One framework in this process: its matmul peak and the median time of the step `make_step()` builds."""
    if side == "torch":  # XLA uses every core by default; give PyTorch the same
        import torch
        torch.set_num_threads(os.cpu_count())
    seconds = median_step_seconds(make_step(), steps)
    return {"side": side, "seconds": seconds, "peak": matmul_peak_flops(side)}


def measure_side(side: str, args) -> dict:
    config = make_config(args)
    ids, segments = synthetic_batch(args.batch, args.seq, args.vocab)
    build = jax_step if side == "jax" else (torch_albert_step if args.model == "albert" else torch_step)
    return measure(side, lambda: build(config, ids, segments), args.steps)


PRESETS = {"electra": "electra_small.yaml", "albert": "albert_base.yaml"}


def make_config(args):
    from electra_jax.config import load_config
    overrides = [f"train.batch_size={args.batch}", f"data.seq_len={args.seq}", f"model.vocab_size={args.vocab}",
                 "mesh.data=1", f"objective.max_predictions={max(1, round(args.seq * 0.15 + 0.5))}",
                 f"model.ops={args.ops}", *args.set]
    if args.model == "albert":
        overrides.append("optimizer.kind=adamw")  # torch has no LAMB: both sides take AdamW
    preset = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", PRESETS[args.model])
    return load_config(preset, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="each round runs jax, then torch, each in a fresh process")
    parser.add_argument("--model", choices=["electra", "albert"], default="electra",
                        help="electra: ELECTRA-small (paper); albert: ALBERT-base")
    parser.add_argument("--vocab", type=int, help="default: 30522 (ELECTRA), 30000 (ALBERT)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc as it is on both sides (default: both keep freed memory, as the "
                             "electra-jax CLI does; see electra_jax/host_memory.py)")
    parser.add_argument("--ops", choices=["auto", "xla", "cpu"], default="auto",
                        help="model.ops of our step: the CPU kernels (auto, cpu) or plain XLA ops")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of our step (e.g. objective.embedding_sharing=gdes); repeatable")
    parser.add_argument("--side", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.vocab = args.vocab or (30000 if args.model == "albert" else 30522)
    if args.side:
        if not args.default_malloc:
            from electra_jax.host_memory import keep_freed_memory
            keep_freed_memory()  # before either runtime starts its threads
        print(json.dumps(measure_side(args.side, args)))
        return

    forwarded = ["--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps), "--vocab",
                 str(args.vocab), "--model", args.model, "--ops", args.ops,
                 *(["--default-malloc"] if args.default_malloc else []), *(f"--set={s}" for s in args.set)]
    results, seconds, peak = run_rounds(__file__, forwarded, args.rounds)
    config = make_config(args)
    from electra_jax.families import family_of
    import jax
    import torch
    tokens = args.batch * args.seq
    flops_per_step = family_of(config.model).flops_per_token(config) * tokens
    described = {"electra": "ELECTRA-small (L12 H256 E128, generator 1/4)",
                 "albert": "ALBERT-base (L12 H768 E128, one shared group; AdamW on both sides)"}[args.model]
    malloc = "glibc malloc defaults" if args.default_malloc else "glibc malloc keeping freed memory"
    print(machine.describe())
    print(f"{described}, batch {args.batch} x seq {args.seq}, fp32, model.ops={args.ops}, "
          f"{os.cpu_count()} threads, {malloc}; jax {jax.__version__}, torch {torch.__version__}")
    print(f"fp32 matmul peak (2048^3, best of JAX/PyTorch): {peak / 1e9:.1f} GFLOP/s")
    print(f"model FLOPs per step: {flops_per_step / 1e9:.1f} GFLOP")
    print_sides(results, seconds, peak, tokens, flops_per_step)


def run_rounds(script: str, forwarded: list[str], rounds: int):
    """Each side in its own process (two runtimes' worker threads in one process slow each other), in rounds
    (jax, torch, jax, torch) so both sample the machine's load. Returns (per-side results, median seconds, the
    best matmul peak seen)."""
    results = {"jax": [], "torch": []}
    for _ in range(rounds):
        for side in results:
            output = subprocess.run([sys.executable, script, "--side", side, *forwarded], capture_output=True,
                                    text=True, check=True).stdout
            results[side].append(json.loads(output.strip().splitlines()[-1]))
    seconds = {side: float(np.median([r["seconds"] for r in rs])) for side, rs in results.items()}
    return results, seconds, max(r["peak"] for rs in results.values() for r in rs)


def print_sides(results: dict, seconds: dict, peak: float, tokens: int, flops_per_step: float) -> None:
    for name, side in (("electra-jax", "jax"), ("HF PyTorch", "torch")):
        per_round = ", ".join(f"{r['seconds']:.3f}" for r in results[side])
        print(f"{name:12s} {seconds[side]:7.3f} s/step  {tokens / seconds[side]:8.0f} tokens/s  "
              f"MFU {flops_per_step / seconds[side] / peak:6.1%}  (rounds: {per_round} s)")
    print(f"speed-up (tokens/s, electra-jax / HF PyTorch): {seconds['torch'] / seconds['jax']:.2f}x")


if __name__ == "__main__":
    main()
