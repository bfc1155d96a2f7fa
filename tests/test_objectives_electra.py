import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax.objectives import base, electra, masking

PAD, CLS, SEP, MASK = 0, 2, 3, 4


def _batch(num=256, length=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, size=(num, length)).astype(np.int32)
    lengths = rng.integers(10, length + 1, size=num)
    for row, n in enumerate(lengths):
        ids[row, 0] = CLS
        ids[row, n // 2] = SEP
        ids[row, n - 1] = SEP
        ids[row, n:] = PAD
    ids[:8, 5] = MASK  # an input [MASK] must never be selected either
    return jnp.asarray(ids)


def test_masking_statistics_over_many_draws():
    ids = _batch()
    maskable = (ids != PAD) & (ids != CLS) & (ids != SEP) & (ids != MASK)
    selected_total = chosen_mask = kept = 0
    for draw in range(20):
        m = masking.mask_tokens(jax.random.key(draw), ids, maskable, mask_id=MASK, mask_prob=0.15,
                                   mask_token_prob=0.85, max_predictions=20)
        positions, weights = np.asarray(m.positions_BxP), np.asarray(m.weights_BxP) > 0
        masked_ids, original = np.asarray(m.input_ids_BxL), np.asarray(ids)
        rows = np.nonzero(weights)[0]
        sel_pos = positions[weights]
        # Specials and padding are never selected; labels are the originals; positions are distinct.
        assert np.asarray(maskable)[rows, sel_pos].all()
        assert (np.asarray(m.labels_BxP)[weights] == original[rows, sel_pos]).all()
        for row in range(len(ids)):
            p = positions[row][weights[row]]
            assert len(set(p.tolist())) == len(p)
            expected = min(20, max(1, round(float(maskable[row].sum()) * 0.15)))
            assert len(p) == expected
        # Nothing outside the selected positions changes; inside, either [MASK] or unchanged (no random token).
        changed = masked_ids != original
        selected = np.zeros_like(changed)
        selected[rows, sel_pos] = True
        assert not (changed & ~selected).any()
        assert (masked_ids[changed] == MASK).all()
        selected_total += weights.sum()
        chosen_mask += (masked_ids[rows, sel_pos] == MASK).sum()
        kept += (masked_ids[rows, sel_pos] == original[rows, sel_pos]).sum()
    assert abs(chosen_mask / selected_total - 0.85) < 0.02
    assert abs(kept / selected_total - 0.15) < 0.02
    # Selected fraction of maskable tokens: 15% up to rounding.
    fraction = selected_total / (20 * float(maskable.sum()))
    assert abs(fraction - 0.15) < 0.01


def test_replaced_only_where_sample_differs():
    ids = jnp.array([[CLS, 10, 11, 12, 13, SEP, PAD, PAD]], jnp.int32)
    masked = masking.Masked(input_ids_BxL=ids.at[0, 1].set(MASK).at[0, 2].set(MASK),
                               positions_BxP=jnp.array([[1, 2, 3]]), labels_BxP=jnp.array([[10, 11, 12]]),
                               weights_BxP=jnp.array([[1.0, 1.0, 1.0]]))
    vocab = 20
    # The generator is certain: position 1 -> 10 (the original), 2 -> 15, 3 -> 12 (original, kept unmasked).
    logits = jnp.full((1, 3, vocab), -1e4).at[0, 0, 10].set(0).at[0, 1, 15].set(0).at[0, 2, 12].set(0)
    seen = {}

    def disc(corrupted):
        seen["ids"] = corrupted
        return jnp.zeros(corrupted.shape)

    sums = electra.electra_sums(lambda i, p: logits, disc, jax.random.split(jax.random.key(0), 1), masked, ids,
                                   (ids != PAD).astype(jnp.int32), 1.0)
    assert seen["ids"].tolist() == [[CLS, 10, 15, 12, 13, SEP, PAD, PAD]]
    assert float(sums.replaced) == 1.0 and float(sums.num_tokens) == 6.0 and float(sums.num_predictions) == 3.0


@pytest.mark.parametrize("sampler", ["gumbel", "inverse_cdf"])
@pytest.mark.parametrize("vocab", [3, 1000])
def test_samplers_follow_softmax(sampler, vocab):
    rng = np.random.default_rng(vocab)
    probs = rng.dirichlet(np.full(vocab, 0.3))
    probs[-1] = max(probs[-1], 0.05)  # the last token: the edge of the padded last block
    probs /= probs.sum()
    draws = 40000
    logits = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32))[None, None], (draws // 4, 4, 1)) * 2.0
    samples = np.asarray(electra.SAMPLERS[sampler](jax.random.split(jax.random.key(1), draws // 4), logits, 2.0))
    freq = np.bincount(samples.ravel(), minlength=vocab) / draws
    assert samples.min() >= 0 and samples.max() < vocab
    top = np.argsort(probs)[-5:]  # the temperature (2) undoes the factor 2 on the logits
    assert (np.abs(freq[top] - probs[top]) <= 4 * np.sqrt(probs[top] / draws) + 1e-3).all(), (freq[top], probs[top])
    assert abs(freq[-1] - probs[-1]) < 4 * np.sqrt(probs[-1] / draws)
    assert 0.5 * np.abs(freq - probs).sum() < 0.02 + 0.5 * np.sqrt(vocab / draws)  # total variation


def test_cross_entropy_and_hit_match_optax_and_argmax():
    logits = jax.random.normal(jax.random.key(3), (4, 5, 97)) * 4
    labels = jax.random.randint(jax.random.key(4), (4, 5), 0, 97)
    labels = labels.at[0].set(jnp.argmax(logits[0], -1))  # some hits for sure
    loss, hit = base.cross_entropy_and_hit(logits, labels)
    np.testing.assert_allclose(loss, optax.softmax_cross_entropy_with_integer_labels(logits, labels),
                               rtol=1e-6, atol=1e-6)
    assert (np.asarray(hit) == np.asarray(jnp.argmax(logits, -1) == labels)).all() and bool(hit[0].all())
    grad = jax.grad(lambda x: base.cross_entropy_and_hit(x, labels)[0].sum())(logits)
    expected = jax.grad(lambda x: optax.softmax_cross_entropy_with_integer_labels(x, labels).sum())(logits)
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_auc_from_logit_histograms_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = (rng.random((8, 64)) < 0.15).astype(np.float32)
    logits = rng.normal(size=(8, 64)) * 3 + 2.5 * labels  # informative, with a few logits past +-16
    logits[0, :4] = [-40.0, 40.0, -16.5, 16.5]
    weights = np.ones_like(labels)
    weights[:, 60:] = 0  # padding: counted on neither side
    positive, negative = electra.logit_histograms(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    assert float(positive.sum()) == (labels * weights).sum() and float(negative.sum()) == ((1 - labels) * weights).sum()
    pos, neg = logits[(labels > 0) & (weights > 0)], logits[(labels == 0) & (weights > 0)]
    exact = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert electra.auc(positive, negative) == pytest.approx(exact, abs=2e-3)  # bins of 1/128 of a logit
