"""Checkpoint interoperability with transformers: `perceiver_nb.weights` reads what transformers writes and the reverse.

Real transformers Perceiver models (tiny configurations, random weights, nothing downloaded) are saved by
transformers and loaded through our functions into stand-in models with transformers' key layout; stand-ins saved by
us are loaded by transformers' `from_pretrained`. Tensors must come back identical (`torch.equal`), not just close.
"""
import copy, io, json, os, sys, warnings

import pytest
import torch
from torch import nn
import transformers
from transformers.models.perceiver import modeling_perceiver as mp

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.weights import (PerceiverPreTrainedModel, init_perceiver_weights, load_state_dict_into,
                                  read_state_dict, resolve_checkpoint, unique_state_dict)

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

TINY = dict(num_latents=6, d_latents=20, d_model=16, num_blocks=1, num_self_attends_per_block=2,
            num_self_attention_heads=2, num_cross_attention_heads=1, vocab_size=20, max_position_embeddings=9,
            num_labels=3)


def hf_config(**overrides): return transformers.PerceiverConfig(**{**TINY, **overrides})
def our_config(hf_cfg): return PerceiverConfig.from_dict(hf_cfg.to_dict())


def assert_same_state(a: dict, b: dict):
    "Same keys, and every tensor identical in dtype, shape and value."
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


def standin_class(model: nn.Module, ties: dict | None = None):
    """A `PerceiverPreTrainedModel` subclass whose state dict has exactly `model`'s keys, shapes, dtypes and buffers.

    Our own `PerceiverModel` is written elsewhere in the series; this tree of bare modules stands in for it. `ties`
    maps a target key to a source key whose parameter it shares (as a tied output projection does)."""
    layout = {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}
    buffers = {k for k, _ in model.named_buffers()}

    class StandIn(PerceiverPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            for key, (shape, dtype) in layout.items():
                *path, leaf = key.split('.')
                mod = self
                for part in path:
                    if part not in mod._modules: mod.add_module(part, nn.Module())
                    mod = mod._modules[part]
                value = torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
                if key in buffers: mod.register_buffer(leaf, value)
                else: mod.register_parameter(leaf, nn.Parameter(value, requires_grad=dtype.is_floating_point))
            for target, source in (ties or {}).items():
                parent, leaf = target.rsplit('.', 1)
                setattr(self.get_submodule(parent), leaf, self.get_parameter(source))
            self.post_init()
    return StandIn


@pytest.fixture(scope='module')
def hf_models():
    torch.manual_seed(0)
    cfg = hf_config()
    return {'base': transformers.PerceiverModel(cfg), 'mlm': transformers.PerceiverForMaskedLM(cfg),
            'conv': transformers.PerceiverForImageClassificationConvProcessing(cfg)}


# ------------------------------------------------------------------ transformers -> ours

@pytest.mark.parametrize('name', ['base', 'mlm', 'conv'])
def test_hf_checkpoint_loads(hf_models, name, tmp_path):
    hf = hf_models[name]
    hf.save_pretrained(tmp_path)
    assert (tmp_path/'model.safetensors').is_file()
    assert_same_state(read_state_dict(tmp_path), hf.state_dict())
    ours = standin_class(hf).from_pretrained(tmp_path)
    assert_same_state(ours.state_dict(), hf.state_dict())
    assert ours.config.num_latents == TINY['num_latents'] and not ours.training
    assert ours.num_parameters() == hf.num_parameters()


def test_conv_checkpoint_has_batchnorm_buffers(hf_models, tmp_path):
    hf = copy.deepcopy(hf_models['conv'])
    with torch.no_grad(): hf.perceiver.input_preprocessor.convnet.batchnorm.running_var.mul_(3)  # non-default values
    hf.perceiver.input_preprocessor.convnet.batchnorm.num_batches_tracked.fill_(7)
    hf.save_pretrained(tmp_path)
    ours = standin_class(hf).from_pretrained(tmp_path)
    assert int(ours.state_dict()['perceiver.input_preprocessor.convnet.batchnorm.num_batches_tracked']) == 7
    assert_same_state(ours.state_dict(), hf.state_dict())


def test_sharded_safetensors(hf_models, tmp_path):
    hf = hf_models['mlm']
    hf.save_pretrained(tmp_path, max_shard_size='20KB')
    index = json.loads((tmp_path/'model.safetensors.index.json').read_text())
    shards = set(index['weight_map'].values())
    assert len(shards) > 1 and not (tmp_path/'model.safetensors').exists()
    assert_same_state(standin_class(hf).from_pretrained(tmp_path).state_dict(), hf.state_dict())


def test_bin_single_and_sharded(hf_models, tmp_path):
    hf = hf_models['mlm']
    state = hf.state_dict()
    single, sharded = tmp_path/'single', tmp_path/'sharded'
    for d in (single, sharded): hf.config.save_pretrained(d)
    torch.save(state, single/'pytorch_model.bin')
    keys = list(state)
    halves = {'pytorch_model-00001-of-00002.bin': keys[:len(keys)//2], 'pytorch_model-00002-of-00002.bin': keys[len(keys)//2:]}
    for file, ks in halves.items(): torch.save({k: state[k] for k in ks}, sharded/file)
    (sharded/'pytorch_model.bin.index.json').write_text(json.dumps(
        {'metadata': {}, 'weight_map': {k: f for f, ks in halves.items() for k in ks}}))
    for d in (single, sharded):
        assert_same_state(standin_class(hf).from_pretrained(d).state_dict(), state)


def test_bin_with_code_is_refused(tmp_path):
    marker = tmp_path/'code_ran'

    class Payload:
        def __reduce__(self): return (io.open, (str(marker), 'w'))

    torch.save({'embeddings.latents': torch.zeros(2, 2), 'x': Payload()}, tmp_path/'pytorch_model.bin')
    with pytest.raises(ValueError, match=r'refused to load .*\(it calls io.open\)'):
        read_state_dict(tmp_path)
    assert not marker.exists()


def test_shard_outside_directory_is_refused(tmp_path):
    (tmp_path/'model.safetensors.index.json').write_text(json.dumps({'weight_map': {'a': '../elsewhere.safetensors'}}))
    with pytest.raises(ValueError, match='names a shard outside its directory'):
        read_state_dict(tmp_path)


def test_no_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match='no weights in'):
        read_state_dict(tmp_path)


def test_task_checkpoint_into_backbone(hf_models, tmp_path):
    "An MLM checkpoint loads into a model with the layout of its backbone: prefix stripped, head key ignored."
    hf = hf_models['mlm']
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r'1 ignored \(outside the backbone\) keys: embedding_decoder.bias'):
        backbone = standin_class(hf.perceiver).from_pretrained(tmp_path)
    assert_same_state(backbone.state_dict(), hf.perceiver.state_dict())


def test_backbone_checkpoint_into_task_model(hf_models, tmp_path):
    "The reverse: the prefix is added, and the head is missing (an error unless strict=False)."
    hf = hf_models['mlm']
    torch.save(hf.perceiver.state_dict(), tmp_path/'pytorch_model.bin'); hf.config.save_pretrained(tmp_path)
    task = standin_class(hf)
    with pytest.raises(ValueError, match=r'missing \(in the model, not in the checkpoint\): 1\n    embedding_decoder.bias \(20,\)'):
        task.from_pretrained(tmp_path)
    with pytest.warns(UserWarning, match='missing'):
        model = task.from_pretrained(tmp_path, strict=False)
    assert torch.equal(model.perceiver.embeddings.latents, hf.perceiver.embeddings.latents)


def test_auto_dtype(hf_models, tmp_path):
    hf = copy.deepcopy(hf_models['base']).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    ours = standin_class(hf).from_pretrained(tmp_path, dtype='auto')
    assert ours.dtype == torch.bfloat16
    assert_same_state(ours.state_dict(), hf.state_dict())
    assert standin_class(hf).from_pretrained(tmp_path).dtype == torch.float32


# ------------------------------------------------------------------ ours -> transformers

@pytest.mark.parametrize('name', ['base', 'mlm', 'conv'])
@pytest.mark.parametrize('safe', [True, False])
def test_ours_loads_in_transformers(hf_models, name, safe, tmp_path):
    hf = hf_models[name]
    torch.manual_seed(1)
    ours = standin_class(hf)(our_config(hf.config))  # random values, unlike hf's
    ours.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path/('model.safetensors' if safe else 'pytorch_model.bin')).is_file()
    back, info = type(hf).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    assert_same_state(back.state_dict(), ours.state_dict())
    assert json.loads((tmp_path/'config.json').read_text())['architectures'] == ['StandIn']


def test_tied_weights_round_trip_with_transformers(tmp_path):
    "Shared tensors are written once, under the name transformers keeps, and transformers re-ties them on load."
    cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16)
    hf = transformers.BertForMaskedLM(cfg)
    ties = {'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight',
            'cls.predictions.decoder.bias': 'cls.predictions.bias'}
    StandIn = standin_class(hf, ties)
    ours = StandIn(PerceiverConfig())
    assert ours.cls.predictions.decoder.weight is ours.bert.embeddings.word_embeddings.weight
    ours.save_pretrained(tmp_path/'ours')
    assert set(ours.state_dict()) - set(read_state_dict(tmp_path/'ours')) == set(ties)
    back, info = transformers.BertForMaskedLM.from_pretrained(tmp_path/'ours', config=cfg, output_loading_info=True)
    assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')), info
    assert_same_state(back.state_dict(), ours.state_dict())
    assert back.cls.predictions.decoder.weight is back.bert.embeddings.word_embeddings.weight
    # and transformers' file (ties removed the same way) loads into ours, the ties filled through their source
    hf.save_pretrained(tmp_path/'theirs')
    mine = StandIn.from_pretrained(tmp_path/'theirs', config=PerceiverConfig())
    assert_same_state(mine.state_dict(), hf.state_dict())
    assert mine.cls.predictions.decoder.weight is mine.bert.embeddings.word_embeddings.weight


def test_unique_state_dict_views():
    w = torch.arange(12.).reshape(3, 4)
    out = unique_state_dict({'a': w, 'alias': w, 'row': w[1], 'col': w[:, 0], 'b': torch.ones(2)})
    assert list(out) == ['a', 'row', 'col', 'b']
    assert torch.equal(out['col'], w[:, 0]) and out['col'].is_contiguous()
    assert out['row'].untyped_storage().data_ptr() != w.untyped_storage().data_ptr()


# ------------------------------------------------------------------ errors list the keys

def test_key_errors_list_names_and_shapes(hf_models, tmp_path):
    hf = hf_models['base']
    state = dict(hf.state_dict())
    del state['encoder.cross_attention.layernorm.bias']
    state['encoder.pooler.weight'] = torch.zeros(2, 3)
    wider = standin_class(transformers.PerceiverModel(hf_config(num_latents=7)))(our_config(hf.config))
    with pytest.raises(ValueError) as err:
        load_state_dict_into(wider, state)
    msg = str(err.value)
    for part in ('does not fit StandIn', 'missing (in the model, not in the checkpoint): 1',
                 'encoder.cross_attention.layernorm.bias (20,)', 'unexpected (in the checkpoint, not in the model): 1',
                 'encoder.pooler.weight (2, 3)', 'mis-shaped (checkpoint vs model): 1', 'embeddings.latents: (6, 20) vs (7, 20)'):
        assert part in msg, (part, msg)
    with pytest.warns(UserWarning):
        info = load_state_dict_into(standin_class(hf)(our_config(hf.config)), state, strict=False)
    assert info['missing'] == ['encoder.cross_attention.layernorm.bias'] and info['unexpected'] == ['encoder.pooler.weight']
    with pytest.raises(ValueError, match=r'embeddings.latents: \(6, 20\) vs \(7, 20\)'):
        load_state_dict_into(wider, hf.state_dict(), strict=False)


def test_long_key_lists_are_capped(hf_models):
    hf = hf_models['mlm']
    with pytest.raises(ValueError, match=r'\.\.\. and \d+ more'):
        load_state_dict_into(standin_class(hf)(our_config(hf.config)), {})


def test_non_persistent_buffers_not_required(tmp_path):
    class WithTable(PerceiverPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(3, 2)
            self.register_buffer('table', torch.linspace(-1, 1, 5), persistent=False)
            self.post_init()
    m = WithTable(PerceiverConfig())
    m.save_pretrained(tmp_path)
    assert set(read_state_dict(tmp_path)) == {'proj.weight', 'proj.bias'}
    assert torch.equal(WithTable.from_pretrained(tmp_path).proj.weight, m.proj.weight)


# ------------------------------------------------------------------ the Hub

def test_offline_hub_name_says_pass_a_directory(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='offline .* pass a local directory'):
        resolve_checkpoint('perceiver-nb/no-such-model')


def test_hub_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # makes `import huggingface_hub` fail
    with pytest.raises(ImportError, match=r"needs huggingface_hub: pip install 'perceiver_nb\[hub\]'.*pass a local directory"):
        PerceiverPreTrainedModel.from_pretrained('perceiver-nb/no-such-model')


# ------------------------------------------------------------------ initialisation equals transformers'

class HFLayoutModel(PerceiverPreTrainedModel):
    "transformers' `PerceiverModel` assembled from its own submodules on our base class, in the same order."
    def __init__(self, config, decoder=None, input_preprocessor=None):
        super().__init__(config)
        self.input_preprocessor = input_preprocessor
        self.output_postprocessor = None
        self.embeddings = mp.PerceiverEmbeddings(config)
        self.encoder = mp.PerceiverEncoder(config, kv_dim=input_preprocessor.num_channels if input_preprocessor else config.d_model)
        self.decoder = decoder
        self.post_init()


class HFLayoutSeqCls(PerceiverPreTrainedModel):
    "transformers' `PerceiverForSequenceClassification`, built the same way (text embeddings, trainable positions)."
    def __init__(self, config):
        super().__init__(config)
        self.perceiver = HFLayoutModel(
            config, input_preprocessor=mp.PerceiverTextPreprocessor(config),
            decoder=mp.PerceiverClassificationDecoder(
                config, num_channels=config.d_latents, use_query_residual=True,
                trainable_position_encoding_kwargs=dict(num_channels=config.d_latents, index_dims=1)))
        self.post_init()


@pytest.mark.parametrize('ours_cls,hf_cls', [(HFLayoutModel, transformers.PerceiverModel),
                                             (HFLayoutSeqCls, transformers.PerceiverForSequenceClassification)])
def test_same_seed_same_initial_weights(ours_cls, hf_cls):
    cfg = hf_config()
    torch.manual_seed(3); hf = hf_cls(cfg)
    torch.manual_seed(3); ours = ours_cls(our_config(cfg))
    assert_same_state(ours.state_dict(), hf.state_dict())
    latents = ours.state_dict()['perceiver.embeddings.latents' if ours_cls is HFLayoutSeqCls else 'embeddings.latents']
    assert latents.std() < 0.1  # re-drawn from N(0, 0.02²), not torch.randn's N(0, 1)
    for kw in ({}, dict(exclude_embeddings=True), dict(only_trainable=True)):
        assert ours.num_parameters(**kw) == hf.num_parameters(**kw), kw


def _init_cases():
    cfg = hf_config()
    return {
        'linear': nn.Linear(5, 3), 'linear_no_bias': nn.Linear(5, 3, bias=False), 'conv2d': nn.Conv2d(3, 4, 3),
        'conv1d': nn.Conv1d(2, 3, 1), 'embedding': nn.Embedding(7, 4), 'embedding_padding': nn.Embedding(7, 4, padding_idx=2),
        'layernorm': nn.LayerNorm(6), 'layernorm_no_affine': nn.LayerNorm(6, elementwise_affine=False),
        'batchnorm': nn.BatchNorm2d(4), 'groupnorm': nn.GroupNorm(2, 4),
        'latents': mp.PerceiverEmbeddings(cfg),
        'trainable_pe': mp.PerceiverTrainablePositionEncoding(index_dims=5, num_channels=3),
        'parameter_dict': nn.ParameterDict({'audio': nn.Parameter(torch.zeros(1, 4)), 'image': nn.Parameter(torch.zeros(1, 4))}),
        'text_preprocessor': mp.PerceiverTextPreprocessor(cfg),
    }


@pytest.mark.parametrize('case', list(_init_cases()))
def test_init_rule_matches_transformers(case, hf_models):
    "Each module kind, initialised by transformers' `_init_weights` and by ours from the same seed, comes out equal."
    module = _init_cases()[case]
    with torch.no_grad():  # disturb every tensor, buffers included, so a rule that does nothing would show
        for t in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]: t.add_(0.5)
    theirs, ours = copy.deepcopy(module), copy.deepcopy(module)
    std = hf_models['base'].config.initializer_range
    for m in theirs.modules(): m._is_hf_initialized = False
    torch.manual_seed(5)
    for m in theirs.modules(): hf_models['base']._init_weights(m)
    torch.manual_seed(5)
    for m in ours.modules(): init_perceiver_weights(m, std)
    assert_same_state(ours.state_dict(), theirs.state_dict())
    if case == 'embedding_padding': assert not ours.weight[2].any()
