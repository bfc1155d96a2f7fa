"""ALBERT's n-gram masking: whole words, p(n) ~ 1/n, the 15% budget, 80/10/10 replacement."""
import jax
import jax.numpy as jnp
import numpy as np

from electra_jax.objectives.masking import mask_selected, ngram_probabilities, select_ngrams

B, L = 256, 128


def _batch(seed=0):
    """[CLS] A [SEP] B [SEP] with words of 1-3 tokens; ids 10+ are words' first tokens iff even."""
    rng = np.random.default_rng(seed)
    word_start = np.zeros((B, L), bool)
    maskable = np.ones((B, L), bool)
    maskable[:, 0] = maskable[:, 60] = maskable[:, L - 1] = False
    position = 1
    for row in range(B):
        position = 1
        while position < L:
            word_start[row, position] = True
            position += rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])
    return maskable, word_start


def test_whole_words_budget_and_ngram_distribution():
    maskable, word_start = _batch()
    select = jax.jit(lambda key: select_ngrams(key, jnp.asarray(maskable), jnp.asarray(word_start), mask_prob=0.15,
                                               max_predictions=20, max_ngram=3))
    spans, counts = [], []
    for seed in range(8):
        selected, span = map(np.asarray, select(jax.random.key(seed)))
        assert not (selected & ~maskable).any()
        budget = np.clip(np.round(maskable.sum(1) * 0.15), 1, 20)
        assert (selected.sum(1) <= budget).all()
        counts.append(selected.sum(1) / budget)
        # Whole words: inside a word (no word start, previous token maskable) selection never changes.
        inside = maskable[:, 1:] & maskable[:, :-1] & ~word_start[:, 1:]
        assert (selected[:, 1:][inside] == selected[:, :-1][inside]).all()
        spans.append(span[span > 0])
    assert np.mean(np.concatenate(counts)) > 0.97  # the budget is (nearly) always filled
    spans = np.concatenate(spans)
    observed = np.bincount(spans, minlength=4)[1:] / len(spans)
    # The budget trims spans at its end and overlaps skip long spans more often, so the n taken are shorter
    # than the drawn 6/11, 3/11, 2/11; the original algorithm, run here in plain Python, shows the same.
    reference = _reference_spans(maskable, word_start, np.random.default_rng(0), rounds=8)
    assert np.abs(observed - reference).max() < 0.02, (observed, reference)
    assert observed[0] > ngram_probabilities(3)[0] and observed[2] < ngram_probabilities(3)[2]


def _reference_spans(maskable, word_start, rng, rounds):
    """google-research/albert create_masked_lm_predictions (whole words, n-grams), span lengths taken."""
    pvals = 1.0 / np.arange(1, 4)
    pvals /= pvals.sum()
    taken = np.zeros(4)
    for _ in range(rounds):
        for row in range(len(maskable)):
            words = []
            for position in np.nonzero(maskable[row])[0]:
                if word_start[row, position] or not maskable[row, position - 1] or not words:
                    words.append([position])
                else:
                    words[-1].append(position)
            budget = min(20, max(1, int(round(maskable[row].sum() * 0.15))))
            covered, count = set(), 0
            for start in rng.permutation(len(words)):
                if count >= budget:
                    break
                available = min(3, len(words) - start)
                n = rng.choice(np.arange(1, available + 1), p=pvals[:available] / pvals[:available].sum())
                size = lambda k: sum(len(w) for w in words[start:start + k])  # noqa: E731
                while n > 1 and count + size(n) > budget:
                    n -= 1
                if count + size(n) > budget or any(w in covered for w in range(start, start + n)):
                    continue
                covered.update(range(start, start + n))
                count += size(n)
                taken[n] += 1
    return taken[1:] / taken.sum()


def test_replacement_shares():
    rng = np.random.default_rng(1)
    ids = rng.integers(10, 1000, size=(B, L)).astype(np.int32)
    selected = rng.random((B, L)) < 0.5  # ~16,000 replacements: the shares below are within 3 sigma
    masked = jax.jit(lambda key: mask_selected(key, jnp.asarray(ids), jnp.asarray(selected), max_predictions=L,
                                               mask_id=4, mask_token_prob=0.8, random_token_prob=0.1,
                                               random_ids=(5, 1000)))(jax.random.key(0))
    new_ids = np.asarray(masked.input_ids_BxL)
    assert (new_ids[~selected] == ids[~selected]).all()
    chosen = new_ids[selected]
    mask_share = (chosen == 4).mean()
    unchanged = (chosen == ids[selected]).mean()  # kept, or (rarely) a random id equal to the original
    assert abs(mask_share - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01
    assert ((chosen >= 5) | (chosen == 4)).all()
    weights = np.asarray(masked.weights_BxP)
    assert (weights.sum(1) == selected.sum(1)).all()
    positions = np.asarray(masked.positions_BxP)
    labels = np.asarray(masked.labels_BxP)
    for row in range(4):
        real = positions[row][weights[row] > 0]
        assert (np.sort(real) == np.nonzero(selected[row])[0]).all()
        assert (labels[row][weights[row] > 0] == ids[row][real]).all()
