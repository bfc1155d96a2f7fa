import os

# Eight fake CPU devices for the sharding tests; must be set before jax is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A model small enough to compile and step in a second or two.
TINY = [
    "model.embedding_size=16", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
    "model.intermediate_size=64", "model.generator_fraction=0.5", "model.max_position_embeddings=32",
    "data.seq_len=32", "data.vocab_size=300", "objective.max_predictions=5",
    "train.batch_size=16", "train.log_every=1", "schedule.warmup_steps=2", "mesh.data=1",
]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains in a subprocess, reads ../shared/data or runs a real "
                                       "pipeline end to end; `make test-fast` leaves these out")


def pytest_collection_modifyitems(items):
    for item in items:  # every test on the real data is an end-to-end one
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    from electra_jax.data.default_corpus import write_default_corpus
    return write_default_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", num_documents=300)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only the project's own checkout has it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_corpus, tmp_path_factory):
    # Trained once for the session: tests that compare run directories step by step give them this one.
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_wordpiece([tiny_corpus], 300), out)
    return out


@pytest.fixture(scope="session")
def prepared(tiny_corpus, tokenizer_dir, tmp_path_factory):
    from electra_jax.data.prepare import PackOptions, prepare
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare([str(tiny_corpus)], tokenizer_dir, out, PackOptions(seq_len=32), workers=0, progress=False,
            log=lambda _: None)
    return out
