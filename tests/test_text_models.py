"""Equivalence of the text models with transformers, in both directions, over random small configurations.

transformers model with random weights → `save_pretrained` → ours `from_pretrained` → same logits (1e-4, float32),
same hidden states and attentions; ours → `save_pretrained` → transformers `from_pretrained` → same outputs.
Plus the errors bad inputs must raise. Nothing is downloaded.
"""
import random

import pytest
import torch
import transformers

from parity import assert_outputs_close

from perceiver_nb import (PerceiverConfig, PerceiverForMaskedLM, PerceiverForSequenceClassification, PerceiverModel,
                          PerceiverTextPreprocessor, PerceiverClassificationDecoder)

TOL = 1e-4


def random_config(seed: int, **over) -> dict:
    "A small random configuration exercising the options that change the computation."
    rng = random.Random(seed)
    heads_x, heads_s = rng.choice([1, 2]), rng.choice([1, 2, 4])
    d_latents = 8 * rng.choice([2, 3, 4])
    d_model = 8 * rng.choice([2, 3])
    cfg = dict(
        num_latents=rng.choice([3, 5, 7]), d_latents=d_latents, d_model=d_model,
        num_blocks=rng.choice([1, 2]), num_self_attends_per_block=rng.choice([1, 2]),
        num_self_attention_heads=heads_s, num_cross_attention_heads=heads_x,
        qk_channels=rng.choice([None, 8 * heads_x * heads_s]),
        cross_attention_shape_for_attention=rng.choice(['kv', 'q']),
        self_attention_widening_factor=rng.choice([1, 2]), cross_attention_widening_factor=rng.choice([1, 3]),
        use_query_residual=rng.choice([True, False]), max_position_embeddings=rng.choice([16, 24]),
        hidden_act=rng.choice(['gelu', 'relu']), attention_probs_dropout_prob=0.1,
    )
    # Self-attention adds its output to the latents, so its value width must be D: when qk is set, say so.
    cfg['v_channels'] = d_latents if cfg['qk_channels'] else rng.choice([None, d_latents])
    cfg.update(over)
    return cfg


def batch(cfg: dict, seed: int, length=None, pad=True):
    g = torch.Generator().manual_seed(seed)
    length = length or cfg['max_position_embeddings']
    ids = torch.randint(0, 262, (3, length), generator=g)
    mask = torch.ones(3, length, dtype=torch.long)
    if pad: mask[1, length // 2:] = 0; mask[2, -3:] = 0
    return ids, mask


MODELS = [(PerceiverForMaskedLM, transformers.PerceiverForMaskedLM),
          (PerceiverForSequenceClassification, transformers.PerceiverForSequenceClassification)]


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('ours_cls,theirs_cls', MODELS, ids=['mlm', 'seqcls'])
def test_transformers_to_ours(tmp_path, seed, ours_cls, theirs_cls):
    cfg = random_config(seed, num_labels=3)
    torch.manual_seed(seed)
    theirs = theirs_cls(transformers.PerceiverConfig(**cfg)).eval()
    theirs.save_pretrained(tmp_path)
    ours = ours_cls.from_pretrained(tmp_path).eval()
    ids, mask = batch(cfg, seed)
    kw = dict(attention_mask=mask, output_attentions=True, output_hidden_states=True)
    with torch.no_grad(): assert_outputs_close(ours(ids, **kw), theirs(ids, **kw), f'{ours_cls.__name__} seed {seed}')
    with torch.no_grad():  # the fused attention path (no attention weights requested) gives the same logits
        a, b = ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits
    assert torch.allclose(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize('seed', range(6, 10))
@pytest.mark.parametrize('ours_cls,theirs_cls', MODELS, ids=['mlm', 'seqcls'])
def test_ours_to_transformers(tmp_path, seed, ours_cls, theirs_cls):
    cfg = random_config(seed, num_labels=2)
    torch.manual_seed(seed)
    ours = ours_cls(PerceiverConfig(**cfg)).eval()
    ours.save_pretrained(tmp_path)
    theirs = theirs_cls.from_pretrained(tmp_path).eval()
    ids, mask = batch(cfg, seed)
    kw = dict(attention_mask=mask, output_attentions=True, output_hidden_states=True)
    with torch.no_grad(): assert_outputs_close(ours(ids, **kw), theirs(ids, **kw), f'{ours_cls.__name__} seed {seed}')


@pytest.mark.parametrize('seed', range(3))
def test_losses_match(tmp_path, seed):
    cfg = random_config(seed, attention_probs_dropout_prob=0.0)
    ids, mask = batch(cfg, seed)
    labels = ids.clone(); labels[mask == 0] = -100
    torch.manual_seed(seed)
    theirs = transformers.PerceiverForMaskedLM(transformers.PerceiverConfig(**cfg)).eval()
    theirs.save_pretrained(tmp_path)
    ours = PerceiverForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(ours(ids, attention_mask=mask, labels=labels).loss,
                              theirs(ids, attention_mask=mask, labels=labels).loss, atol=TOL)
    for num_labels, labels in [(1, torch.randn(3)), (4, torch.tensor([0, 3, 1])), (4, torch.rand(3, 4))]:
        c = dict(cfg, num_labels=num_labels)
        torch.manual_seed(seed)
        theirs = transformers.PerceiverForSequenceClassification(transformers.PerceiverConfig(**c)).eval()
        ours = PerceiverForSequenceClassification(PerceiverConfig(**c)).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        with torch.no_grad():
            a, b = ours(ids, attention_mask=mask, labels=labels), theirs(ids, attention_mask=mask, labels=labels)
        assert torch.allclose(a.loss, b.loss, atol=TOL), (num_labels, a.loss, b.loss)
        assert ours.config.problem_type == theirs.config.problem_type


def test_short_inputs_are_the_first_rows_of_the_full_output(tmp_path):
    cfg = random_config(3, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    theirs = transformers.PerceiverForMaskedLM(transformers.PerceiverConfig(**cfg)).eval()
    ours = PerceiverForMaskedLM(PerceiverConfig(**cfg)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    L = cfg['max_position_embeddings']
    ids, mask = batch(cfg, 0, length=L)
    mask[:, 9:] = 0
    with torch.no_grad():
        full = theirs(ids, attention_mask=mask).logits  # transformers always decodes all positions
        short = ours(ids[:, :9], attention_mask=mask[:, :9]).logits
    assert short.shape == (3, 9, 262)
    assert torch.allclose(short, full[:, :9], atol=TOL)


def test_perceiver_model_parts_equal(tmp_path):
    cfg = random_config(11, attention_probs_dropout_prob=0.0, num_labels=3)
    hf = transformers.models.perceiver.modeling_perceiver
    hc = transformers.PerceiverConfig(**cfg)
    dec_kw = dict(num_channels=cfg['d_latents'], use_query_residual=True,
                  trainable_position_encoding_kwargs=dict(num_channels=cfg['d_latents'], index_dims=1))
    torch.manual_seed(0)
    theirs = hf.PerceiverModel(hc, input_preprocessor=hf.PerceiverTextPreprocessor(hc),
                               decoder=hf.PerceiverClassificationDecoder(hc, **dec_kw)).eval()
    c = PerceiverConfig(**cfg)
    ours = PerceiverModel(c, input_preprocessor=PerceiverTextPreprocessor(c), decoder=PerceiverClassificationDecoder(c, **dec_kw)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ids, mask = batch(cfg, 1)
    kw = dict(attention_mask=mask, output_attentions=True, output_hidden_states=True)
    with torch.no_grad(): a, b = ours(ids, **kw), theirs(ids, **kw)
    assert_outputs_close(a, b, 'PerceiverModel')
    assert torch.allclose(a.last_hidden_state, b.last_hidden_state, atol=TOL)


def test_bad_inputs_raise_clear_errors():
    cfg = random_config(0, num_labels=2, max_position_embeddings=16)
    mlm = PerceiverForMaskedLM(PerceiverConfig(**cfg)).eval()
    ids = torch.randint(0, 262, (2, 10))
    with pytest.raises(ValueError, match=r'`inputs` must have 2 dimensions'): mlm(ids[None])
    with pytest.raises(ValueError, match=r'`inputs` values must lie in \[0, 262\), got 262'): mlm(torch.full((2, 4), 262))
    with pytest.raises(ValueError, match=r'max_position_embeddings=16'): mlm(torch.zeros(2, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r'`attention_mask` must have shape \(2, 10\), got \(2, 9\)'): mlm(ids, attention_mask=torch.ones(2, 9))
    with pytest.raises(ValueError, match=r'`labels` must have shape'): mlm(ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match=r'cannot use both'): mlm(inputs=ids, input_ids=ids)
    bare = PerceiverModel(PerceiverConfig(**cfg)).eval()
    with pytest.raises(ValueError, match=rf'`inputs` must have shape \(B, M, {cfg["d_model"]}\), got \(2, 5, 7\)'): bare(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r'must be divisible by `num_self_attention_heads`=3|num_self_attention_heads'):
        PerceiverModel(PerceiverConfig(**dict(cfg, d_latents=16, num_self_attention_heads=3)))
