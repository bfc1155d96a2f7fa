"""A length curriculum: `train.phases`, each some steps at its own sequence length and batch size (BERT's 90%
of the steps at 128 tokens, then 512), in one run directory under one optimizer state and one learning-rate
schedule over all of them.

A phase is the run's config with that phase's `data.seq_len`, `train.batch_size` and `data.prepared`: the
objective (its masking budget follows the length), the jitted step, the data reader and the held-out
evaluation of a phase are those of that config, while the parameters (position embeddings sized by
`model.max_position_embeddings`, the longest phase's length at most) and the optimizer state carry over.
A config without phases is one phase of `train.steps`. Reads no jax, so configs are checked before it loads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from electra_jax.config import Config


@dataclass(frozen=True)
class Phase:
    index: int  # 0-based
    first: int  # the first step it runs (steps count from 1)
    last: int  # its last step
    config: Config  # the run's config at this phase's length, batch size and data (train.phases empty)
    named: bool  # given by train.phases (not the single phase of a config without them)
    own_data: bool = False  # reads train.phases[index].prepared (not data.prepared or a packed corpus)

    @property
    def seq_len(self) -> int:
        return self.config.data.seq_len

    @property
    def batch_size(self) -> int:
        return self.config.train.batch_size

    @property
    def steps(self) -> int:
        return self.last - self.first + 1

    @property
    def data_field(self) -> str:
        """The setting that names its prepared folder."""
        return f"train.phases[{self.index}].prepared" if self.own_data else "data.prepared"

    @property
    def field(self) -> str:
        """How a message names it: train.phases[i], or the run's own data.* and train.* settings."""
        return f"train.phases[{self.index}]" if self.named else "the run"

    def describe(self, count: int) -> str:
        return (f"phase {self.index + 1}/{count}: steps {self.first}-{self.last} at seq_len {self.seq_len}, "
                f"batch {self.batch_size} ({self.steps * self.batch_size * self.seq_len:,} tokens)")


def run_phases(config: Config) -> tuple[Phase, ...]:
    """The phases in order; the last one's `last` is the sum of their steps (train.steps, once validated)."""
    t = config.train
    if not t.phases:
        return (Phase(0, 1, t.steps, config, named=False),)
    phases, first = [], 1
    for index, given in enumerate(t.phases):
        data = dataclasses.replace(config.data, seq_len=given.seq_len, prepared=given.prepared or config.data.prepared)
        train = dataclasses.replace(t, batch_size=given.batch_size, phases=())
        phase_config = dataclasses.replace(config, data=data, train=train)
        phases.append(Phase(index, first, first + given.steps - 1, phase_config, named=True,
                            own_data=bool(given.prepared)))
        first += given.steps
    return tuple(phases)


def phase_of(phases: tuple[Phase, ...], step: int) -> Phase:
    """The phase that runs `step` (step 0, an import or a fresh start, belongs to the first; a step past the
    end, to the last)."""
    for phase in phases:
        if step <= phase.last:
            return phase
    return phases[-1]


def started(phases: tuple[Phase, ...], step: int) -> tuple[Phase, ...]:
    """The phases a checkpoint at `step` has begun or finished: their length, batch and first step are fixed."""
    return tuple(phase for phase in phases if phase.first <= step)


def steps_run(config: Config, step: int) -> list[tuple[Phase, int]]:
    """(phase, how many of its steps a checkpoint at `step` has run), for the phases begun; steps past the
    last phase's end (a run resumed with fewer train.steps) count as the last phase's."""
    begun = started(run_phases(config), step)
    return [(phase, (step if phase is begun[-1] else phase.last) - phase.first + 1) for phase in begun]


def tokens_seen(config: Config, step: int) -> int:
    """Token positions (padding included) the model has been trained on by `step`."""
    return sum(count * phase.batch_size * phase.seq_len for phase, count in steps_run(config, step))


def describe_steps(config: Config, step: int) -> str:
    """`step` steps as a model card says them: one shape, or the curriculum's phases in order."""
    done = steps_run(config, step) or [(run_phases(config)[0], 0)]
    shapes = [f"batch {phase.batch_size} x sequence length {phase.seq_len}" for phase, _ in done]
    if len(done) == 1:
        return f"{step:,} steps of {shapes[0]}"
    return f"{step:,} steps in {len(done)} phases ({', then '.join(f'{n:,} of {s}' for (_, n), s in zip(done, shapes))})"
