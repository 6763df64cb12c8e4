"""Checkpoints survive failed and concurrent saves, and every unreadable checkpoint file is named in the error.

* An interrupted save (the writer raises half-way, or the file-size limit is hit as on a full disk) leaves the
  previous checkpoint byte-for-byte as it was, loadable, with no temporary file left behind.
* Two processes and two threads saving different models into one directory never leave one model's `config.json`
  beside the other's weights.
* Truncated, empty or malformed `model.safetensors`, `pytorch_model.bin`, shards, index files and `config.json` give
  a `ValueError` (or `FileNotFoundError`) naming the file, saying what is wrong and what to do. Corruptions are
  generated (random truncation offsets, random label keys), not listed by hand.
"""
import io, json, multiprocessing, os, shutil, subprocess, sys, tempfile, textwrap, threading
from pathlib import Path

import pytest
import torch
from torch import nn
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import save as safetensors_bytes, save_file

import perceiver_nb.weights as weights
from perceiver_nb.config import PerceiverConfig
from perceiver_nb.weights import PerceiverPreTrainedModel, read_state_dict

ROOT = Path(__file__).resolve().parent.parent
FORMATS = {True: 'model.safetensors', False: 'pytorch_model.bin'}
CORRUPT = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Tiny(PerceiverPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.latents = nn.Parameter(torch.zeros(config.num_latents, config.d_latents))  # (N, D)
        self.proj = nn.Linear(config.d_latents, config.d_model)
        self.post_init()


def tiny(writer: int, d_model: int = 512) -> Tiny:
    "A model whose config (`writer`, `num_latents`) and every weight (all equal to `writer`) say who made it."
    model = Tiny(PerceiverConfig(num_latents=5 + writer, d_latents=256, d_model=d_model, writer=writer))
    with torch.no_grad():
        for p in model.parameters(): p.fill_(writer)
    return model


def writer_of(directory) -> int:
    "Who wrote the checkpoint in `directory`; fails unless its config.json and its weights come from the same model."
    d = Path(directory)
    config = json.loads((d/'config.json').read_text())
    state = read_state_dict(d)
    values = {float(v) for t in state.values() for v in t.unique()}
    assert values == {config['writer']}, f"config.json of writer {config['writer']}, weights of {values}"
    assert state['latents'].shape[0] == config['num_latents']
    return config['writer']


def listing(directory) -> dict:
    "Name and bytes of every file in `directory` except the lock file, whose name is ours to choose."
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if not p.name.endswith('.lock')}


# ------------------------------------------------------------------ an interrupted save keeps the previous checkpoint

def _fail_half_way(real_bytes):
    "A writer with the signature of `save_file` / `torch.save` that writes half of the real file, then hits a full disk."
    def write(state, target, *args, **kwargs):
        data = real_bytes(state)
        if hasattr(target, 'write'): target.write(data[:len(data)//2]); target.flush()
        else: Path(target).write_bytes(data[:len(data)//2])
        raise OSError(28, 'No space left on device')
    return write


_torch_save = torch.save


def _bin_bytes(state):
    buffer = io.BytesIO(); _torch_save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize('old_safe', [True, False], ids=['old_safetensors', 'old_bin'])
@pytest.mark.parametrize('new_safe', [True, False], ids=['new_safetensors', 'new_bin'])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, old_safe, new_safe):
    tiny(1).save_pretrained(tmp_path, safe_serialization=old_safe)
    before = listing(tmp_path)
    monkeypatch.setattr(weights, 'save_file', _fail_half_way(lambda s: safetensors_bytes(s, metadata={'format': 'pt'})))
    monkeypatch.setattr(torch, 'save', _fail_half_way(_bin_bytes))
    with pytest.raises(OSError, match='No space left on device'):
        tiny(2).save_pretrained(tmp_path, safe_serialization=new_safe)
    monkeypatch.undo()
    assert listing(tmp_path) == before  # same files, same bytes, no temporary file left
    assert writer_of(tmp_path) == 1
    assert Tiny.from_pretrained(tmp_path).config.writer == 1
    tiny(3).save_pretrained(tmp_path, safe_serialization=new_safe)  # and the next save works
    assert writer_of(tmp_path) == 3 and sorted(listing(tmp_path)) == ['config.json', FORMATS[new_safe]]


_FILE_SIZE_LIMIT = textwrap.dedent('''
    import json, resource, signal, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_checkpoint_safety import tiny
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    results = []
    for directory, safe, limit in json.loads(sys.argv[1]):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try: tiny(2).save_pretrained(directory, safe_serialization=safe); results.append('saved')
        except Exception as e: results.append(type(e).__name__ + ': ' + str(e))
        finally: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(json.dumps(results))
''')


@pytest.mark.skipif(not hasattr(os, 'fork') or sys.platform == 'darwin', reason='RLIMIT_FSIZE semantics of Linux')
def test_save_on_a_full_disk_keeps_previous_checkpoint(tmp_path):
    "The real thing, for every writer (Python, safetensors' Rust, torch's C++): a file-size limit stops the write."
    cases, befores = [], {}
    for safe in (True, False):
        for part in ('config.json', 'weights'):
            d = tmp_path/f'{FORMATS[safe]}-{part}'
            tiny(1).save_pretrained(d, safe_serialization=safe)
            befores[d] = listing(d)
            size = (d/'config.json').stat().st_size if part == 'config.json' else (d/FORMATS[safe]).stat().st_size
            cases.append((str(d), safe, size // 2))
    out = subprocess.run([sys.executable, '-c', _FILE_SIZE_LIMIT.format(tests=str(ROOT/'tests')), json.dumps(cases)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.splitlines()[-1])
    for (d, safe, limit), result in zip(cases, results):
        assert result != 'saved', (d, limit)  # the limit did stop the save
        assert listing(d) == befores[Path(d)], (d, result)
        assert writer_of(d) == 1


# ------------------------------------------------------------------ concurrent saves never mix two models

ROUNDS = 50
SIZES = {1: 4096, 2: 64}  # d_model: a long save racing a short one is the likeliest to interleave


def _save_rounds(writer: int, directory: str, barrier, rounds: int, d_model: int = 512):
    "Save model `writer` into `directory` once per round; rounds start and end together with the other savers."
    torch.set_num_threads(1)
    model = tiny(writer, d_model)
    try:
        for _ in range(rounds):
            barrier.wait(timeout=120)
            model.save_pretrained(directory, safe_serialization=writer % 2 == 1)  # one writes safetensors, one .bin
            barrier.wait(timeout=120)
    except BaseException:
        barrier.abort()  # the others stop waiting for us
        raise


def _check_rounds(directory, barrier, rounds: int) -> list:
    "The problems seen in `directory` after each round (an empty list when every round left a consistent pair)."
    problems = []
    for r in range(rounds):
        barrier.wait(timeout=120); barrier.wait(timeout=120)  # the round's saves start, and are done
        try: writer_of(directory)
        except Exception as e: problems.append(f'round {r}: {type(e).__name__}: {e}'[:200])
    return problems


def test_concurrent_saves_from_two_processes(tmp_path):
    ctx = multiprocessing.get_context('spawn')
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_save_rounds, args=(w, str(tmp_path), barrier, ROUNDS, SIZES[w])) for w in (1, 2)]
    for p in procs: p.start()
    try: problems = _check_rounds(tmp_path, barrier, ROUNDS)
    finally:
        for p in procs: p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert problems == [], f'{len(problems)} of {ROUNDS} rounds left a broken checkpoint:\n' + '\n'.join(problems)


def test_concurrent_saves_from_two_threads(tmp_path):
    barrier = threading.Barrier(3)
    errors = []
    def run(writer):
        try: _save_rounds(writer, str(tmp_path), barrier, ROUNDS, SIZES[writer])
        except Exception as e: errors.append(e); barrier.abort()
    threads = [threading.Thread(target=run, args=(w,)) for w in (1, 2)]
    num_threads = torch.get_num_threads()
    for t in threads: t.start()
    try: problems = _check_rounds(tmp_path, barrier, ROUNDS)
    finally:
        for t in threads: t.join(timeout=60)
        torch.set_num_threads(num_threads)
    assert errors == []
    assert problems == [], f'{len(problems)} of {ROUNDS} rounds left a broken checkpoint:\n' + '\n'.join(problems)


def test_loads_during_saves_see_one_model(tmp_path):
    "`from_pretrained` waits for a save in progress, so it never builds a model from two checkpoints."
    tiny(1).save_pretrained(tmp_path)
    stop, seen, errors = threading.Event(), [], []
    def save():
        models = [tiny(1), tiny(2)]
        try:
            for i in range(2 * ROUNDS): models[i % 2].save_pretrained(tmp_path, safe_serialization=i % 4 < 2)
        except Exception as e: errors.append(e)
        finally: stop.set()
    saver = threading.Thread(target=save); saver.start()
    try:
        while not stop.is_set():
            model = Tiny.from_pretrained(tmp_path)
            values = {float(v) for p in model.parameters() for v in p.detach().unique()}
            assert values == {model.config.writer}, (model.config.writer, values)
            seen.append(model.config.writer)
    finally: saver.join(timeout=60)
    assert errors == [] and seen


# ------------------------------------------------------------------ what a save leaves, and what the loaders ignore

def test_save_leaves_only_the_checkpoint(tmp_path):
    tiny(1).save_pretrained(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if not n.endswith('.lock')] == ['config.json', 'model.safetensors']
    assert all(n.startswith('.') for n in names if n.endswith('.lock')) and len(names) <= 3  # at most a hidden lock file
    # a temporary file left by a save that was killed (kill -9) is ignored when loading and removed by the next save
    stale = tmp_path/'.model.safetensors.tmp-99999-0123abcd'
    stale.write_bytes(b'half a file')
    assert writer_of(tmp_path) == 1
    tiny(2).save_pretrained(tmp_path, safe_serialization=False)
    assert not stale.exists() and writer_of(tmp_path) == 2
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith('.lock')) == ['config.json', 'pytorch_model.bin']


@pytest.mark.parametrize('safe', [True, False])
def test_lock_and_temporary_names_do_not_confuse_transformers(tmp_path, safe):
    "transformers loads what we save beside a lock file and a stale temporary file, and we load what it saves there."
    import transformers
    transformers.utils.logging.set_verbosity_error()
    cfg = transformers.PerceiverConfig(num_latents=4, d_latents=16, d_model=8, num_self_attends_per_block=1,
                                       num_self_attention_heads=2, num_cross_attention_heads=1)
    theirs = transformers.PerceiverModel(cfg)
    ours = PerceiverConfig.from_dict(cfg.to_dict())
    ours.save_pretrained(tmp_path)
    weights.write_state_dict(theirs.state_dict(), tmp_path, safe_serialization=safe)
    (tmp_path/f'.{FORMATS[safe]}.tmp-99999-0123abcd').write_bytes(b'half a file')
    back = transformers.PerceiverModel.from_pretrained(tmp_path)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.state_dict().items())
    transformers.PerceiverModel(cfg).save_pretrained(tmp_path, safe_serialization=safe)
    again = transformers.PerceiverModel.from_pretrained(tmp_path)
    assert all(torch.equal(read_state_dict(tmp_path)[k], v) for k, v in again.state_dict().items())


def test_permissions_as_a_direct_write(tmp_path):
    "Files written under a temporary name end up with the permissions a direct write gives them (the umask's)."
    tiny(1).save_pretrained(tmp_path/'st'); tiny(1).save_pretrained(tmp_path/'bin', safe_serialization=False)
    save_file({'a': torch.ones(1)}, tmp_path/'direct.safetensors'); _torch_save({}, tmp_path/'direct.bin')
    (tmp_path/'direct.json').write_text('{}')
    def mode(p): return p.stat().st_mode & 0o777
    assert mode(tmp_path/'st'/'config.json') == mode(tmp_path/'direct.json')
    assert mode(tmp_path/'st'/'model.safetensors') == mode(tmp_path/'direct.safetensors')
    assert mode(tmp_path/'bin'/'pytorch_model.bin') == mode(tmp_path/'direct.bin')


# ------------------------------------------------------------------ every unreadable file is named

@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    "One checkpoint per weights layout: single safetensors, single .bin, safetensors shards with their index."
    root = tmp_path_factory.mktemp('checkpoints')
    model = tiny(1)
    for safe in (True, False): model.save_pretrained(root/FORMATS[safe], safe_serialization=safe)
    sharded = root/'sharded'
    model.config.save_pretrained(sharded)
    state = model.state_dict()
    shards = {'model-00001-of-00002.safetensors': ['latents'], 'model-00002-of-00002.safetensors': ['proj.weight', 'proj.bias']}
    for file, keys in shards.items(): save_file({k: state[k].contiguous() for k in keys}, sharded/file, metadata={'format': 'pt'})
    (sharded/'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': {k: f for f, ks in shards.items() for k in ks}}))
    for d in root.iterdir(): assert writer_of(d) == 1
    return root


def copy_of(checkpoints, layout: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix='corrupt-'))
    shutil.copytree(checkpoints/layout, d, dirs_exist_ok=True)
    return d


def assert_names_file(call, file: Path, *parts, exc=ValueError):
    "`call()` raises `exc` whose message names `file` and contains every one of `parts`."
    with pytest.raises(exc) as err: call()
    msg = str(err.value)
    assert str(file) in msg, msg
    for part in parts: assert part in msg, (part, msg)
    return msg


CORRUPTIBLE = {'model.safetensors': ('model.safetensors', 'model.safetensors'),
               'pytorch_model.bin': ('pytorch_model.bin', 'pytorch_model.bin'),
               'shard': ('sharded', 'model-00002-of-00002.safetensors')}  # target: (checkpoint layout, file)


@pytest.mark.parametrize('target', list(CORRUPTIBLE))
@CORRUPT
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_weights_name_the_file(checkpoints, target, fraction):
    layout, name = CORRUPTIBLE[target]
    d = copy_of(checkpoints, layout)
    try:
        file = d/name
        data = file.read_bytes()
        file.write_bytes(data[:int(fraction * len(data))])  # 0 bytes (empty) up to one byte short
        for load in (lambda: read_state_dict(d), lambda: Tiny.from_pretrained(d)):
            assert_names_file(load, file, 'truncated or corrupt', 'save or download the checkpoint again')
    finally: shutil.rmtree(d)


def test_bin_with_code_is_still_refused_not_called_corrupt(tmp_path):
    "A .bin holding code is refused as code (weights_only), not reported as a damaged file."
    marker = tmp_path/'code_ran'
    class Payload:
        def __reduce__(self): return (io.open, (str(marker), 'w'))
    torch.save({'latents': torch.zeros(2), 'x': Payload()}, tmp_path/'pytorch_model.bin')
    assert_names_file(lambda: read_state_dict(tmp_path), tmp_path/'pytorch_model.bin', 'refused to load', 'io.open')
    assert not marker.exists()


@CORRUPT
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_config_json_names_the_file(checkpoints, fraction):
    d = copy_of(checkpoints, 'model.safetensors')
    try:
        file = d/'config.json'
        text = file.read_text()
        file.write_text(text[:int(fraction * (text.rindex('}')))])  # always cut before the closing brace
        for load in (lambda: PerceiverConfig.from_pretrained(d), lambda: Tiny.from_pretrained(d),
                     lambda: PerceiverConfig.from_json_file(file)):
            assert_names_file(load, file, 'not valid JSON', 'save the checkpoint again')
    finally: shutil.rmtree(d)


@pytest.mark.parametrize('content,why', [(b'\xff\xfe\x00garbage', 'not UTF-8 text'), (b'[1, 2]', 'not a JSON object'),
                                         (b'"perceiver"', 'not a JSON object'), (b'null', 'not a JSON object')])
def test_config_json_that_is_no_config_names_the_file(tmp_path, content, why):
    (tmp_path/'config.json').write_bytes(content)
    assert_names_file(lambda: PerceiverConfig.from_pretrained(tmp_path), tmp_path/'config.json', why)


def _parses_as_int(k: str) -> bool:
    try: int(k)
    except ValueError: return False
    return True


@CORRUPT
@given(key=st.text(min_size=0, max_size=8).filter(lambda k: not _parses_as_int(k)))
def test_non_integer_id2label_keys_name_the_file_and_field(checkpoints, key):
    d = copy_of(checkpoints, 'model.safetensors')
    try:
        file = d/'config.json'
        config = json.loads(file.read_text())
        config['id2label'] = {'0': 'cat', key: 'dog'}
        file.write_text(json.dumps(config))
        msg = assert_names_file(lambda: PerceiverConfig.from_pretrained(d), file, '`id2label`', 'integer')
        assert repr(key) in msg
    finally: shutil.rmtree(d)


def test_invalid_config_value_names_the_file(tmp_path):
    PerceiverConfig(num_latents=3).save_pretrained(tmp_path)
    config = json.loads((tmp_path/'config.json').read_text()); config['num_latents'] = 0
    (tmp_path/'config.json').write_text(json.dumps(config))
    assert_names_file(lambda: PerceiverConfig.from_pretrained(tmp_path), tmp_path/'config.json',
                      '`num_latents` must be a positive int, got 0')


def test_id2label_message_without_a_file():
    with pytest.raises(ValueError, match=r"`id2label` keys must be integers .*got 'cat'"):
        PerceiverConfig(id2label={'cat': 'dog'})


@CORRUPT
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_truncated_index_names_the_file(checkpoints, fraction):
    d = copy_of(checkpoints, 'sharded')
    try:
        file = d/'model.safetensors.index.json'
        text = file.read_text()
        file.write_text(text[:int(fraction * text.rindex('}'))])
        assert_names_file(lambda: read_state_dict(d), file, 'not valid JSON', 'save or download the checkpoint again')
    finally: shutil.rmtree(d)


@pytest.mark.parametrize('index,why', [({'metadata': {}}, 'has no "weight_map"'),
                                       ({'weight_map': ['a', 'b']}, '"weight_map" must map'),
                                       ({'weight_map': {'latents': 3}}, '"weight_map" must map'),
                                       ([], 'not a JSON object')])
def test_index_without_a_weight_map_names_the_file(checkpoints, index, why):
    d = copy_of(checkpoints, 'sharded')
    try:
        (d/'model.safetensors.index.json').write_text(json.dumps(index))
        assert_names_file(lambda: read_state_dict(d), d/'model.safetensors.index.json', why)
    finally: shutil.rmtree(d)


def test_missing_shard_names_the_shard_and_the_index(checkpoints):
    d = copy_of(checkpoints, 'sharded')
    try:
        (d/'model-00001-of-00002.safetensors').unlink()
        msg = assert_names_file(lambda: read_state_dict(d), d/'model-00001-of-00002.safetensors',
                                'model.safetensors.index.json', exc=FileNotFoundError)
        assert 'download' in msg
    finally: shutil.rmtree(d)
