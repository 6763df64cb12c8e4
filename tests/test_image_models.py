"""Equivalence of the three image classifiers with transformers', in both directions, over random small configurations.

transformers model with random weights (batch-norm running statistics included) → `save_pretrained` → ours
`from_pretrained` → same logits, hidden states and attentions within 1e-4 in float32 for batch > 1; ours →
`save_pretrained` → transformers `from_pretrained` → same outputs. Also: the losses, other image sizes
(`interpolate_pos_encoding` for the learned model, non-square included), the released configurations' parameter
counts, and the errors bad inputs must raise. Nothing is downloaded.
"""
import random

import pytest
import torch
import transformers

from parity import assert_outputs_close

from perceiver_nb import (PerceiverConfig, PerceiverForImageClassificationConvProcessing,
                          PerceiverForImageClassificationFourier, PerceiverForImageClassificationLearned)
from perceiver_nb.config import RELEASED_CONFIGS

transformers.utils.logging.disable_progress_bar()
# See tests/test_position.py: warm up sin/cos once so the first large call is not the one compared.
_warm = torch.linspace(-5e4, 5e4, 1 << 16)
torch.sin(_warm), torch.cos(_warm)

TOL = 1e-4
OURS = [PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier,
        PerceiverForImageClassificationConvProcessing]
IDS = ['learned', 'fourier', 'conv']


def theirs_cls(ours_cls):
    return getattr(transformers, ours_cls.__name__)


def random_config(seed: int, **over) -> dict:
    "A small random configuration exercising the options that change the computation."
    rng = random.Random(seed)
    heads_x, heads_s = rng.choice([1, 2]), rng.choice([1, 2, 4])
    d_latents = 8 * rng.choice([2, 3, 4])
    # The cross-attention's default width is the input width (512, 261 or 322), which 2 heads need not divide.
    qk = None if heads_x == 1 and rng.random() < 0.5 else 8 * heads_x * heads_s
    cfg = dict(
        num_latents=rng.choice([3, 5, 7]), d_latents=d_latents, num_blocks=rng.choice([1, 2]),
        num_self_attends_per_block=rng.choice([1, 2]), num_self_attention_heads=heads_s,
        num_cross_attention_heads=heads_x, qk_channels=qk, v_channels=None if qk is None else d_latents,
        cross_attention_shape_for_attention=rng.choice(['kv', 'q']),
        self_attention_widening_factor=rng.choice([1, 2]), cross_attention_widening_factor=rng.choice([1, 3]),
        use_query_residual=rng.choice([True, False]), hidden_act=rng.choice(['gelu', 'relu']),
        image_size=rng.choice([6, 8, 10]), num_labels=rng.choice([2, 3, 5]), attention_probs_dropout_prob=0.1,
    )
    cfg.update(over)
    return cfg


def images(ours_cls, cfg: dict, seed: int, batch: int = 3) -> torch.Tensor:
    "A batch of images of a size the model takes: image_size² for the learned model, else non-square."
    g = torch.Generator().manual_seed(seed)
    if ours_cls is PerceiverForImageClassificationLearned: h = w = cfg['image_size']
    elif ours_cls is PerceiverForImageClassificationFourier: h, w = 7 + seed % 3, 11
    else: h, w = 17 + seed % 4, 23  # the stem needs a few pixels: 17x23 -> 4x6 rows
    return torch.randn(batch, 3, h, w, generator=g)


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> None:
    "Random affine parameters and running statistics for every batch norm (transformers' init resets them)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(11)


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('ours_cls', OURS, ids=IDS)
def test_transformers_to_ours(tmp_path, seed, ours_cls):
    cfg = random_config(seed)
    torch.manual_seed(seed)
    theirs = theirs_cls(ours_cls)(transformers.PerceiverConfig(**cfg)).eval()
    randomize_batchnorm(theirs, seed)
    theirs.save_pretrained(tmp_path)
    ours = ours_cls.from_pretrained(tmp_path)
    for name, buf in theirs.named_buffers():  # the running statistics came through the checkpoint
        assert torch.equal(dict(ours.named_buffers())[name], buf), name
    x = images(ours_cls, cfg, seed)
    kw = dict(output_attentions=True, output_hidden_states=True)
    with torch.no_grad(): assert_outputs_close(ours(x, **kw), theirs(x, **kw), f'{ours_cls.__name__} seed {seed}')
    with torch.no_grad():  # the fused attention path (no attention weights requested) gives the same logits
        a, b = ours(pixel_values=x).logits, theirs(pixel_values=x).logits
    assert (a - b).abs().max() <= TOL


@pytest.mark.parametrize('seed', range(4, 7))
@pytest.mark.parametrize('ours_cls', OURS, ids=IDS)
def test_ours_to_transformers(tmp_path, seed, ours_cls):
    cfg = random_config(seed)
    torch.manual_seed(seed)
    ours = ours_cls(PerceiverConfig(**cfg)).eval()
    randomize_batchnorm(ours, seed)
    ours.save_pretrained(tmp_path)
    theirs = theirs_cls(ours_cls).from_pretrained(tmp_path).eval()
    x = images(ours_cls, cfg, seed)
    kw = dict(output_attentions=True, output_hidden_states=True)
    with torch.no_grad(): assert_outputs_close(ours(x, **kw), theirs(x, **kw), f'{ours_cls.__name__} seed {seed}')


@pytest.mark.parametrize('ours_cls', OURS, ids=IDS)
def test_tuple_output_and_training_mode(ours_cls):
    "return_dict=False gives transformers' tuple; in training mode (dropout off) the outputs, batch norm included, agree."
    cfg = random_config(8, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    theirs = theirs_cls(ours_cls)(transformers.PerceiverConfig(**cfg))
    randomize_batchnorm(theirs, 0)
    ours = ours_cls(PerceiverConfig(**cfg))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, labels = images(ours_cls, cfg, 0), torch.tensor([0, 1, 1])
    a = ours(x, labels=labels, output_hidden_states=True, return_dict=False)
    b = theirs(x, labels=labels, output_hidden_states=True, return_dict=False)
    assert len(a) == len(b) == 3  # loss, logits, hidden_states
    for u, v in zip(a[:2], b[:2]): assert torch.allclose(u, v, atol=TOL)
    for name, buf in theirs.named_buffers():  # batch norm updated its running statistics the same way
        assert torch.allclose(dict(ours.named_buffers())[name].float(), buf.float(), atol=1e-6), name


@pytest.mark.parametrize('ours_cls', OURS, ids=IDS)
def test_losses_match(ours_cls):
    cfg = random_config(9, attention_probs_dropout_prob=0.0)
    x = images(ours_cls, cfg, 9)
    for num_labels, labels in [(1, torch.randn(3)), (4, torch.tensor([0, 3, 1])), (4, torch.tensor([0, -100, 2])),
                               (4, torch.rand(3, 4))]:
        c = dict(cfg, num_labels=num_labels)
        torch.manual_seed(0)
        theirs = theirs_cls(ours_cls)(transformers.PerceiverConfig(**c)).eval()
        ours = ours_cls(PerceiverConfig(**c)).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        with torch.no_grad(): a, b = ours(x, labels=labels), theirs(x, labels=labels)
        assert torch.allclose(a.loss, b.loss, atol=TOL), (num_labels, labels.dtype, a.loss, b.loss)
        assert ours.config.problem_type == theirs.config.problem_type


@pytest.mark.parametrize('size', [(6, 6), (9, 14), (14, 9), (3, 20), (16, 16)])
def test_learned_interpolation_matches_transformers(tmp_path, size):
    cfg = random_config(10, image_size=8)
    torch.manual_seed(0)
    theirs = transformers.PerceiverForImageClassificationLearned(transformers.PerceiverConfig(**cfg)).eval()
    theirs.save_pretrained(tmp_path)
    ours = PerceiverForImageClassificationLearned.from_pretrained(tmp_path)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        a = ours(x, interpolate_pos_encoding=True, output_attentions=True)
        b = theirs(x, interpolate_pos_encoding=True, output_attentions=True)
    assert_outputs_close(a, b, f'interpolated to {size}')
    assert a.cross_attentions[0].shape[-1] == size[0] * size[1]
    # positionally, as in transformers: (inputs, attention_mask, output_attentions, output_hidden_states, labels,
    # interpolate_pos_encoding)
    with torch.no_grad(): assert torch.allclose(ours(x, None, None, None, None, True).logits, a.logits)


@pytest.mark.parametrize('ours_cls', OURS[1:], ids=IDS[1:])
@pytest.mark.parametrize('size', [(5, 5), (9, 31), (30, 8)])
def test_fourier_models_take_any_size(ours_cls, size):
    cfg = random_config(11)
    torch.manual_seed(0)
    theirs = theirs_cls(ours_cls)(transformers.PerceiverConfig(**cfg)).eval()
    randomize_batchnorm(theirs, 1)
    ours = ours_cls(PerceiverConfig(**cfg)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad(): assert_outputs_close(ours(x), theirs(x), f'{ours_cls.__name__} at {size}')
    with torch.no_grad(): assert torch.equal(ours(x, interpolate_pos_encoding=True).logits, ours(x).logits)


def test_wrong_size_for_learned_positions_names_interpolate_pos_encoding():
    model = PerceiverForImageClassificationLearned(PerceiverConfig(**random_config(12, image_size=8))).eval()
    with pytest.raises(ValueError, match=r'covers 64 positions but the input has 9x14=126; pass interpolate_pos_encoding=True'):
        model(torch.randn(2, 3, 9, 14))
    with pytest.raises(ValueError, match=r'covers 64 positions but the input has 8x9=72; pass interpolate_pos_encoding=True'):
        model(pixel_values=torch.randn(2, 3, 8, 9))


@pytest.mark.parametrize('ours_cls', OURS, ids=IDS)
def test_bad_inputs(ours_cls):
    cfg = random_config(13)
    model = ours_cls(PerceiverConfig(**cfg)).eval()
    x = images(ours_cls, cfg, 0)
    with pytest.raises(ValueError, match='You cannot use both `inputs` and `pixel_values`'): model(x, pixel_values=x)
    with pytest.raises(ValueError, match='pass the images as `inputs` or `pixel_values`'): model()
    with pytest.raises(ValueError, match=r'`inputs` has 1 channels .* `in_channels`=3'): model(x[:, :1])
    with pytest.raises(ValueError, match=r'`inputs` must be a batch of images \(B, C, H, W\), got 3 dimensions'): model(x[0])
    with pytest.raises(TypeError): model(x, head_mask=None)


RELEASED = [(PerceiverForImageClassificationLearned, 'deepmind/vision-perceiver-learned', 62_255_848),
            (PerceiverForImageClassificationFourier, 'deepmind/vision-perceiver-fourier', 48_440_627),
            (PerceiverForImageClassificationConvProcessing, 'deepmind/vision-perceiver-conv', 48_646_522)]


@pytest.mark.parametrize('ours_cls,name,count', RELEASED, ids=IDS)
def test_released_configurations(ours_cls, name, count):
    "Full size, built on the meta device: same parameter count, state-dict keys and shapes as transformers."
    with torch.device('meta'):
        ours = ours_cls(PerceiverConfig(**RELEASED_CONFIGS[name]))
        theirs = theirs_cls(ours_cls)(transformers.PerceiverConfig(**RELEASED_CONFIGS[name]))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == count
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours.perceiver.input_preprocessor.num_channels == theirs.perceiver.input_preprocessor.num_channels
