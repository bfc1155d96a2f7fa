"""A distillation step on this CPU: electra-jax against the same step written with HF PyTorch, same run.

Default: a multilingual-BERT-shaped teacher (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 119,547)
distilled into its bottom 6 layers, batch 8 x 128, fp32. Both sides do the same work: the teacher's forward
pass in inference mode (hidden states and attention probabilities of its last layer), the student's forward
and backward with dropout, hidden-state MSE + attention MSE from the student's last layer to the teacher's,
embeddings and pooler frozen, global-norm clipping and AdamW on the encoder layers. Each side runs in its own
process, in rounds (jax, torch, jax, torch); prints tokens/s, the ratio, and each side's MFU against this
CPU's fp32 matmul peak measured here.

    python benchmarks/distill_step.py [--layers 12] [--student-layers 6] [--hidden 768] [--batch 8] [--seq 128]
                                      [--steps 5] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402
from train_step import measure, print_sides, run_rounds, synthetic_batch  # noqa: E402


def make_config(args):
    from electra_jax.config import load_config
    heads, intermediate = args.hidden // 64, 4 * args.hidden
    return load_config(None, [
        "model.architecture=bert", f"model.vocab_size={args.vocab}", f"model.embedding_size={args.hidden}",
        f"model.hidden_size={args.hidden}", f"model.num_heads={heads}", f"model.intermediate_size={intermediate}",
        f"model.num_layers={args.student_layers}", f"data.seq_len={args.seq}", f"train.batch_size={args.batch}",
        "mesh.data=1", "optimizer.learning_rate=1e-4", "schedule.warmup_steps=10", "train.steps=1000",
        "distill.teacher=benchmark", f"distill.student_layers={args.student_layers}"])


def jax_step(config, teacher_layers: int, ids, segments):
    import dataclasses

    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from electra_jax.distill import DistillObjective, distill_optimizer, on_mesh, param_shardings, student_params
    from electra_jax.mesh import make_mesh
    from electra_jax.models.bert import Bert
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.state import TrainState
    from electra_jax.train import setup_training

    specials = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    mesh = make_mesh(config, jax.devices()[:1])
    teacher_model = dataclasses.replace(config.model, num_layers=teacher_layers)
    dummy = jnp.zeros((1, config.data.seq_len), jnp.int32)
    teacher_params = jax.tree.map(np.asarray, nn.unbox(jax.jit(lambda rng: Bert(teacher_model).init(
        {"params": rng}, dummy, dummy, dummy, dummy[:, :1])["params"])(jax.random.key(0))))
    teacher_shardings = param_shardings(teacher_model, config, mesh)
    teacher = on_mesh(teacher_params, teacher_shardings)
    pairs = ((config.distill.student_layers, teacher_layers),)
    training = setup_training(config, mesh, specials, objective=DistillObjective(config, teacher_model, specials, pairs),
                              optimizer=distill_optimizer(config), frozen_shardings=teacher_shardings)
    params = on_mesh(student_params(teacher_params, config.distill.student_layers), training.shardings.params)
    state = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, training.tx.init(p)),
                    out_shardings=training.shardings)(params)
    batch = {"input_ids": jax.device_put(ids, training.batch_sharding),
             "segment_ids": jax.device_put(segments, training.batch_sharding)}
    holder = {"state": state}

    def step():
        holder["state"], metrics = training.step_fn(holder["state"], batch, teacher)
        metrics["loss"].block_until_ready()

    return step


def torch_step(config, teacher_layers: int, ids, segments):
    import torch
    from transformers import BertConfig, BertModel

    m = config.model

    def bert(layers):
        return BertModel(BertConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=layers,
                                    num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
                                    max_position_embeddings=m.max_position_embeddings, layer_norm_eps=1e-12,
                                    hidden_dropout_prob=m.dropout_rate,
                                    attention_probs_dropout_prob=m.attention_dropout_rate,
                                    attn_implementation="eager"),  # the one that returns attention probabilities
                         add_pooling_layer=False)

    teacher, student = bert(teacher_layers).eval(), bert(config.distill.student_layers).train()
    student.load_state_dict(teacher.state_dict(), strict=False)  # embeddings and the bottom layers
    student.embeddings.requires_grad_(False)
    trained = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trained if p.ndim > 1], "weight_decay": 0.01},
                                   {"params": [p for p in trained if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=config.optimizer.learning_rate, eps=1e-6)
    input_ids, token_types = torch.from_numpy(ids).long(), torch.from_numpy(segments).long()
    attention = (input_ids != 0).long()
    real = attention.float()

    def step():
        with torch.no_grad():
            t = teacher(input_ids, attention_mask=attention, token_type_ids=token_types, output_attentions=True)
        s = student(input_ids, attention_mask=attention, token_type_ids=token_types, output_attentions=True)
        tokens = real.sum()
        hidden = ((s.last_hidden_state - t.last_hidden_state).square().mean(-1) * real).sum() / tokens
        attn = ((s.attentions[-1] - t.attentions[-1]).square().sum(-1).mean(1) * real).sum() / tokens
        loss = hidden + attn
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.optimizer.clip_norm)
        optimizer.step()

    return step


def measure_side(side: str, args) -> dict:
    config = make_config(args)
    ids, segments = synthetic_batch(args.batch, args.seq, args.vocab)
    build = jax_step if side == "jax" else torch_step
    return measure(side, lambda: build(config, args.layers, ids, segments), args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="teacher layers")
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=119547)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and round")
    parser.add_argument("--rounds", type=int, default=2, help="each round runs jax, then torch, each in a fresh process")
    parser.add_argument("--side", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        from electra_jax.host_memory import keep_freed_memory
        keep_freed_memory()  # both sides, before either runtime starts its threads (as the CLI does)
        print(json.dumps(measure_side(args.side, args)))
        return

    forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in
                 ("layers", "student_layers", "hidden", "vocab", "batch", "seq", "steps")]
    results, seconds, peak = run_rounds(__file__, forwarded, args.rounds)
    from electra_jax.metrics import distill_flops_per_token
    import jax
    import torch
    config = make_config(args)
    tokens = args.batch * args.seq
    flops_per_step = distill_flops_per_token(config, args.layers) * tokens
    print(machine.describe())
    print(f"BERT teacher L{args.layers} H{args.hidden} (vocab {args.vocab}) -> {args.student_layers}-layer student, "
          f"hidden + attention MSE, embeddings frozen, batch {args.batch} x seq {args.seq}, fp32, {os.cpu_count()} "
          f"threads; jax {jax.__version__}, torch {torch.__version__}")
    print(f"fp32 matmul peak (2048^3, best of JAX/PyTorch): {peak / 1e9:.1f} GFLOP/s")
    print(f"model FLOPs per step (teacher forward + 3x student forward): {flops_per_step / 1e9:.1f} GFLOP")
    print_sides(results, seconds, peak, tokens, flops_per_step)


if __name__ == "__main__":
    main()
