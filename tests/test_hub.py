"""Loading by Hub name, offline first (`perceiver_nb.hub.resolve_pretrained`, used by all four loaders).

A cache is laid out in the Hub's format (`models--owner--name/{blobs,snapshots,refs}`) from a tiny transformers model,
tokenizer and image processor written by their own `save_pretrained`; nothing is downloaded: the network is ruled out
with `HF_HUB_OFFLINE=1`, or with `HF_ENDPOINT` at a closed port of this machine (connection refused), or a port that
accepts and never answers. Our model, config, tokenizer and image processor load from that cache by name and equal the
transformers objects (logits within 1e-4 in float32); transformers itself loads the same cache (the layout is right);
with nothing cached and no Hub the error names the repository and the cache and comes within seconds. Also: the four
`save_pretrained`/`from_pretrained` round trips in both directions, and the online path (mocked Hub client) fetching
safetensors first and `.bin` only when there are none.
"""
import json, os, shutil, socket, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import perceiver_nb.hub as hub
from perceiver_nb import (PerceiverConfig, PerceiverForMaskedLM, PerceiverImageProcessor, PerceiverTokenizer,
                          copy_to_hub_cache, resolve_pretrained)

ROOT = Path(__file__).resolve().parent.parent
NAME = 'deepmind/language-perceiver'
CLOSED = 'http://127.0.0.1:9'  # the discard port: nothing listens there, so a connection is refused at once
TINY = dict(num_latents=5, d_latents=16, d_model=16, num_blocks=2, num_self_attends_per_block=2, num_self_attention_heads=2,
            num_cross_attention_heads=1, qk_channels=16, v_channels=16, max_position_embeddings=12)
IMAGE_CFG = dict(size={'height': 20, 'width': 24}, crop_size={'height': 22, 'width': 26})
LOADERS = {'model': PerceiverForMaskedLM, 'config': PerceiverConfig, 'tokenizer': PerceiverTokenizer,
           'image_processor': PerceiverImageProcessor}
FAIL_WITHIN_S = 5.0  # only to catch hangs (retries, missing timeouts); this is not a performance test


def _theirs():
    torch.manual_seed(0)
    model = transformers.PerceiverForMaskedLM(transformers.PerceiverConfig(**TINY)).eval()
    return model, transformers.PerceiverTokenizer(), transformers.PerceiverImageProcessorPil(**IMAGE_CFG)


@pytest.fixture(scope='module')
def theirs():
    return _theirs()


@pytest.fixture(scope='module')
def cache(tmp_path_factory, theirs) -> Path:
    "A Hugging Face cache holding `NAME` at 'main', written by transformers' save_pretrained and laid out by copy_to_hub_cache."
    src, cache = tmp_path_factory.mktemp('src'), tmp_path_factory.mktemp('cache')
    for thing in theirs: thing.save_pretrained(src)
    copy_to_hub_cache(src, NAME, cache)
    return cache


@pytest.fixture
def no_env(monkeypatch):
    "No Hub setting of the machine running the tests leaks in."
    for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME',
              'HF_HUB_ETAG_TIMEOUT'):
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def _inputs():
    text = ['Perceiver', 'héllo wörld']
    image = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    return text, image


def _assert_same(ours: dict, theirs) -> dict:
    "Our four loaded objects compute what transformers' do; returns the measured differences."
    model, tok, proc = theirs
    text, image = _inputs()
    ids = tok(text, padding='max_length', truncation=True, max_length=TINY['max_position_embeddings'], return_tensors='pt')
    assert ours['tokenizer'](text, padding='max_length', truncation=True, max_length=12)['input_ids'] == ids['input_ids'].tolist()
    with torch.no_grad():
        logits_diff = (ours['model'](inputs=ids['input_ids'], attention_mask=ids['attention_mask']).logits
                       - model(inputs=ids['input_ids'], attention_mask=ids['attention_mask']).logits).abs().max().item()
    assert logits_diff <= 1e-4, logits_diff
    pixel_diff = float(np.abs(ours['image_processor'](image, return_tensors='np').pixel_values
                              - proc(image, return_tensors='np')['pixel_values']).max())
    assert pixel_diff <= 1e-5, pixel_diff
    for k in [*TINY, 'num_labels', 'id2label', 'vocab_size', 'hidden_act', 'cross_attention_shape_for_attention']:
        assert getattr(ours['config'], k) == getattr(model.config, k), k
    return {'logits': logits_diff, 'pixel_values': pixel_diff}


# ------------------------------------------------------------------ loading by name from the cache, no network

def test_all_four_load_by_name_offline(cache, theirs, no_env):
    no_env.setenv('HF_HUB_OFFLINE', '1'); no_env.setenv('HF_HUB_CACHE', str(cache))  # set after import: read at call time
    ours = {kind: cls.from_pretrained(NAME) for kind, cls in LOADERS.items()}
    _assert_same(ours, theirs)


def test_all_four_load_by_name_with_the_hub_unreachable(cache, theirs, no_env):
    "Not offline, but the cache answers first: the Hub is never asked (asking it would fail: a closed port, and the mock)."
    no_env.setenv('HF_ENDPOINT', CLOSED)
    def never(*a, **k): raise AssertionError('the Hub was asked although the cache holds the files')
    no_env.setattr(hub, '_download', never)
    ours = {kind: cls.from_pretrained(NAME, cache_dir=cache) for kind, cls in LOADERS.items()}
    _assert_same(ours, theirs)


def test_a_fresh_process_loads_by_name_from_the_cache(cache, tmp_path):
    "As a user runs it: the environment set before Python starts, no offline flag, the Hub unreachable."
    code = textwrap.dedent(f'''
        import time
        from perceiver_nb import PerceiverForMaskedLM, PerceiverConfig
        model = PerceiverForMaskedLM.from_pretrained({NAME!r})
        start = time.perf_counter()
        try: PerceiverConfig.from_pretrained('deepmind/not-cached')
        except FileNotFoundError as e: print(round(time.perf_counter() - start, 2), '|', e)
        print(model.num_parameters())
    ''')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'TRANSFORMERS_'))},
           'HF_HUB_CACHE': str(cache), 'HF_ENDPOINT': CLOSED, 'PYTHONPATH': str(ROOT)}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    error, params = out.stdout.strip().splitlines()[-2:]
    assert float(error.split('|')[0]) < FAIL_WITHIN_S and 'could not be reached' in error and str(cache) in error
    assert int(params) == sum(p.numel() for p in _theirs()[0].parameters())


def test_transformers_loads_the_same_cache(cache, theirs, no_env):
    "The layout is the Hub's: transformers' own from_pretrained finds all four in it, offline."
    kw = dict(cache_dir=cache, local_files_only=True)
    loaded = {'model': transformers.PerceiverForMaskedLM.from_pretrained(NAME, **kw).eval(),
              'config': transformers.AutoConfig.from_pretrained(NAME, **kw),
              'tokenizer': transformers.PerceiverTokenizer.from_pretrained(NAME, **kw),
              'image_processor': transformers.PerceiverImageProcessorPil.from_pretrained(NAME, **kw)}
    assert isinstance(loaded['config'], transformers.PerceiverConfig)
    model, tok, proc = theirs
    text, image = _inputs()
    ids = tok(text, padding='max_length', truncation=True, max_length=12, return_tensors='pt')['input_ids']
    with torch.no_grad(): assert torch.equal(loaded['model'](inputs=ids).logits, model(inputs=ids).logits)
    assert loaded['tokenizer'](text)['input_ids'] == tok(text)['input_ids']
    assert np.array_equal(loaded['image_processor'](image, return_tensors='np')['pixel_values'],
                          proc(image, return_tensors='np')['pixel_values'])


def test_revision_subfolder_and_bin_only(tmp_path, theirs, no_env):
    "A tag other than main, files in a subfolder, and weights only as pytorch_model.bin (read without unpickling code)."
    model = theirs[0]
    model.config.save_pretrained(tmp_path/'src'/'mlm')  # transformers 5 writes only safetensors: the .bin by hand, as 4.x did
    torch.save(model.state_dict(), tmp_path/'src'/'mlm'/'pytorch_model.bin')
    assert (tmp_path/'src'/'mlm'/'pytorch_model.bin').is_file() and not (tmp_path/'src'/'mlm'/'model.safetensors').exists()
    copy_to_hub_cache(tmp_path/'src', 'someone/bin-only', tmp_path/'cache', revision='v1')
    no_env.setenv('HF_HUB_OFFLINE', '1')
    ours = PerceiverForMaskedLM.from_pretrained('someone/bin-only', cache_dir=tmp_path/'cache', revision='v1', subfolder='mlm')
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ours.state_dict().items())
    with pytest.raises(FileNotFoundError, match="revision 'main'"):
        PerceiverForMaskedLM.from_pretrained('someone/bin-only', cache_dir=tmp_path/'cache', subfolder='mlm')


def test_an_incomplete_snapshot_is_not_used(tmp_path, no_env):
    "A config without its weights (an interrupted download) serves the config, never a model."
    PerceiverConfig(**TINY).save_pretrained(tmp_path/'src')
    copy_to_hub_cache(tmp_path/'src', 'someone/half', tmp_path/'cache')
    no_env.setenv('HF_HUB_OFFLINE', '1')
    assert PerceiverConfig.from_pretrained('someone/half', cache_dir=tmp_path/'cache').num_latents == 5
    with pytest.raises(FileNotFoundError, match=r'has no config.json \+ model.safetensors or'):
        PerceiverForMaskedLM.from_pretrained('someone/half', cache_dir=tmp_path/'cache')


# ------------------------------------------------------------------ the error when nothing works

@pytest.mark.parametrize('kind', list(LOADERS))
def test_nothing_cached_and_the_hub_unreachable_fails_fast(kind, tmp_path, no_env):
    no_env.setenv('HF_ENDPOINT', CLOSED)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as e: LOADERS[kind].from_pretrained('deepmind/not-cached', cache_dir=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < FAIL_WITHIN_S, elapsed
    msg = str(e.value)
    for part in ("cannot load 'deepmind/not-cached'", str(tmp_path), 'models--deepmind--not-cached', "revision 'main'",
                 f'the Hub at {CLOSED} could not be reached', 'ConnectError', 'To fix', 'HF_HUB_CACHE', 'pass a local directory',
                 hub._wanted(kind)):
        assert part in msg, (part, msg)


def test_a_hub_that_never_answers_fails_within_the_timeout(tmp_path, no_env):
    "A port that accepts connections and never replies: the wait is bounded by HF_HUB_ETAG_TIMEOUT, with no retries."
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0)); server.listen(8)  # the kernel completes connections; nobody reads or answers
        no_env.setenv('HF_ENDPOINT', f'http://127.0.0.1:{server.getsockname()[1]}')
        no_env.setenv('HF_HUB_ETAG_TIMEOUT', '1')
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match='could not be reached .*Timeout'):
            PerceiverTokenizer.from_pretrained('deepmind/not-cached', cache_dir=tmp_path)
        elapsed = time.perf_counter() - start
    assert 0.9 < elapsed < FAIL_WITHIN_S, elapsed


@pytest.mark.parametrize('how', ['HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'local_files_only'])
def test_offline_never_asks_the_hub(how, tmp_path, no_env):
    def never(*a, **k): raise AssertionError('the Hub was asked while offline')
    no_env.setattr(hub, '_download', never)
    kw = {'local_files_only': True} if how == 'local_files_only' else {}
    if how != 'local_files_only': no_env.setenv(how, '1')
    why = '`local_files_only=True`' if how == 'local_files_only' else 'HF_HUB_OFFLINE is set'
    with pytest.raises(FileNotFoundError, match=f'offline mode: {why}'):
        PerceiverConfig.from_pretrained('deepmind/not-cached', cache_dir=tmp_path, **kw)


def test_paths_that_are_not_repo_ids(tmp_path, no_env):
    for name in [tmp_path/'missing', './checkpoints/mlm', 'a/b/c', Path('owner/name')]:  # a Path is never a repository id
        with pytest.raises(FileNotFoundError, match='no config.json at .*no such directory, and not a Hub repository id'):
            PerceiverConfig.from_pretrained(name)
    (tmp_path/'weights.bin').write_bytes(b'')
    with pytest.raises(ValueError, match='is a file, not a checkpoint directory'): PerceiverForMaskedLM.from_pretrained(tmp_path/'weights.bin')
    with pytest.raises(ValueError, match='`kind` must be one of'): resolve_pretrained(tmp_path, 'weights.bin')


@pytest.mark.parametrize('kind', list(LOADERS))
def test_without_huggingface_hub(kind, tmp_path, no_env, theirs):
    "A name needs the optional extra, and the error says so; a local directory never does."
    for thing in theirs: thing.save_pretrained(tmp_path)
    no_env.setitem(sys.modules, 'huggingface_hub', None)  # makes `import huggingface_hub` fail
    with pytest.raises(ImportError, match=r"pip install 'perceiver_nb\[hub\]'"): LOADERS[kind].from_pretrained(NAME)
    LOADERS[kind].from_pretrained(tmp_path)


def test_copy_to_hub_cache_errors(tmp_path):
    with pytest.raises(ValueError, match='`repo_id` must be a Hub repository id'): copy_to_hub_cache(tmp_path, './x', tmp_path)
    with pytest.raises(FileNotFoundError, match='`directory`'): copy_to_hub_cache(tmp_path/'nope', 'a/b', tmp_path)
    with pytest.raises(ValueError, match='holds no files'): copy_to_hub_cache(tmp_path, 'a/b', tmp_path/'cache')


def test_settings_declare_the_hub_extra():
    "`pip install perceiver_nb[hub]` installs huggingface_hub, declared in settings.ini as the dev extra is."
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini')
    assert cfg['DEFAULT']['hub_requirements'].startswith('huggingface_hub>=')
    assert "'hub': hub_requirements" in (ROOT/'setup.py').read_text()


# ------------------------------------------------------------------ online (the Hub client mocked: no network here)

class FakeHub:
    "Stands in for huggingface_hub's HfApi.model_info and snapshot_download over a repository held in a local folder."
    def __init__(self, repo: Path, cache: Path):
        self.repo, self.cache, self.calls = repo, cache, []

    def model_info(self, repo_id, revision=None, timeout=None):
        self.calls.append(('model_info', timeout)); return object()

    def snapshot_download(self, repo_id, revision, cache_dir, allow_patterns, **kw):
        import fnmatch
        self.calls.append(('snapshot_download', tuple(allow_patterns)))
        picked = [p for p in self.repo.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in allow_patterns)]
        staged = self.cache.parent/f'staged-{len(self.calls)}'; staged.mkdir()
        for p in picked: shutil.copy(p, staged/p.name)
        (staged/'.keep').write_text('')  # copy_to_hub_cache needs a directory; hidden files are skipped
        return str(copy_to_hub_cache(staged, repo_id, cache_dir, revision)) if picked else str(staged)


@pytest.mark.parametrize('safe', [True, False])
def test_online_downloads_only_what_is_needed_safetensors_first(safe, tmp_path, theirs, no_env):
    import huggingface_hub
    theirs[0].save_pretrained(tmp_path/'repo'); theirs[1].save_pretrained(tmp_path/'repo')
    if not safe:  # a repository with only a .bin, as many older ones are
        (tmp_path/'repo'/'model.safetensors').unlink()
        torch.save(theirs[0].state_dict(), tmp_path/'repo'/'pytorch_model.bin')
    fake = FakeHub(tmp_path/'repo', tmp_path/'cache')
    no_env.setattr(huggingface_hub.HfApi, 'model_info', lambda self, *a, **k: fake.model_info(*a, **k))
    no_env.setattr(huggingface_hub, 'snapshot_download', fake.snapshot_download)
    no_env.setenv('HF_HUB_ETAG_TIMEOUT', '3')
    ours = PerceiverForMaskedLM.from_pretrained('someone/online', cache_dir=tmp_path/'cache')
    assert all(torch.equal(v, theirs[0].state_dict()[k]) for k, v in ours.state_dict().items())
    downloads = [c[1] for c in fake.calls if c[0] == 'snapshot_download']
    assert fake.calls[0] == ('model_info', 3.0)
    assert 'model.safetensors' in downloads[0] and 'tokenizer_config.json' not in downloads[0]
    assert len(downloads) == (1 if safe else 2) and (safe or 'pytorch_model.bin' in downloads[1])
    fake.calls.clear()  # now cached: the next load asks nothing
    no_env.setenv('HF_HUB_OFFLINE', '1')
    PerceiverForMaskedLM.from_pretrained('someone/online', cache_dir=tmp_path/'cache')
    assert fake.calls == []


def test_online_repository_errors(tmp_path, no_env):
    import huggingface_hub
    from huggingface_hub.utils import RepositoryNotFoundError
    def missing(self, *a, **k):
        raise RepositoryNotFoundError('404', response=type('R', (), {'headers': {}, 'status_code': 404, 'request': None})())
    no_env.setattr(huggingface_hub.HfApi, 'model_info', missing)
    with pytest.raises(FileNotFoundError, match="no repository 'someone/nothing' on the Hub"):
        PerceiverConfig.from_pretrained('someone/nothing', cache_dir=tmp_path)


# ------------------------------------------------------------------ save_pretrained / from_pretrained, both ways

def test_all_four_round_trip_both_ways(tmp_path, theirs):
    "transformers saves, we load; we save, transformers loads: the same numbers either way."
    model, tok, proc = theirs
    for thing in theirs: thing.save_pretrained(tmp_path/'theirs')
    ours = {'model': PerceiverForMaskedLM.from_pretrained(tmp_path/'theirs'), 'config': PerceiverConfig.from_pretrained(tmp_path/'theirs'),
            'tokenizer': PerceiverTokenizer.from_pretrained(tmp_path/'theirs'),
            'image_processor': PerceiverImageProcessor.from_pretrained(tmp_path/'theirs')}
    _assert_same(ours, theirs)
    for kind in ('model', 'tokenizer', 'image_processor'): ours[kind].save_pretrained(tmp_path/'ours')
    ours['config'].save_pretrained(tmp_path/'ours_config')
    back = (transformers.PerceiverForMaskedLM.from_pretrained(tmp_path/'ours').eval(),
            transformers.PerceiverTokenizer.from_pretrained(tmp_path/'ours'),
            transformers.PerceiverImageProcessorPil.from_pretrained(tmp_path/'ours'))
    again = {'model': ours['model'], 'config': PerceiverConfig.from_dict(transformers.PerceiverConfig.from_pretrained(tmp_path/'ours_config').to_dict()),
             'tokenizer': ours['tokenizer'], 'image_processor': ours['image_processor']}
    _assert_same(again, back)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back[0].state_dict().items())


def test_online_download_interrupted(tmp_path, no_env):
    "The Hub answers, then the download fails: the same clear error as no connection, nothing half-loaded."
    import huggingface_hub
    no_env.setattr(huggingface_hub.HfApi, 'model_info', lambda self, *a, **k: object())
    def drop(*a, **k): raise huggingface_hub.errors.LocalEntryNotFoundError('connection reset while downloading')
    no_env.setattr(huggingface_hub, 'snapshot_download', drop)
    with pytest.raises(FileNotFoundError, match=r'could not be reached \(the download failed: LocalEntryNotFoundError: connection reset'):
        PerceiverTokenizer.from_pretrained('someone/flaky', cache_dir=tmp_path)
