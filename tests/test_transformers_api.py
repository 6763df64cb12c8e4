"""transformers' public API on our classes, checked against transformers itself.

Tokenizer: `save_pretrained`/`from_pretrained` both ways between the libraries, `truncation_side='left'`,
`text_target=`, `return_token_type_ids`, `pad`, `convert_tokens_to_string`, `decode(clean_up_tokenization_spaces=)`,
special tokens given as `AddedToken`, and `add_tokens`, on generated inputs.
"""
import json
import warnings

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings, strategies as st
from tokenizers import AddedToken

from perceiver_nb.tokenizer import SPECIAL_TOKENS, PerceiverTokenizer

transformers.logging.set_verbosity_error()
SETTINGS = settings(max_examples=150, deadline=None)
HF_LEFT, OURS_LEFT = transformers.PerceiverTokenizer(truncation_side='left'), PerceiverTokenizer(truncation_side='left')
HF, OURS = transformers.PerceiverTokenizer(), PerceiverTokenizer()

pieces = st.one_of(st.text(max_size=8), st.sampled_from(SPECIAL_TOKENS + ('[', ' ,', " n't", ' .', "'s ")))
texts = st.lists(pieces, max_size=4).map(''.join)
options = st.fixed_dictionaries({}, optional={
    'add_special_tokens': st.booleans(),
    'padding': st.sampled_from([False, True, 'max_length']),
    'truncation': st.sampled_from([None, True, 'longest_first', 'only_first', 'only_second']),
    'max_length': st.integers(3, 30),
    'padding_side': st.sampled_from(['right', 'left']),
    'return_token_type_ids': st.sampled_from([None, True, False]),
    'return_special_tokens_mask': st.booleans(),
})


def _tolist(v): return v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v


def _both(ours, theirs, *args, **kw):
    "Call both; both raise a ValueError, or the outputs are equal key by key (as lists)."
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try: expected = theirs(*args, **kw)
        except ValueError:
            with pytest.raises(ValueError): ours(*args, **kw)
            return None
        got = ours(*args, **kw)
    if isinstance(expected['input_ids'], list) and expected['input_ids'] == [] and set(got['input_ids']) <= {0}: return got  # documented quirk: transformers leaves an empty text unpadded
    tolist = _tolist
    assert set(got) == set(expected), (set(got), set(expected))
    for k in expected: assert tolist(got[k]) == tolist(expected[k]), (k, got[k], expected[k])
    return got


@SETTINGS
@given(texts, st.one_of(st.none(), texts), options)
def test_left_truncation_matches_transformers(text, pair, kw):
    if pair is not None and not OURS._text_ids(pair, 'text_pair'): return  # transformers' quirk, see below
    _both(OURS_LEFT, HF_LEFT, text, pair, **kw)


def test_left_truncation_departure_empty_pair():
    "transformers drops an empty second text when it truncates from the left ([CLS] A [SEP], no second [SEP]); we keep the pair."
    assert HF_LEFT('0', '', max_length=3)['input_ids'] == [4, 5]
    assert OURS_LEFT('0', '', max_length=3)['input_ids'] == [4, 5, 5] == HF('0', '', max_length=3)['input_ids']


def test_left_truncation_example_from_the_issue():
    assert OURS_LEFT.encode('abcdef', max_length=3, truncation=True) == HF_LEFT.encode('abcdef', max_length=3, truncation=True) == [4, 108, 5]
    assert OURS.encode('abcdef', max_length=3, truncation=True) == [4, 103, 5]
    with pytest.raises(ValueError, match='`truncation_side` must be one of'): PerceiverTokenizer(truncation_side='middle')


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=3), st.data(), options)
def test_targets_and_token_types_match_transformers(batch, data, kw):
    targets = data.draw(st.lists(texts, min_size=len(batch), max_size=len(batch)))
    pairs = data.draw(st.one_of(st.none(), st.lists(texts, min_size=len(batch), max_size=len(batch))))
    if kw.get('padding') is False or 'padding' not in kw: kw['padding'] = True  # labels of a batch need equal lengths
    _both(OURS, HF, batch, pairs, text_target=targets, **kw)
    _both(OURS, HF, text_target=batch[0], **{k: v for k, v in kw.items() if k != 'padding'})
    _both(OURS, HF, batch[0], text_target=targets[0], text_pair_target=targets[-1], return_token_type_ids=True)


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=4), st.sampled_from([True, 'longest', 'max_length']), st.integers(1, 8),
       st.sampled_from(['right', 'left']), st.sampled_from([None, 'pt', 'np']), st.sampled_from([None, False]), st.booleans())
def test_pad_matches_transformers(batch, padding, multiple, side, tensors, attention, extras):
    examples = [OURS(t, return_token_type_ids=extras, return_special_tokens_mask=extras) for t in batch]
    kw = dict(padding=padding, pad_to_multiple_of=multiple, padding_side=side, return_tensors=tensors, return_attention_mask=attention)
    if padding == 'max_length': kw['max_length'] = 140  # longer than any generated example (4 pieces × 8 chars × 4 bytes + 2)
    if attention is False:  # transformers leaves the examples' own attention_mask ragged; we pad it
        kw['return_attention_mask'] = None
        got = OURS.pad(examples, **{**kw, 'return_attention_mask': False})
        assert all(k in got for k in examples[0]) and _tolist(got['attention_mask']) == _tolist(OURS.pad(examples, **kw)['attention_mask'])
    _both(OURS.pad, HF.pad, examples, **kw)
    as_dict = {k: [e[k] for e in examples] for k in examples[0]}
    _both(OURS.pad, HF.pad, as_dict, **kw)
    if tensors is None: _both(OURS.pad, HF.pad, examples[0], **kw)  # one example


@SETTINGS
@given(texts, st.booleans(), st.sampled_from([None, True, False]))
def test_tokens_to_string_and_clean_up_match_transformers(text, skip, clean):
    tokens = OURS.tokenize(text)
    assert OURS.convert_tokens_to_string(tokens) == HF.convert_tokens_to_string(tokens)
    ids = OURS.encode(text)
    kw = dict(skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    assert OURS.decode(ids, **kw) == HF.decode(ids, **kw)
    assert OURS.batch_decode([ids, ids[:2]], **kw) == HF.batch_decode([ids, ids[:2]], **kw)


@pytest.mark.parametrize('lstrip, rstrip', [(False, False), (True, False), (False, True), (True, True)])
def test_added_token_special_tokens_match_transformers(lstrip, rstrip):
    kw = dict(mask_token=AddedToken('<mask>', lstrip=lstrip, rstrip=rstrip), sep_token=AddedToken('</s>'))
    ours, theirs = PerceiverTokenizer(**kw), transformers.PerceiverTokenizer(**kw)
    assert ours.mask_token == theirs.mask_token == '<mask>' and isinstance(ours.mask_token, str)
    for text in ['a <mask> b', 'a<mask>b', 'x  <mask>  </s> <mask>', ' <mask>']:
        assert ours(text)['input_ids'] == theirs(text)['input_ids'], text


@SETTINGS
@given(st.lists(st.one_of(st.text(min_size=1, max_size=5), st.sampled_from(['a', '[CLS]', 'hello'])), min_size=1, max_size=4),
       st.booleans(), texts)
def test_add_tokens_matches_transformers(new, special, text):
    new = [t for t in new if not (len(t) == 1 and ord(t) < 256)]  # byte characters: a transformers bug, see below
    if not new: return
    ours, theirs = PerceiverTokenizer(), transformers.PerceiverTokenizer()
    assert ours.add_tokens(new, special_tokens=special) == theirs.add_tokens(new, special_tokens=special)
    assert len(ours) == len(theirs) and ours.get_vocab() == theirs.get_vocab()
    assert ours.all_special_ids == theirs.all_special_ids
    text = text + ''.join(new)
    assert ours(text)['input_ids'] == theirs(text)['input_ids']
    ids = ours(text)['input_ids']
    for skip in (False, True): assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def _configure(cls, kind):
    kw = [{}, dict(model_max_length=64, padding_side='left', truncation_side='left'),
          dict(mask_token=AddedToken('<mask>', lstrip=True), cls_token='<s>', clean_up_tokenization_spaces=True)][kind]
    tok = cls(**kw)
    if kind: tok.add_tokens(['<extra>', 'word']); tok.add_tokens(['<sp>'], special_tokens=True)
    return tok


@pytest.mark.parametrize('kind', [0, 1, 2])
def test_save_load_round_trip_both_ways(tmp_path, kind):
    ours, theirs = _configure(PerceiverTokenizer, kind), _configure(transformers.PerceiverTokenizer, kind)
    ours.save_pretrained(tmp_path / 'ours'); theirs.save_pretrained(tmp_path / 'theirs')
    for name in ['tokenizer_config.json', 'added_tokens.json']:  # the same files, the same content
        a, b = tmp_path / 'ours' / name, tmp_path / 'theirs' / name
        assert a.exists() == b.exists(), name
        if a.exists(): assert json.loads(a.read_text()) == json.loads(b.read_text()), name
    text = ['a <mask> <extra>word  <sp>' * 3, 'abc <s>']
    expected = theirs(text, padding=True, truncation=True, max_length=20)
    for loaded in [PerceiverTokenizer.from_pretrained(tmp_path / 'theirs'), transformers.PerceiverTokenizer.from_pretrained(tmp_path / 'ours'),
                   PerceiverTokenizer.from_pretrained(tmp_path / 'ours')]:
        assert len(loaded) == len(theirs) and loaded.special_tokens_map == theirs.special_tokens_map
        assert (loaded.model_max_length, loaded.padding_side, loaded.truncation_side) == (theirs.model_max_length, theirs.padding_side, theirs.truncation_side)
        assert loaded(text, padding=True, truncation=True, max_length=20)['input_ids'] == expected['input_ids']
        ids = expected['input_ids'][0]
        assert loaded.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_loads_transformers_4_files(tmp_path):
    "transformers 4 (and the hub's deepmind/language-perceiver) wrote special_tokens_map.json and AddedToken dicts."
    added = lambda c: {'__type': 'AddedToken', 'content': c, 'lstrip': False, 'normalized': True, 'rstrip': False, 'single_word': False}
    (tmp_path / 'special_tokens_map.json').write_text(json.dumps({f'{r}_token': added(t) for r, t in
        zip(['pad', 'bos', 'eos', 'mask', 'cls', 'sep'], SPECIAL_TOKENS)}))
    (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'model_max_length': 2048, 'name_or_path': 'deepmind/language-perceiver',
        'special_tokens_map_file': None, 'tokenizer_class': 'PerceiverTokenizer', 'pad_token': added('[PAD]')}))
    ours, theirs = PerceiverTokenizer.from_pretrained(tmp_path), transformers.PerceiverTokenizer.from_pretrained(tmp_path)
    assert ours.special_tokens_map == theirs.special_tokens_map and ours.model_max_length == theirs.model_max_length
    assert ours('a [MASK]')['input_ids'] == theirs('a [MASK]')['input_ids']


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='no tokenizer_config.json or special_tokens_map.json at .*no such directory'):
        PerceiverTokenizer.from_pretrained(tmp_path / 'missing')
    with pytest.raises(ValueError, match='holds neither tokenizer_config.json'): PerceiverTokenizer.from_pretrained(tmp_path)
    (tmp_path / 'tokenizer_config.json').write_text('{"tokenizer_class": "BertTokenizer"}')
    with pytest.raises(ValueError, match='BertTokenizer, not a PerceiverTokenizer'): PerceiverTokenizer.from_pretrained(tmp_path)
    (tmp_path / 'tokenizer_config.json').write_text('{broken')
    with pytest.raises(ValueError, match='not valid JSON'): PerceiverTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match='`text` must be a str'): OURS()
    with pytest.raises(ValueError, match='`encoded_inputs` must be a dict'): OURS.pad([[4, 5]])
    with pytest.raises(ValueError, match='`mask_token` must be a non-empty str or AddedToken'): PerceiverTokenizer(mask_token=3)


def test_add_tokens_departure_byte_characters():
    """A one-character token below U+0100 is already a byte token: transformers then encodes that character as the byte
    (losing its UTF-8 form) or marks the byte special; we leave the tokenizer unchanged."""
    ours, theirs = PerceiverTokenizer(), transformers.PerceiverTokenizer()
    assert ours.add_tokens(['\x80', '0'], special_tokens=True) == theirs.add_tokens(['\x80', '0'], special_tokens=True) == 0
    assert theirs('\x80')['input_ids'] == [4, 134, 5] and theirs.decode([54], skip_special_tokens=True) == ''
    assert ours('\x80')['input_ids'] == [4, 200, 134, 5] and ours.decode([54], skip_special_tokens=True) == '0'
    assert ours.all_special_ids == PerceiverTokenizer().all_special_ids


# ---------------------------------------------------------------- models and config
from unittest.mock import patch

from perceiver_nb import (PerceiverConfig, PerceiverForImageClassificationConvProcessing, PerceiverForImageClassificationFourier,
                          PerceiverForImageClassificationLearned, PerceiverForMaskedLM, PerceiverForSequenceClassification,
                          PerceiverModel)

transformers.utils.logging.disable_progress_bar()
TINY = dict(num_latents=5, d_latents=16, d_model=16, num_blocks=2, num_self_attends_per_block=2, num_self_attention_heads=2,
            num_cross_attention_heads=1, qk_channels=16, v_channels=16, max_position_embeddings=12, image_size=6, num_labels=3,
            attention_probs_dropout_prob=0.1)
TASKS = [PerceiverForMaskedLM, PerceiverForSequenceClassification, PerceiverForImageClassificationLearned,
         PerceiverForImageClassificationFourier, PerceiverForImageClassificationConvProcessing]
TASK_IDS = ['mlm', 'seqcls', 'learned', 'fourier', 'conv']


def _inputs(cls, seed=0):
    g = torch.Generator().manual_seed(seed)
    if cls in (PerceiverForMaskedLM, PerceiverForSequenceClassification):
        mask = torch.ones(2, 12, dtype=torch.long); mask[1, 7:] = 0
        labels = torch.randint(0, 262, (2, 12), generator=g) if cls is PerceiverForMaskedLM else torch.tensor([0, 2])
        return dict(inputs=torch.randint(0, 262, (2, 12), generator=g), attention_mask=mask, labels=labels)
    size = (6, 6) if cls is PerceiverForImageClassificationLearned else (17, 19)
    return dict(inputs=torch.randn(2, 3, *size, generator=g), labels=torch.tensor([1, 2]))


def _loss_and_grads(model, kw, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks in both runs
    loss = model(**kw).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('cls', TASKS, ids=TASK_IDS)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(cls):
    torch.manual_seed(0)
    model = cls(PerceiverConfig(**TINY)).train()
    assert cls.supports_gradient_checkpointing and not model.is_gradient_checkpointing
    kw = _inputs(cls)
    loss, grads = _loss_and_grads(model, kw)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    with patch('torch.utils.checkpoint.checkpoint', wraps=torch.utils.checkpoint.checkpoint) as spy:
        loss_ckpt, grads_ckpt = _loss_and_grads(model, kw)
    assert spy.call_count == 1 + TINY['num_blocks'] * TINY['num_self_attends_per_block']  # cross-attention + every self-attention
    assert all(c.kwargs['use_reentrant'] is False for c in spy.call_args_list)
    assert (loss_ckpt - loss).abs().item() <= 1e-6
    assert grads.keys() == grads_ckpt.keys() and len(grads) == sum(1 for p in model.parameters() if p.requires_grad)
    worst = max((grads[n] - grads_ckpt[n]).abs().max().item() for n in grads)
    assert worst <= 1e-6, worst
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


@pytest.mark.parametrize('cls', [PerceiverForMaskedLM, PerceiverForImageClassificationFourier], ids=['mlm', 'fourier'])
def test_gradient_checkpointing_is_off_in_eval_and_no_grad(cls):
    model = cls(PerceiverConfig(**TINY))
    model.gradient_checkpointing_enable()
    kw = _inputs(cls)
    with patch('torch.utils.checkpoint.checkpoint', wraps=torch.utils.checkpoint.checkpoint) as spy:
        model.eval()(**kw)
        with torch.no_grad(): model.train()(**kw)
    assert spy.call_count == 0


def test_gradient_checkpointing_reentrant_and_frozen_backbone():
    "use_reentrant=True (asked for explicitly) turns on enable_input_require_grads, so a frozen backbone still trains its head."
    model = PerceiverForSequenceClassification(PerceiverConfig(**TINY)).train()
    for p in model.perceiver.parameters(): p.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': True})
    loss, grads = _loss_and_grads(model, _inputs(PerceiverForSequenceClassification))
    assert set(grads) == {n for n, p in model.named_parameters() if p.requires_grad} and loss.isfinite()
    model.disable_input_require_grads(); assert model._require_grads_hooks == []


def test_enable_input_require_grads():
    model = PerceiverForMaskedLM(PerceiverConfig(**TINY))
    for p in model.parameters(): p.requires_grad_(False)
    kw = _inputs(PerceiverForMaskedLM)
    assert not model(**kw).logits.requires_grad
    model.enable_input_require_grads()
    assert model(**kw).logits.requires_grad


@pytest.mark.parametrize('cls', TASKS + [PerceiverModel], ids=TASK_IDS + ['model'])
def test_model_api_matches_transformers(cls):
    theirs_cls = getattr(transformers, cls.__name__)
    cfg = {k: v for k, v in TINY.items()}
    ours, theirs = cls._from_config(PerceiverConfig(**cfg)), theirs_cls._from_config(transformers.PerceiverConfig(**cfg))
    assert cls.can_generate() is theirs_cls.can_generate() is False
    assert ours.get_output_embeddings() is None and theirs.get_output_embeddings() is None
    emb, their_emb = ours.get_input_embeddings(), theirs.get_input_embeddings()
    assert type(emb) is type(their_emb) is torch.nn.Parameter and emb.shape == their_emb.shape
    name = next(n for n, p in ours.named_parameters() if p is emb)
    assert name == next(n for n, p in theirs.named_parameters() if p is their_emb)
    half = cls._from_config(PerceiverConfig(**cfg), torch_dtype='float16')
    assert half.dtype == theirs_cls._from_config(transformers.PerceiverConfig(**cfg), dtype=torch.float16).dtype == torch.float16
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours.init_weights()  # a no-op on a built model, as transformers'
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


@pytest.mark.parametrize('kw', [dict(dtype='float16'), dict(torch_dtype='bfloat16'), dict(dtype='float32', torch_dtype='float16'),
                                dict(id2label={0: 'a', 1: 'b'}, label2id={'x': 0, 'y': 1}), dict(label2id={'x': 0, 'y': 1, 'z': 2}),
                                dict(num_labels=3, label2id={'x': 0}), dict(id2label={'0': 'a', '1': 'b', '2': 'c'}), dict(d_model=10, num_labels=4)])
def test_config_matches_transformers(tmp_path, kw):
    ours, theirs = PerceiverConfig(**kw), transformers.PerceiverConfig(**kw)
    assert ours.dtype == theirs.dtype and (ours.dtype is None or isinstance(ours.dtype, torch.dtype))
    assert (ours.id2label, ours.num_labels) == (theirs.id2label, theirs.num_labels)
    if theirs.label2id is None:  # transformers leaves label2id None when id2label alone is given; we invert id2label
        assert 'id2label' in kw and 'label2id' not in kw and ours.label2id == {v: k for k, v in ours.id2label.items()}
    else: assert ours.label2id == theirs.label2id
    drop = lambda d: {k: v for k, v in d.items() if k != 'transformers_version'}
    assert set(ours.to_diff_dict()) == set(drop(theirs.to_diff_dict()))
    assert ours.get_text_config() is ours and theirs.get_text_config() is theirs
    for use_diff in (True, False):
        ours.to_json_file(tmp_path / 'ours.json', use_diff=use_diff)
        back = transformers.PerceiverConfig.from_json_file(tmp_path / 'ours.json')
        assert (back.dtype, back.id2label, back.d_model) == (theirs.dtype, theirs.id2label, theirs.d_model)
        assert back.label2id == ours.label2id
        theirs.to_json_file(tmp_path / 'theirs.json', use_diff=use_diff)
        mine = PerceiverConfig.from_json_file(tmp_path / 'theirs.json')
        assert (mine.dtype, mine.id2label, mine.label2id, mine.d_model) == (ours.dtype, ours.id2label, ours.label2id, ours.d_model)


def test_from_pretrained_options_match_transformers(tmp_path):
    cfg = dict(TINY)
    torch.manual_seed(0)
    theirs = transformers.PerceiverForSequenceClassification(transformers.PerceiverConfig(**cfg)).eval()
    theirs.save_pretrained(tmp_path / 'repo' / 'sub')
    kw = _inputs(PerceiverForSequenceClassification); kw.pop('labels')
    with torch.no_grad(): expected = theirs(**kw).logits
    ours, info = PerceiverForSequenceClassification.from_pretrained(tmp_path / 'repo', subfolder='sub', output_loading_info=True)
    _, their_info = transformers.PerceiverForSequenceClassification.from_pretrained(tmp_path / 'repo', subfolder='sub', output_loading_info=True)
    assert info == {k: set(v) if isinstance(v, (set, list)) and k != 'error_msgs' else v for k, v in their_info.items()}
    with torch.no_grad(): assert (ours(**kw).logits - expected).abs().max() <= 1e-5
    in_memory = PerceiverForSequenceClassification.from_pretrained(None, config=PerceiverConfig(**cfg), state_dict=theirs.state_dict())
    with torch.no_grad(): assert (in_memory(**kw).logits - expected).abs().max() <= 1e-5
    assert PerceiverForSequenceClassification.from_pretrained(tmp_path / 'repo', subfolder='sub', torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    # a backbone checkpoint into a task model: the head is missing, reported like transformers (strict=False)
    theirs.perceiver.save_pretrained(tmp_path / 'backbone')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _, info = PerceiverForSequenceClassification.from_pretrained(tmp_path / 'backbone', strict=False, output_loading_info=True)
    _, their_info = transformers.PerceiverForSequenceClassification.from_pretrained(tmp_path / 'backbone', output_loading_info=True)
    assert info['missing_keys'] == set(their_info['missing_keys']) and info['unexpected_keys'] == set(their_info['unexpected_keys'])


def test_from_pretrained_option_errors(tmp_path):
    with pytest.raises(ValueError, match='`path_or_name` may be None only when both `config` and `state_dict`'):
        PerceiverForMaskedLM.from_pretrained(None, config=PerceiverConfig(**TINY))
    PerceiverForMaskedLM(PerceiverConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no folder 'nope' \\(`subfolder`\\)"): PerceiverForMaskedLM.from_pretrained(tmp_path, subfolder='nope')
    with pytest.raises(ValueError, match='`dtype`=.* and `torch_dtype`=.* disagree'):
        PerceiverForMaskedLM.from_pretrained(tmp_path, dtype='float16', torch_dtype='bfloat16')
    with pytest.raises(ValueError, match='`state_dict` must be a dict'): PerceiverForMaskedLM.from_pretrained(tmp_path, state_dict=[1])
    with pytest.raises(ValueError, match='`dtype` must be None, a floating torch.dtype'): PerceiverConfig(dtype='int8')
    with pytest.raises(ValueError, match='`label2id` must be a dict'): PerceiverConfig(id2label={0: 'a'}, label2id=['a'])


def _bytes_saved_for_backward(model, kw) -> int:
    "Bytes of the activations autograd keeps from the forward pass to the backward pass (parameters not counted)."
    total = [0]
    def pack(t):
        if not isinstance(t, torch.nn.Parameter): total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): loss = model(**kw).loss
    loss.backward()
    return total[0]


def test_gradient_checkpointing_saves_memory():
    "Measured, not timed: fewer activations kept for the backward pass (44% less here, 81% at 8 layers of 256 latents)."
    cfg = PerceiverConfig(**{**TINY, 'num_latents': 32, 'd_latents': 32, 'num_blocks': 1, 'num_self_attends_per_block': 4,
                             'qk_channels': 32, 'v_channels': 32, 'max_position_embeddings': 64})
    model = PerceiverForMaskedLM(cfg).train()
    kw = dict(inputs=torch.randint(0, 262, (2, 64)), labels=torch.randint(0, 262, (2, 64)))
    plain = _bytes_saved_for_backward(model, kw)
    model.gradient_checkpointing_enable()
    assert _bytes_saved_for_backward(model, kw) < 0.7 * plain  # 44% less here: the decoder and the embeddings are not checkpointed


def test_transformers_data_collators_take_our_tokenizer():
    "DataCollatorForLanguageModeling and DataCollatorWithPadding call pad, get_special_tokens_mask, mask_token, len(): same batches."
    examples = [OURS('hello world'), OURS('hi'), OURS('a [MASK] b')]
    for make in [lambda t: transformers.DataCollatorForLanguageModeling(t, mlm_probability=0.3, return_tensors='pt'),
                 lambda t: transformers.DataCollatorWithPadding(t, pad_to_multiple_of=8)]:
        torch.manual_seed(0); ours = make(OURS)(examples)
        torch.manual_seed(0); theirs = make(HF)(examples)
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)


@SETTINGS
@given(texts, st.one_of(st.none(), texts), st.sampled_from([True, 'only_first', 'only_second', 'longest_first']),
       st.integers(3, 20), st.integers(0, 4), st.booleans(), st.sampled_from([False, 'max_length']), st.booleans())
def test_overflowing_tokens_match_transformers(text, pair, truncation, max_length, stride, left, padding, special):
    ours, theirs = (OURS_LEFT, HF_LEFT) if left else (OURS, HF)
    if pair is not None and not OURS._text_ids(pair, 'text_pair'): return  # transformers' empty-pair quirk (see above)
    _both(ours, theirs, text, pair, truncation=truncation, max_length=max_length, stride=stride, padding=padding,
          add_special_tokens=special, return_overflowing_tokens=True)


def test_overflowing_tokens_of_a_batch_per_row():
    "transformers' slow tokenizer fails on a batch here; we give one list (and one count) per row."
    enc = OURS(['abcdefgh', 'ab'], max_length=5, truncation=True, return_overflowing_tokens=True, stride=1)
    assert enc['overflowing_tokens'] == [[105, 106, 107, 108, 109, 110], []] and enc['num_truncated_tokens'] == [5, 0]
    with pytest.raises(AssertionError): HF(['abcdefgh', 'ab'], max_length=5, truncation=True, return_overflowing_tokens=True, stride=1)
    with pytest.raises(ValueError, match='`stride` must be a non-negative int'): OURS('ab', return_overflowing_tokens=True, stride=-1)
