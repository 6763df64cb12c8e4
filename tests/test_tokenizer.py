"""Property tests: `perceiver_nb.tokenizer.PerceiverTokenizer` against transformers' `PerceiverTokenizer`.

Random Unicode text (any code point except the surrogates, with special-token strings and fragments of them mixed
in) is encoded by both tokenizers as single texts, pairs and batches under every padding / truncation / max_length /
return_tensors combination; the outputs must be identical. Decoding random id sequences (mostly invalid UTF-8) must
match too and never crash. Deliberate departures from transformers (documented in nbs/01_bytes_tokenizer.ipynb) are
asserted separately.
"""
import warnings

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings, strategies as st

from perceiver_nb.tokenizer import NUM_SPECIAL_TOKENS, SPECIAL_TOKENS, VOCAB_SIZE, BatchEncoding, PerceiverTokenizer

transformers.logging.set_verbosity_error()  # transformers logs a note on every truncated pair
HF = transformers.PerceiverTokenizer()
OURS = PerceiverTokenizer()
SETTINGS = settings(max_examples=200, deadline=None)

# text: random Unicode (st.text excludes surrogates) with special tokens and pieces of them glued in
pieces = st.one_of(st.text(max_size=10), st.sampled_from(SPECIAL_TOKENS + ('[', ']', '[MAS', 'K]', '[[SEP]]', '[CLS')))
texts = st.lists(pieces, max_size=5).map(''.join)
call_options = st.fixed_dictionaries({}, optional={
    'add_special_tokens': st.booleans(),
    'padding': st.sampled_from([False, True, 'longest', 'max_length', 'do_not_pad']),
    'truncation': st.sampled_from([None, False, True, 'longest_first', 'only_first', 'only_second', 'do_not_truncate']),
    'max_length': st.integers(1, 40),
    'pad_to_multiple_of': st.integers(1, 8),
    'padding_side': st.sampled_from(['right', 'left']),
    'return_tensors': st.sampled_from([None, 'pt', 'np']),
    'return_attention_mask': st.sampled_from([None, True, False]),
    'return_special_tokens_mask': st.booleans(),
    'split_special_tokens': st.booleans(),
})


def _equal(ours, theirs) -> bool:
    if isinstance(theirs, torch.Tensor):
        return isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype == torch.int64 and torch.equal(ours, theirs)
    if isinstance(theirs, np.ndarray):
        return isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype == np.int64 and ours.shape == theirs.shape \
            and np.array_equal(ours, theirs)
    return type(ours) is type(theirs) and ours == theirs


def _is_empty_unpadded_quirk(args, kw) -> bool:
    "transformers leaves a single sequence with no ids at all unpadded; we pad it (see the notebook)."
    text, pair = args[0], (args[1] if len(args) > 1 else None)
    if not isinstance(text, str) or kw.get('add_special_tokens', True) or kw.get('padding') != 'max_length': return False
    split = kw.get('split_special_tokens', False)
    return not OURS._text_ids(text, 'text', split) and not (pair and OURS._text_ids(pair, 'text_pair', split))


def check_call(*args, **kw):
    "Call both tokenizers; both must raise, or give identical outputs (ours may refuse a ragged 'np' batch)."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            theirs = HF(*args, **kw)
    except ValueError as e:
        with pytest.raises(ValueError):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                OURS(*args, **kw)
        return e
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            ours = OURS(*args, **kw)
        except ValueError as e:  # rows of unequal lengths: we refuse to make a tensor, transformers may not
            assert 'cannot stack' in str(e), e
            rows = OURS(*args, **{**kw, 'return_tensors': None})['input_ids']
            assert len({len(r) for r in rows}) > 1
            # transformers returns an object array for 'np', and for 'pt' an empty (B, 0) float tensor when the
            # first row is empty (torch.tensor([[], [54]]) does not raise)
            ids = theirs['input_ids']
            assert ids.dtype == object if kw['return_tensors'] == 'np' else ids.shape == (len(rows), 0), ids
            return e
    assert isinstance(ours, BatchEncoding)
    if _is_empty_unpadded_quirk(args, kw):
        n, k = kw.get('max_length', 2048), kw.get('pad_to_multiple_of') or 1
        n = -(-n // k) * k
        assert list(np.asarray(ours['input_ids']).reshape(-1)) == [0] * n
        return ours
    assert set(ours) == set(theirs), (set(ours), set(theirs))
    for k in theirs: assert _equal(ours[k], theirs[k]), (k, ours[k], theirs[k])
    return ours


@SETTINGS
@given(texts, call_options)
def test_single_text_matches_transformers(text, kw):
    check_call(text, **kw)


@SETTINGS
@given(texts, texts, call_options)
def test_pair_matches_transformers(text, pair, kw):
    check_call(text, pair, **kw)


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=4), st.booleans(), st.booleans(), st.data(), call_options)
def test_batch_matches_transformers(batch, with_pairs, as_tuples, data, kw):
    if not with_pairs: check_call(batch, **kw); return
    pairs = data.draw(st.lists(texts, min_size=len(batch), max_size=len(batch)))
    if as_tuples: check_call([(a, b) for a, b in zip(batch, pairs)], **kw)
    else: check_call(batch, pairs, **kw)


def test_ragged_tensors_raise():
    for rt in ['pt', 'np']:
        with pytest.raises(ValueError, match='pass `padding=True`'): OURS(['a', 'abc'], return_tensors=rt)
    with pytest.raises(ValueError): HF(['a', 'abc'], return_tensors='pt')


@SETTINGS
@given(texts)
def test_tokens_and_masks_match_transformers(text):
    assert OURS.tokenize(text) == HF.tokenize(text)
    tokens = OURS.tokenize(text)
    assert OURS.convert_tokens_to_ids(tokens) == HF.convert_tokens_to_ids(tokens)
    ids = OURS.encode(text, add_special_tokens=False)
    assert OURS.convert_ids_to_tokens(ids) == HF.convert_ids_to_tokens(ids)
    assert OURS.convert_ids_to_tokens(ids, skip_special_tokens=True) == HF.convert_ids_to_tokens(ids, skip_special_tokens=True)
    assert OURS.encode(text) == HF.encode(text)
    for pair in [None, ids[:3]]:
        assert OURS.build_inputs_with_special_tokens(ids, pair) == HF.build_inputs_with_special_tokens(ids, pair)
        assert OURS.get_special_tokens_mask(ids, pair) == HF.get_special_tokens_mask(ids, pair)
    assert OURS.get_special_tokens_mask(ids, already_has_special_tokens=True) == \
        HF.get_special_tokens_mask(ids, already_has_special_tokens=True)


@SETTINGS
@given(texts)
def test_round_trip(text):
    assert OURS.decode(OURS(text, split_special_tokens=True)['input_ids'], skip_special_tokens=True) == text
    assert OURS.decode(OURS(text, add_special_tokens=False)['input_ids']) == text  # special tokens come back as text
    assert OURS.decode(OURS(text)['input_ids']) == f'[CLS]{text}[SEP]'
    if not any(t in text for t in SPECIAL_TOKENS):
        assert OURS.decode(OURS(text)['input_ids'], skip_special_tokens=True) == text


@SETTINGS
@given(st.lists(st.text(), min_size=1, max_size=4))
def test_batch_round_trip(batch):
    enc = OURS(batch, padding=True, return_tensors='pt', split_special_tokens=True)
    assert OURS.batch_decode(enc['input_ids'], skip_special_tokens=True) == batch


ids_lists = st.lists(st.integers(0, VOCAB_SIZE - 1), max_size=30)


@SETTINGS
@given(ids_lists, st.booleans())
def test_decode_random_ids_matches_transformers(ids, skip):
    expected = HF.decode(ids, skip_special_tokens=skip)
    assert OURS.decode(ids, skip_special_tokens=skip) == expected
    assert OURS.decode(torch.tensor(ids, dtype=torch.long), skip_special_tokens=skip) == expected
    assert OURS.decode(np.array(ids, dtype=np.int64), skip_special_tokens=skip) == expected


@SETTINGS
@given(st.lists(ids_lists, min_size=1, max_size=4), st.booleans())
def test_batch_decode_random_ids_matches_transformers(batch, skip):
    assert OURS.batch_decode(batch, skip_special_tokens=skip) == HF.batch_decode(batch, skip_special_tokens=skip)
    assert OURS.decode(batch, skip_special_tokens=skip) == HF.decode(batch, skip_special_tokens=skip)
    width = max(map(len, batch))
    square = np.array([row + [0] * (width - len(row)) for row in batch], dtype=np.int64)
    assert OURS.batch_decode(torch.from_numpy(square), skip_special_tokens=skip) == HF.batch_decode(square, skip_special_tokens=skip)


@SETTINGS
@given(st.binary(max_size=40))
def test_decode_arbitrary_bytes(data):
    "Any byte string, valid UTF-8 or not, decodes like Python's errors='replace'."
    assert OURS.decode([b + NUM_SPECIAL_TOKENS for b in data]) == data.decode('utf-8', errors='replace')


@SETTINGS
@given(st.lists(st.integers(), min_size=1, max_size=10).filter(lambda ids: any(not 0 <= i < VOCAB_SIZE for i in ids)))
def test_decode_out_of_range_raises(ids):
    with pytest.raises(ValueError, match=r'`token_ids` values must lie in \[0, 262\)'): OURS.decode(ids)
    with pytest.raises(ValueError, match='`sequences` values must lie'): OURS.batch_decode([ids])


@pytest.mark.parametrize('bad, message', [
    (3, '`text` must be a str or a list of str, got int'), (None, '`text` must be a str'),
    (b'abc', 'got bytes'), (['a', 7], '`text[1]` must be a str, got int'), ([], 'empty batch'),
    ('a\ud800', '`text` contains'),
])
def test_bad_text_names_the_argument(bad, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')): OURS(bad)


def test_bad_arguments_name_the_argument():
    for kw, message in [(dict(padding='yes'), '`padding` must be one of'), (dict(truncation='some'), '`truncation` must be one of'),
                        (dict(max_length=0), '`max_length` must be a positive int'), (dict(return_tensors='tf'), '`return_tensors`'),
                        (dict(padding_side='middle'), '`padding_side`'), (dict(pad_to_multiple_of=-2), '`pad_to_multiple_of`')]:
        with pytest.raises(ValueError, match=message): OURS('abc', **kw)
    with pytest.raises(ValueError, match='`text_pair` must be a list of 2'): OURS(['a', 'b'], ['c'])
    with pytest.raises(ValueError, match='`text_pair` must be a str'): OURS('a', ['b'])
    with pytest.raises(ValueError, match='must hold integer ids'): OURS.decode([1.5])
    with pytest.raises(ValueError, match='`tokens` must hold special tokens'): OURS.convert_tokens_to_ids(['ab'])


def test_attributes_match_transformers():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        tok = PerceiverTokenizer()
    for attr in ['vocab_size', 'model_max_length', 'model_input_names', 'all_special_tokens', 'all_special_ids',
                 'special_tokens_map', 'padding_side', 'truncation_side', 'unk_token', 'unk_token_id']:
        assert getattr(tok, attr) == getattr(HF, attr), attr
    for role in ['pad', 'bos', 'eos', 'mask', 'cls', 'sep']:
        assert getattr(tok, f'{role}_token') == getattr(HF, f'{role}_token')
        assert getattr(tok, f'{role}_token_id') == getattr(HF, f'{role}_token_id')
    assert (tok.vocab_size, len(tok)) == (256, 262) == (HF.vocab_size, len(HF))
    assert tok.get_vocab() == HF.get_vocab()
    assert [tok.num_special_tokens_to_add(p) for p in (False, True)] == [HF.num_special_tokens_to_add(p) for p in (False, True)]


def test_custom_special_tokens_match_transformers():
    kw = dict(mask_token='<mask>', cls_token='<s>', sep_token='</s>', pad_token='<pad>')
    ours, theirs = PerceiverTokenizer(**kw), transformers.PerceiverTokenizer(**kw)
    text = 'a <mask> b</s><s>[MASK]<pad'
    assert ours(text, padding='max_length', max_length=40)['input_ids'] == theirs(text, padding='max_length', max_length=40)['input_ids']
    ids = ours(text, padding='max_length', max_length=40)['input_ids']
    assert ours.decode(ids) == theirs.decode(ids)
    assert ours.all_special_ids == theirs.all_special_ids and ours.special_tokens_map == theirs.special_tokens_map


def test_deliberate_departures():
    "Where transformers has a quirk, we do the sensible thing (documented in the notebook)."
    assert OURS('', add_special_tokens=False, padding='max_length', max_length=3)['input_ids'] == [0, 0, 0]
    assert HF('', add_special_tokens=False, padding='max_length', max_length=3)['input_ids'] == []
    assert OURS.decode(3, skip_special_tokens=True) == '' and HF.decode(3, skip_special_tokens=True) == '[MASK]'
    assert OURS.decode(3) == HF.decode(3) == '[MASK]'


def test_batch_encoding_access_and_device():
    enc = OURS(['ab', 'c'], padding=True, return_tensors='pt')
    assert enc.input_ids is enc['input_ids'] and enc.to('cpu') is enc
    with pytest.raises(AttributeError, match='token_type_ids'): enc.token_type_ids
