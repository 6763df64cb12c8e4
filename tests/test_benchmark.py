"""`tools/benchmark.py` runs end to end on the smallest settings, and refuses to time models that disagree.

No timing is asserted here: speed and memory are what the benchmark reports, not what tests check.
"""
import json

import pytest
import torch

from tools import benchmark

TINY = ['--size', 'tiny', '--batch-size', '1', '--seq-len', '8', '--image-size', '8', '--repeat', '1', '--warmup', '0']


def test_rows_per_model_and_mode(tmp_path):
    path = tmp_path/'bench.json'
    rows = benchmark.main(TINY + ['--json', str(path)])
    specs, notes = benchmark.available_specs()
    assert len(specs) + len(notes) == len(benchmark.SPECS)  # each model is either measured or skipped with a note
    modes = ['inference', 'inference+attn', 'train', 'train+attn']
    # the multimodal autoencoder has one row: our whole-clip reconstruction against one chunk of transformers' loop
    expected = [(s.class_name, m) for s, _ in specs for m in (modes if s.kind != 'multimodal' else ['whole clip vs 1/16'])]
    assert [(r['model'], r['mode']) for r in rows] == expected
    for r in rows:
        for k in ('ours_ms', 'theirs_ms', 'time_ratio', 'ours_mb', 'theirs_mb', 'mem_ratio'):
            assert r[k] > 0, (r['model'], r['mode'], k, r[k])
        assert max(r['parity'].values()) <= 1e-4
    saved = json.loads(path.read_text())
    assert saved['environment']['transformers'] == benchmark.transformers.__version__
    assert [(r['model'], r['mode']) for r in saved['rows']] == [(r['model'], r['mode']) for r in rows]


def test_options_select_models_and_modes():
    rows = benchmark.main(TINY + ['--models', 'seqcls', '--modes', 'inference', '--no-attentions'])
    assert [(r['model'], r['mode']) for r in rows] == [('PerceiverForSequenceClassification', 'inference')]


def test_perturbed_model_is_refused(monkeypatch):
    "main checks parity before timing: a model whose weights differ from transformers' stops the run."
    build = benchmark.build_pair
    def perturbed(*args, **kwargs):
        ours, theirs = build(*args, **kwargs)
        latents = ours.perceiver.embeddings.latents  # not a constant shift: the LayerNorms would remove that
        with torch.no_grad(): latents.add_(1e-2 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)))
        return ours, theirs
    monkeypatch.setattr(benchmark, 'build_pair', perturbed)
    with pytest.raises(benchmark.ParityError, match='differs from transformers'):
        benchmark.main(TINY + ['--models', 'mlm'])


def test_parity_checks_attentions():
    "The explicit path's attention probabilities are compared too, not only the logits."
    (spec, cls), = benchmark.available_specs(['seqcls'])[0]
    fields = benchmark.model_fields(spec, 'tiny', 8, 8)
    ours, theirs = benchmark.build_pair(spec, cls, fields)
    inputs = benchmark.make_inputs(spec, 2, 8, 8)
    assert set(benchmark.check_parity(ours, theirs, inputs)) == {'logits_fused', 'logits_attn', 'attentions',
                                                                  'cross_attentions'}
    original = ours.forward
    def shifted(*args, output_attentions=False, **kwargs):
        out = original(*args, output_attentions=output_attentions, **kwargs)
        if output_attentions: out.cross_attentions = tuple(a + 1e-3 for a in out.cross_attentions)
        return out
    ours.forward = shifted
    with pytest.raises(benchmark.ParityError, match='cross_attentions'):
        benchmark.check_parity(ours, theirs, inputs)


def test_markdown_table_and_time_budget(tmp_path):
    "--markdown writes the rows as a markdown table; a budget already spent stops the runs after the first round."
    md = tmp_path/'bench.md'
    rows = benchmark.main(TINY + ['--models', 'seqcls', '--modes', 'inference', '--no-attentions', '--repeat', '50',
                                  '--budget', '0', '--markdown', str(md)])
    assert len(rows[0]['ours_runs_ms']) == len(rows[0]['theirs_runs_ms']) == 1  # budget 0: one round, not 50
    text = md.read_text()
    assert '| PerceiverForSequenceClassification | inference |' in text and 'transformers' in text.splitlines()[0]


def test_released_cpu_defaults():
    "--size released on a CPU: batch 1, few runs, a time budget, the text and image models (the GPU keeps its own)."
    cpu = benchmark.parse_args(['--size', 'released'])
    assert (cpu.batch_size, cpu.repeat, cpu.budget) == (1, 3, 60.0) and 'flow' not in cpu.models
    gpu = benchmark.parse_args(['--size', 'released', '--device', 'cuda'])
    assert (gpu.batch_size, gpu.repeat, gpu.budget, gpu.models) == (4, 20, None, None)
    assert gpu.compile_mode == 'reduce-overhead' and cpu.compile_mode == 'default'


def test_gpu_check_script_is_ready():
    "tools/gpu_check.sh parses, and every benchmark command in it is accepted by the benchmark's argument parser."
    import re, shlex, subprocess
    from tools.nbrun import ROOT
    script = ROOT/'tools'/'gpu_check.sh'
    subprocess.run(['bash', '-n', str(script)], check=True)
    text = script.read_text()
    base = shlex.split(re.search(r'^B="\$PY tools/benchmark.py (.*)"$', text, re.M).group(1))
    steps = re.findall(r'^step (bench-\S+) \d+ \$B (.*)$', text, re.M)
    assert len(steps) >= 4
    for name, rest in steps:
        args = benchmark.parse_args(base + shlex.split(rest.replace('"$OUT/', '"/tmp/')))
        assert args.device == 'cuda' and args.json and args.markdown, name


def test_grad_ckpt_memory_row():
    "--grad-ckpt adds our train-step peak memory with gradient checkpointing (and its ratio) to the train rows."
    logged = []
    rows = benchmark.run(benchmark.parse_args(TINY + ['--models', 'seqcls', '--modes', 'train', '--no-attentions',
                                                      '--grad-ckpt', '--seq-len', '64']), log=logged.append)
    (row,) = rows
    assert row['ours_mb_grad_ckpt'] > 0 and row['grad_ckpt_ratio'] == row['ours_mb_grad_ckpt'] / row['ours_mb']
    assert any('with gradient checkpointing' in l or 'with it' in l for l in logged)
