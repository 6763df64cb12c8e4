"""The error contract and the graph-capture contract of every task model, with tiny configurations.

Bad inputs are generated (hypothesis) rather than listed: every one must be refused by our code with a `TypeError` or
`ValueError` that names the argument as the caller passed it, before any tensor operation fails inside torch. Refused
labels leave the config untouched. Every task model traces (`torch.jit.trace`), exports (`torch.export`) and compiles
with `fullgraph=True` (no graph break), and the captured graph equals eager on a second input.
"""
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings, HealthCheck, strategies as st

from perceiver_nb import (PerceiverConfig, PerceiverForMaskedLM, PerceiverForSequenceClassification,
                          PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier,
                          PerceiverForImageClassificationConvProcessing, PerceiverModel, PerceiverImageProcessor,
                          PerceiverImagePreprocessor)

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY = dict(num_latents=4, d_latents=16, d_model=16, num_blocks=1, num_self_attends_per_block=1, num_self_attention_heads=2,
            num_cross_attention_heads=1, qk_channels=16, v_channels=16, max_position_embeddings=12, image_size=8,
            num_labels=3, attention_probs_dropout_prob=0.0)
IMAGE_MODELS = (PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier,
                PerceiverForImageClassificationConvProcessing)
TEXT_MODELS = (PerceiverForMaskedLM, PerceiverForSequenceClassification)
_models = {}


def model(cls, **over):
    "One tiny model per class (and overrides), built once: the tests only read it."
    key = (cls, tuple(sorted(over.items())))
    if key not in _models:
        torch.manual_seed(0)
        _models[key] = cls(PerceiverConfig(**(TINY | over))).eval()
    return _models[key]


def good_input(cls, batch=2):
    g = torch.Generator().manual_seed(batch)
    if cls in TEXT_MODELS: return torch.randint(0, 262, (batch, 12), generator=g)
    return torch.randn(batch, 3, 8, 8, generator=g)


def refused(fn, *names):
    "`fn()` raises TypeError/ValueError (not a torch RuntimeError) whose message names one of `names`; the message."
    with pytest.raises((TypeError, ValueError)) as e: fn()
    msg = str(e.value)
    assert any(f'`{n}' in msg for n in names), msg
    return msg


ALL_MODELS = TEXT_MODELS + IMAGE_MODELS
FLOAT_DTYPES = [torch.float64, torch.float16, torch.bfloat16]
INT_DTYPES = [torch.uint8, torch.int16, torch.int32, torch.int64]

# -- input dtypes -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', IMAGE_MODELS, ids=lambda c: c.__name__)
@SETTINGS
@given(dtype=st.sampled_from(FLOAT_DTYPES + INT_DTYPES), alias=st.booleans())
def test_image_dtype_refused_with_the_way_out(cls, dtype, alias):
    x = (good_input(cls) * 100).clamp(0, 255).to(dtype)
    kw = {'pixel_values' if alias else 'inputs': x}
    msg = refused(lambda: model(cls)(**kw), 'pixel_values' if alias else 'inputs')
    assert str(dtype) in msg and 'torch.float32' in msg, msg


@pytest.mark.parametrize('dtype', FLOAT_DTYPES, ids=str)
def test_model_float_inputs_of_another_dtype(dtype):
    bare = model(PerceiverModel)
    refused(lambda: bare(torch.randn(2, 5, 16, dtype=dtype)), 'inputs')
    with torch.autocast('cpu', dtype=torch.bfloat16):  # under autocast, any floating dtype is the caller's choice
        assert bare(torch.randn(2, 5, 16, dtype=torch.bfloat16)).last_hidden_state.shape == (2, 4, 16)


def test_model_in_another_dtype_takes_inputs_of_that_dtype():
    m = PerceiverForImageClassificationFourier(PerceiverConfig(**TINY)).to(torch.float64).eval()
    assert m(torch.randn(2, 3, 8, 8, dtype=torch.float64)).logits.dtype == torch.float64
    msg = refused(lambda: m(torch.randn(2, 3, 8, 8)), 'inputs')
    assert 'model.to(torch.float32)' in msg


@pytest.mark.parametrize('cls', TEXT_MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize('dtype', FLOAT_DTYPES + [torch.float32], ids=str)
def test_text_ids_must_be_integers(cls, dtype):
    refused(lambda: model(cls)(good_input(cls).to(dtype)), 'inputs')

# -- ranks, sizes, masks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', IMAGE_MODELS, ids=lambda c: c.__name__)
@SETTINGS
@given(rank=st.sampled_from([1, 2, 3, 5, 6]), alias=st.booleans())
def test_image_rank(cls, rank, alias):
    x = torch.randn(*([2, 4, 3, 8, 8, 2][:rank] if rank != 5 else [2, 4, 3, 8, 8]))
    name = 'pixel_values' if alias else 'inputs'
    msg = refused(lambda: model(cls)(**{name: x}), name)
    assert 'interpolate_pos_encoding' not in msg and 'index_dims' not in msg, msg
    if rank == 5: assert 'video' in msg and f'{name}.flatten(0, 1)' in msg, msg


@SETTINGS
@given(h=st.integers(1, 4), w=st.integers(1, 12))
def test_conv_stem_needs_five_pixels(h, w):
    refused(lambda: model(PerceiverForImageClassificationConvProcessing)(torch.randn(1, 3, *sorted((h, w)))), 'inputs')


@pytest.mark.parametrize('cls', ALL_MODELS, ids=lambda c: c.__name__)
@SETTINGS
@given(values=st.lists(st.sampled_from([-1, 2, 3, 0.5, 7, -100]), min_size=1, max_size=3))
def test_non_binary_attention_mask_named_as_passed(cls, values):
    x = good_input(cls)
    m = model(cls)
    with torch.no_grad(): m_rows = m.perceiver.input_preprocessor(x)[0].shape[1]
    mask = torch.ones(2, m_rows)
    values = values[:m_rows]  # the conv stem turns an 8×8 image into a single row
    mask[0, :len(values)] = torch.tensor(values, dtype=torch.float32)
    msg = refused(lambda: m(x, attention_mask=mask), 'attention_mask')
    assert 'inputs_mask' not in msg, msg


def test_padding_mask_of_ones_and_zeros_still_works():
    m = model(PerceiverForSequenceClassification)
    mask = torch.ones(2, 12, dtype=torch.long); mask[1, 6:] = 0
    for m_ in (mask, mask.bool(), mask.float()): assert m(good_input(PerceiverForSequenceClassification), attention_mask=m_).logits.shape == (2, 3)

# -- labels ---------------------------------------------------------------------------------------------------------------

def mlm_bad_labels():
    shape = (2, 12)
    return st.one_of(
        st.sampled_from(FLOAT_DTYPES + [torch.float32, torch.bool]).map(lambda d: torch.zeros(shape, dtype=d)),
        st.integers(262, 10_000).map(lambda v: torch.full(shape, 7).index_put_((torch.tensor([1]), torch.tensor([3])), torch.tensor(v))),
        st.integers(-99, -1).map(lambda v: torch.full(shape, 7).index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(v))),
        st.just(torch.full(shape, -100)),
        st.sampled_from([(2,), (2, 11), (3, 12), (2, 12, 1)]).map(lambda s: torch.zeros(s, dtype=torch.long)))


@SETTINGS
@given(labels=mlm_bad_labels())
def test_mlm_labels(labels):
    refused(lambda: model(PerceiverForMaskedLM)(good_input(PerceiverForMaskedLM), labels=labels), 'labels')


def classification_bad_labels():
    return st.one_of(
        st.sampled_from([(2, 2), (2, 3), (3,), (1,), (2, 1, 1)]).map(lambda s: torch.zeros(s, dtype=torch.long)),
        st.integers(3, 1000).map(lambda v: torch.tensor([0, v])),
        st.integers(-99, -1).map(lambda v: torch.tensor([v, 0])),
        st.just(torch.tensor([-100, -100])),
        st.just(torch.tensor([True, False])),
        st.sampled_from([(2,), (2, 2), (3, 3)]).map(lambda s: torch.rand(s)),  # floats: multi-label needs (B, L)
        st.just(torch.tensor([[0., 2., 1.], [1., 0., 0.]])),  # multi-label targets outside [0, 1]
        st.just(torch.rand(2, 3, dtype=torch.float64)))


@pytest.mark.parametrize('cls', (PerceiverForSequenceClassification,) + IMAGE_MODELS, ids=lambda c: c.__name__)
@SETTINGS
@given(labels=classification_bad_labels())
def test_classification_labels_refused_and_config_untouched(cls, labels):
    m = cls(PerceiverConfig(**TINY)).eval()
    refused(lambda: m(good_input(cls), labels=labels), 'labels')
    assert m.config.problem_type is None  # a refused call records nothing
    assert m(good_input(cls), labels=torch.tensor([0, 2])).loss.isfinite()
    assert m.config.problem_type == 'single_label_classification'


def test_regression_and_multi_label_still_accepted():
    reg = PerceiverForSequenceClassification(PerceiverConfig(**(TINY | dict(num_labels=1)))).eval()
    assert reg(good_input(PerceiverForSequenceClassification), labels=torch.tensor([0.5, -1.])).loss.isfinite()
    refused(lambda: reg(good_input(PerceiverForSequenceClassification), labels=torch.tensor([1, 0])), 'labels')
    multi = PerceiverForSequenceClassification(PerceiverConfig(**TINY)).eval()
    assert multi(good_input(PerceiverForSequenceClassification), labels=torch.tensor([[1., 0, 1], [0, 1, 0]])).loss.isfinite()
    assert multi.config.problem_type == 'multi_label_classification'
    ignored = model(PerceiverForMaskedLM)(good_input(PerceiverForMaskedLM), labels=torch.full((2, 12), -100).index_fill_(1, torch.tensor([4]), 9))
    assert ignored.loss.isfinite()

# -- images through the image processor ------------------------------------------------------------------------------------

@SETTINGS
@given(level=st.integers(0, 65535), mode=st.sampled_from(['I;16', 'I']))
def test_16_bit_gray_images_scaled_not_saturated(level, mode):
    a = np.full((9, 11), level, dtype=np.uint16 if mode == 'I;16' else np.int32)
    img = PIL.Image.fromarray(a)
    assert img.mode == mode
    proc = PerceiverImageProcessor(do_center_crop=False, do_resize=False, do_normalize=False, do_convert_rgb=True)
    px = proc(img, return_tensors='pt').pixel_values
    assert px.shape == (1, 3, 9, 11)
    assert torch.allclose(px, torch.full_like(px, round(level / 257) / 255), atol=1e-6), (level, px.unique())

# -- graph capture ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('cls', ALL_MODELS, ids=lambda c: c.__name__)
def test_jit_trace_matches_eager_on_another_batch(cls):
    m = model(cls)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(m, (good_input(cls, 2),), strict=False)
    x = good_input(cls, 3)
    with torch.no_grad(): torch.testing.assert_close(traced(x)['logits'], m(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', ALL_MODELS, ids=lambda c: c.__name__)
def test_torch_export_matches_eager_on_another_input(cls):
    m = model(cls)
    exported = torch.export.export(m, (good_input(cls, 2),)).module()
    x = good_input(cls, 2) * (1 if cls in TEXT_MODELS else -0.5) + (1 if cls in TEXT_MODELS else 0.25)
    out = exported(x)
    assert type(out).__name__ in ('PerceiverMaskedLMOutput', 'PerceiverClassifierOutput')
    with torch.no_grad(): torch.testing.assert_close(out.logits, m(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', ALL_MODELS, ids=lambda c: c.__name__)
def test_compile_fullgraph_has_no_graph_break(cls):
    m = model(cls)
    x = good_input(cls)
    labels = torch.randint(0, 262, (2, 12)) if cls is PerceiverForMaskedLM else torch.tensor([0, 2])
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(x, labels=labels)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    compiled = torch.compile(m, fullgraph=True, backend='eager')  # fullgraph: a graph break would raise
    with torch.no_grad(): torch.testing.assert_close(compiled(x, labels=labels).logits, m(x, labels=labels).logits)
