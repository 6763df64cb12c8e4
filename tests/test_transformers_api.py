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
    if padding == 'max_length': kw['max_length'] = 40
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
    with pytest.raises(ValueError, match='must be a directory'): PerceiverTokenizer.from_pretrained(tmp_path / 'missing')
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
