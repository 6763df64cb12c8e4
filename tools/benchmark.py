"""Benchmark perceiver_nb against transformers' Perceiver: same weights, same inputs, same process.

For every task model, transformers' model is built from a `transformers.PerceiverConfig` with random weights, ours
from a `perceiver_nb.PerceiverConfig` with the same fields, and transformers' `state_dict()` is loaded into ours with
`strict=True`, so both compute the same function. Before anything is timed, the outputs are compared (float32,
eval mode, `--atol`, default 1e-4) with and without `output_attentions`: a mismatch raises `ParityError`.

Each row is one model in one mode:
  inference        forward under `torch.no_grad()`, eval mode
  train            forward + backward of the mean logit, train mode (dropout on), gradients reset to None first
  ...+attn         the same with `output_attentions=True`: our explicit softmax path instead of the default fused
                   `scaled_dot_product_attention`; transformers materialises the attention probabilities either way
Time: the median over `--repeat` runs (`time.perf_counter`, `torch.cuda.synchronize` around each on a GPU) after
`--warmup` runs; ours and theirs alternate run by run so that drift on a shared machine hits both alike.
Memory: the peak of the tensor memory allocated during one run above what was allocated before it (weights,
gradients of earlier runs and inputs excluded: activations, temporaries, outputs and new gradients included).
CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus `memory_allocated()` before.
CPU: the running sum of the allocations and frees of PyTorch's CPU allocator recorded by `torch.profiler`
(`profile_memory=True`) during one run, maximised; buffers that oneDNN/BLAS allocate outside PyTorch are not seen.
Ratios are ours / theirs: below 1 means perceiver_nb is faster or leaner. A `~` after a time ratio: some run of that
row took over 1.5x its fastest (a busy machine); every run is in the JSON.
Reading the memory column: on the CPU, `scaled_dot_product_attention` uses its fused (flash) kernel only when the
value head width equals the query/key one and no dropout is active; otherwise it falls back to a math kernel that
materialises the scores like the explicit path (in float32 for bfloat16/float16 inputs). On a CPU the fused path
so saves nothing in train mode (dropout 0.1), in the masked LM's decoder (per head qk 32, v d_model/8), or in any
attention of the released language model (qk_channels 256, v_channels 1280).

Usage:
    python tools/benchmark.py --size tiny                      # CPU, well under a minute on 2 cores
    python tools/benchmark.py --size released --modes inference --no-attentions
        # CPU: the text and image models at their released sizes, batch 1, 3 runs, at most 60 s per row (minutes)
    python tools/benchmark.py --size released --dtype bfloat16 --modes inference --no-attentions   # bf16 memory
    python tools/benchmark.py --device cuda --size released --dtype bfloat16 --batch-size 16 --models mlm \
        --modes inference --compile --json mlm.json --markdown mlm.md   # eager and CUDA-graph rows, tables written
    tools/gpu_check.sh                                         # every GPU check in one go (see that file)
    python tools/benchmark.py --size small --json bench.json   # CPU, about a minute on 2 cores (all five models)
    python tools/benchmark.py --device cuda --size released    # the released checkpoints' configurations, on a GPU
    python tools/benchmark.py --device cuda --size released --dtype bfloat16 --modes inference --batch-size 16
    python tools/benchmark.py --models mlm seqcls --no-attentions --repeat 3
    python tools/benchmark.py --size small --modes train --no-attentions --grad-ckpt   # memory saved by checkpointing
    python tools/benchmark.py --models flow --size released --batch-size 1 --modes inference --no-attentions --repeat 3
        (--no-attentions also skips the attention-map parity check: at 368x496 those maps need about 20 GB on a CPU)

The image classifiers come from `perceiver_nb.tasks.image`, the flow model from `perceiver_nb.tasks.flow`; where a
module is missing its models are skipped with a note.

The multimodal autoencoder (`--models multimodal`) gets a row of its own kind, `whole clip`: transformers can only
reconstruct a clip chunk by chunk, re-running the whole encoder for each of the documented 128 chunks
(`--chunks`), so the row sets ONE chunk of transformers' loop against our `reconstruct` of the WHOLE clip (encoded
once, decoded in chunks). Parity is checked on that chunk's outputs first. Multiply transformers' time by the number
of chunks for the whole clip:
    python tools/benchmark.py --models multimodal --size released --batch-size 1 --repeat 1 --warmup 0
"""
from __future__ import annotations

import argparse, gc, importlib, json, platform, statistics, sys, time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # benchmark the tree this script belongs to

import torch
import transformers

import perceiver_nb
from perceiver_nb.config import PerceiverConfig, RELEASED_CONFIGS

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
MODES = ('inference', 'train')


class ParityError(AssertionError):
    "Our model and transformers' disagree, so timing them against each other would be meaningless."


@dataclass(frozen=True)
class ModelSpec:
    key: str  # short name for --models
    class_name: str  # the same in both libraries
    module: str  # our module that defines it
    kind: str  # 'text', 'image' or 'flow'
    released: str  # the RELEASED_CONFIGS entry giving its full-size configuration
    input_channels: int | None = None  # width of the preprocessed image rows (image models), used as d_model


SPECS = [
    ModelSpec('mlm', 'PerceiverForMaskedLM', 'perceiver_nb.tasks.text', 'text', 'deepmind/language-perceiver'),
    ModelSpec('seqcls', 'PerceiverForSequenceClassification', 'perceiver_nb.tasks.text', 'text',
              'deepmind/language-perceiver'),
    # Learned: 256 conv1x1 channels + 256 projected positions; Fourier: 3 pixels + 258 features; Conv: 64 + 258.
    ModelSpec('image-learned', 'PerceiverForImageClassificationLearned', 'perceiver_nb.tasks.image', 'image',
              'deepmind/vision-perceiver-learned', 512),
    ModelSpec('image-fourier', 'PerceiverForImageClassificationFourier', 'perceiver_nb.tasks.image', 'image',
              'deepmind/vision-perceiver-fourier', 261),
    ModelSpec('image-conv', 'PerceiverForImageClassificationConvProcessing', 'perceiver_nb.tasks.image', 'image',
              'deepmind/vision-perceiver-conv', 322),
    # Optical flow: two frames' 3x3 patches (2, 27, H, W) per example; 64 patch channels + 258 Fourier features.
    ModelSpec('flow', 'PerceiverForOpticalFlow', 'perceiver_nb.tasks.flow', 'flow', 'deepmind/optical-flow-perceiver', 322),
    # Multimodal autoencoding: its own row (ours: the whole clip; transformers: one chunk of its loop), see multimodal_row.
    ModelSpec('multimodal', 'PerceiverForMultimodalAutoencoding', 'perceiver_nb.tasks.multimodal', 'multimodal',
              'deepmind/multimodal-perceiver'),
]

# Encoder sizes and default workload per --size; 'released' takes the encoder from RELEASED_CONFIGS per model.
SIZES = {
    'tiny': dict(fields=dict(num_latents=16, d_latents=32, d_model=32, num_blocks=1, num_self_attends_per_block=2,
                             num_self_attention_heads=2, num_cross_attention_heads=1, num_labels=3),
                 batch_size=2, seq_len=64, image_size=16, repeat=10, warmup=2),
    'small': dict(fields=dict(num_latents=64, d_latents=256, d_model=128, num_blocks=2, num_self_attends_per_block=4,
                              num_self_attention_heads=8, num_cross_attention_heads=1, num_labels=10),
                  batch_size=4, seq_len=512, image_size=32, repeat=5, warmup=1),
    'released': dict(fields=None, batch_size=4, seq_len=2048, image_size=224, repeat=20, warmup=3),
}
# A CPU runs the released sizes in seconds per forward: batch 1, few runs, a time budget per row, and by default only
# the text and image models (the flow and multimodal models take minutes per run there; ask for them by name).
CPU_RELEASED = dict(batch_size=1, repeat=3, warmup=1, budget=60.0, models=['mlm', 'seqcls', 'image-learned',
                                                                          'image-fourier', 'image-conv'])


def available_specs(keys=None) -> tuple[list[tuple[ModelSpec, type]], list[str]]:
    "The requested models whose class we can import (paired with it), and a note for each one skipped."
    found, notes = [], []
    for spec in SPECS:
        if keys and spec.key not in keys: continue
        try: cls = getattr(importlib.import_module(spec.module), spec.class_name)
        except (ImportError, AttributeError) as e:
            notes.append(f'skipped {spec.class_name}: {spec.module} is not importable here ({type(e).__name__}: {e})')
            continue
        found.append((spec, cls))
    return found, notes


def model_fields(spec: ModelSpec, size: str, seq_len: int, image_size: int) -> dict:
    "The configuration fields both libraries get for `spec` at `size`."
    if size == 'released':
        fields = dict(RELEASED_CONFIGS[spec.released])
        if spec.kind == 'text':  # the released table (2048 positions) unless the inputs are longer
            fields['max_position_embeddings'] = max(seq_len, PerceiverConfig().max_position_embeddings)
    else:
        fields = dict(SIZES[size]['fields'])
        if spec.kind == 'text': fields['max_position_embeddings'] = seq_len  # both decode exactly the input's positions
        else: fields['d_model'] = spec.input_channels  # unused by the image models, kept consistent
    if spec.kind == 'image': fields['image_size'] = image_size  # the learned position table covers the input
    if spec.kind == 'flow' and size != 'released': fields['train_size'] = [image_size, image_size]
    return fields


def make_inputs(spec: ModelSpec, batch_size: int, seq_len: int, image_size: int, seed: int = 0,
                train_size: tuple | None = None) -> dict:
    "Keyword arguments of one forward call (on the CPU, float32); flow frames are `train_size` (the model's only size)."
    g = torch.Generator().manual_seed(seed)
    if spec.kind == 'flow':
        h, w = train_size or PerceiverConfig().train_size
        return dict(inputs=torch.rand(batch_size, 2, 27, h, w, generator=g) * 2 - 1)
    if spec.kind == 'text':
        return dict(inputs=torch.randint(0, 262, (batch_size, seq_len), generator=g),
                    attention_mask=torch.ones(batch_size, seq_len, dtype=torch.long))
    return dict(inputs=torch.randn(batch_size, 3, image_size, image_size, generator=g))


def build_pair(spec: ModelSpec, ours_cls: type, fields: dict, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    "transformers' model with random weights, and ours holding the same weights (strict load)."
    torch.manual_seed(seed)
    theirs = getattr(transformers, spec.class_name)(transformers.PerceiverConfig(**fields))
    ours = ours_cls(PerceiverConfig(**fields))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _to(inputs: dict, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    return {k: v.to(device, dtype=dtype if v.is_floating_point() else None) for k, v in inputs.items()}


def _max_diff(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    shorter = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x < y]
    if a.ndim == b.ndim and len(shorter) == 1 and sum(x != y for x, y in zip(a.shape, b.shape)) == 1:
        # MLM on inputs shorter than its position table: ours decodes only the input's positions (logits and the
        # decoder's cross-attention), transformers' all of them; the positions both decode must agree.
        b = b.narrow(shorter[0], 0, a.shape[shorter[0]])
    if a.shape != b.shape: raise ParityError(f'{what}: shape {tuple(a.shape)} (ours) vs {tuple(b.shape)} (transformers)')
    return (a.float() - b.float()).abs().max().item()


def check_parity(ours: torch.nn.Module, theirs: torch.nn.Module, inputs: dict, atol: float = 1e-4,
                 attentions: bool = True,  # also compare with output_attentions=True (False: for huge attention maps)
                ) -> dict:
    "Raise `ParityError` unless logits (and attentions) agree within `atol` in eval mode; return the max |diffs|."
    ours.eval(); theirs.eval()
    diffs = {}
    with torch.no_grad():
        for attn in ((False, True) if attentions else (False,)):
            a, b = ours(**inputs, output_attentions=attn), theirs(**inputs, output_attentions=attn)
            tag = 'attn' if attn else 'fused'
            diffs[f'logits_{tag}'] = _max_diff(a.logits, b.logits, f'logits ({tag})')
            if attn:
                for field in ('attentions', 'cross_attentions'):
                    xs, ys = getattr(a, field), getattr(b, field)
                    if len(xs) != len(ys): raise ParityError(f'{field}: {len(xs)} (ours) vs {len(ys)} (transformers)')
                    diffs[field] = max([_max_diff(x, y, f'{field}[{i}]') for i, (x, y) in enumerate(zip(xs, ys))],
                                       default=0.0)
    bad = {k: v for k, v in diffs.items() if not v <= atol}  # `not <=` also catches NaN
    if bad:
        raise ParityError(f'{type(ours).__name__} differs from transformers beyond atol={atol}: '
                          + ', '.join(f'{k} {v:.3g}' for k, v in bad.items()))
    return diffs


def make_step(model: torch.nn.Module, inputs: dict, mode: str, attn: bool) -> Callable[[], None]:
    "One benchmarked run: a forward without gradients, or a forward and backward."
    if mode == 'inference':
        model.eval()
        def step():
            with torch.no_grad(): model(**inputs, output_attentions=attn)
    else:
        model.train()
        def step():
            model.zero_grad(set_to_none=True)  # so every run allocates its gradients afresh
            model(**inputs, output_attentions=attn).logits.float().mean().backward()
    return step


def _sync(device: torch.device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def time_steps(steps: dict[str, Callable], device: torch.device, warmup: int, repeat: int,
               budget: float | None = None,  # seconds: no new round starts once the timed rounds took this long
              ) -> dict[str, list[float]]:
    "Seconds per run of each step, the steps alternating (order reversed every other round) after `warmup` rounds."
    for _ in range(warmup):
        for step in steps.values(): step()
    names, times = list(steps), {k: [] for k in steps}
    gc.collect()
    start = time.perf_counter()
    for i in range(repeat):
        if i > 0 and budget is not None and time.perf_counter() - start > budget: break
        for name in (names if i % 2 == 0 else names[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def peak_memory(step: Callable, device: torch.device) -> float:
    "Peak bytes of tensor memory allocated during one run of `step`, above what was allocated before it."
    gc.collect()
    if device.type == 'cuda':
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'
              and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return float(peak)


def grad_ckpt_memory(model: torch.nn.Module, inputs: dict, device: torch.device) -> float:
    "Peak bytes of one train step (as `peak_memory`) with `gradient_checkpointing_enable()`; switched off again after."
    model.gradient_checkpointing_enable()
    try:
        model.zero_grad(set_to_none=True)
        return peak_memory(make_step(model, inputs, 'train', False), device)
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)


def environment(device: torch.device) -> dict:
    if device.type == 'cuda': name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            name = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
        except (OSError, StopIteration): pass
    return dict(torch=torch.__version__, transformers=transformers.__version__, perceiver_nb=perceiver_nb.__version__,
                python=platform.python_version(), device=str(device), device_name=name, threads=torch.get_num_threads())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--size', choices=list(SIZES), default='tiny', help='encoder size and default workload (default tiny)')
    p.add_argument('--models', nargs='+', choices=[s.key for s in SPECS], help='default: every importable model')
    p.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES))
    p.add_argument('--no-attentions', action='store_true', help='skip the output_attentions=True rows')
    p.add_argument('--batch-size', type=int, help='default: per --size')
    p.add_argument('--seq-len', type=int, help='text models: bytes per sequence (default: per --size)')
    p.add_argument('--image-size', type=int, help='image and flow models: height = width (default: per --size; '
                   'flow at --size released: 368x496)')
    p.add_argument('--device', default='cpu', help='cpu or cuda (or cuda:N)')
    p.add_argument('--dtype', choices=list(DTYPES), default='float32', help='timing dtype; parity is checked in float32')
    p.add_argument('--repeat', type=int, help='timed runs per model and mode (default: per --size)')
    p.add_argument('--budget', type=float, help='seconds per row: stop repeating once the timed runs took this long '
                   '(at least one run each; default: 60 for --size released on a CPU, else none)')
    p.add_argument('--compile', action='store_true', help="also time both models under torch.compile (rows 'inference "
                   "compiled'; --compile-mode, default reduce-overhead on a GPU (CUDA graphs), default on a CPU)")
    p.add_argument('--compile-mode', help='torch.compile mode for --compile')
    p.add_argument('--warmup', type=int, help='untimed runs first (default: per --size)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads (default: torch\'s choice)')
    p.add_argument('--atol', type=float, default=1e-4, help='parity tolerance (float32, default 1e-4)')
    p.add_argument('--chunks', type=int, default=128, help="multimodal: chunks of transformers' loop (default 128, as "
                   'its documentation; one of them is timed)')
    p.add_argument('--grad-ckpt', action='store_true', help='also measure our train-step peak memory with '
                   'gradient_checkpointing_enable() and print both and their ratio (train rows without attentions)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', type=Path, metavar='PATH', help='also write settings, environment and rows here')
    p.add_argument('--markdown', type=Path, metavar='PATH', help='also write the table as markdown here')
    args = p.parse_args(argv)
    cpu_released = args.size == 'released' and not args.device.startswith('cuda')
    for k in ('batch_size', 'seq_len', 'image_size', 'repeat', 'warmup', 'budget', 'models'):
        if getattr(args, k) is None:
            setattr(args, k, CPU_RELEASED[k] if cpu_released and k in CPU_RELEASED else SIZES[args.size].get(k))
    if args.compile_mode is None: args.compile_mode = 'reduce-overhead' if args.device.startswith('cuda') else 'default'
    for k in ('batch_size', 'seq_len', 'image_size', 'repeat'):
        if getattr(args, k) < 1: p.error(f'--{k.replace("_", "-")} must be at least 1, got {getattr(args, k)}')
    if args.warmup < 0: p.error(f'--warmup must be at least 0, got {args.warmup}')
    return args


def _ratio(a: float, b: float) -> float: return a / b if b > 0 else float('nan')


NOISY = 1.5  # slowest / fastest run beyond which a time ratio is marked as noisy


def _noisy(runs: list[float]) -> bool: return max(runs) > NOISY * min(runs)


def format_table(rows: list[dict]) -> str:
    "The rows as aligned text; a `~` after a time ratio: some run took over 1.5x the fastest (see the JSON runs)."
    head = ('model', 'mode', 'ours ms', 'theirs ms', 'ratio', 'ours MB', 'theirs MB', 'ratio')
    mark = lambda r: '~' if _noisy(r['ours_runs_ms']) or _noisy(r['theirs_runs_ms']) else ' '
    body = [(r['model'], r['mode'], f"{r['ours_ms']:.2f}", f"{r['theirs_ms']:.2f}", f"{r['time_ratio']:.2f}{mark(r)}",
             f"{r['ours_mb']:.2f}", f"{r['theirs_mb']:.2f}", f"{r['mem_ratio']:.2f}") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: '  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return '\n'.join([line(head), line(['-' * w for w in widths]), *map(line, body)])


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[dict]:
    "Check parity and measure every model in every mode; return one row per (model, mode)."
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == 'cuda' and not torch.cuda.is_available(): raise SystemExit('--device cuda: no GPU is visible')
    if args.threads: torch.set_num_threads(args.threads)
    env = environment(device)
    log(f"torch {env['torch']}, transformers {env['transformers']}, perceiver_nb {env['perceiver_nb']}, "
        f"python {env['python']}")
    log(f"device {env['device']} ({env['device_name']}), {env['threads']} CPU threads, dtype {args.dtype}")
    log(f'size {args.size}: batch {args.batch_size}, text {args.seq_len} bytes, images {args.image_size}x{args.image_size}; '
        f'median of {args.repeat} runs after {args.warmup} warmup, ours and theirs alternating')
    log('memory: peak tensor bytes allocated during one run above those allocated before it (' +
        ('torch.cuda.max_memory_allocated' if device.type == 'cuda' else "torch.profiler's CPU allocator events") + ')')
    if args.budget: log(f'time budget {args.budget:g} s per row: fewer runs than {args.repeat} where one takes long')
    specs, notes = available_specs(args.models)
    for n in notes: log('note: ' + n)
    attn_flags = (False,) if args.no_attentions else (False, True)
    rows = []
    for spec, ours_cls in specs:
        if spec.kind == 'multimodal':
            rows.append(multimodal_row(args, device, dtype, log))
            continue
        fields = model_fields(spec, args.size, args.seq_len, args.image_size)
        ours, theirs = build_pair(spec, ours_cls, fields, args.seed)
        ours.to(device); theirs.to(device)
        inputs = _to(make_inputs(spec, args.batch_size, args.seq_len, args.image_size, args.seed,
                                 fields.get('train_size')), device)
        # --no-attentions also skips comparing attention maps: the released flow model's are two 1.5 GB matrices
        diffs = check_parity(ours, theirs, inputs, args.atol, attentions=not args.no_attentions)
        log(f'{spec.class_name}: {sum(p.numel() for p in ours.parameters()):,} parameters, parity max |diff| '
            + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
        if spec.kind == 'text' and args.seq_len < fields['max_position_embeddings'] and spec.key == 'mlm':
            log(f"note: {spec.class_name} decodes {args.seq_len} positions here, transformers' all "
                f"{fields['max_position_embeddings']}")
        if dtype != torch.float32: ours.to(dtype); theirs.to(dtype)
        inputs = _to(inputs, device, dtype)
        runs = [(mode, attn, False) for mode in args.modes for attn in attn_flags]
        if args.compile and 'inference' in args.modes: runs.append(('inference', False, True))
        for mode, attn, compiled in runs:
            if compiled: mo, mt = torch.compile(ours, mode=args.compile_mode), torch.compile(theirs, mode=args.compile_mode)
            else: mo, mt = ours, theirs
            steps = dict(ours=make_step(mo, inputs, mode, attn), theirs=make_step(mt, inputs, mode, attn))
            times = time_steps(steps, device, max(args.warmup, 3 if compiled else 0), args.repeat, args.budget)
            for m in (ours, theirs): m.zero_grad(set_to_none=True)  # free earlier gradients before, not during
            mem = {k: peak_memory(step, device) for k, step in steps.items()}
            ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            row = dict(model=spec.class_name, mode=mode + ('+attn' if attn else '') + (' compiled' if compiled else ''),
                       output_attentions=attn,
                       ours_ms=ms['ours'], theirs_ms=ms['theirs'], time_ratio=_ratio(ms['ours'], ms['theirs']),
                       ours_mb=mem['ours'] / 2**20, theirs_mb=mem['theirs'] / 2**20,
                       mem_ratio=_ratio(mem['ours'], mem['theirs']),
                       ours_runs_ms=[1e3 * t for t in times['ours']],
                       theirs_runs_ms=[1e3 * t for t in times['theirs']], parity=diffs, config=fields)
            if args.grad_ckpt and mode == 'train' and not attn:
                row['ours_mb_grad_ckpt'] = grad_ckpt_memory(ours, inputs, device) / 2**20
                row['grad_ckpt_ratio'] = _ratio(row['ours_mb_grad_ckpt'], row['ours_mb'])
                log(f"{spec.class_name}: train-step peak memory (ours) {row['ours_mb']:.2f} MB without gradient "
                    f"checkpointing, {row['ours_mb_grad_ckpt']:.2f} MB with it ({row['grad_ckpt_ratio']:.2f}x)")
            rows.append(row)
        del ours, theirs, steps
        gc.collect()
        if device.type == 'cuda': torch.cuda.empty_cache()
    log('')
    log(format_table(rows) if rows else 'no model to benchmark')
    if any(_noisy(r['ours_runs_ms']) or _noisy(r['theirs_runs_ms']) for r in rows):
        log(f'~: runs of this row varied by more than {NOISY}x (a busy machine?): rerun, or raise --repeat')
    if args.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps(dict(environment=env, settings=settings, notes=notes, rows=rows), indent=1) + '\n')
        log(f'wrote {args.json}')
    if args.markdown:
        args.markdown.write_text(format_markdown(rows, env, args))
        log(f'wrote {args.markdown}')
    return rows


def format_markdown(rows: list[dict], env: dict, args: argparse.Namespace) -> str:
    "The rows as a markdown table under a line naming the hardware, versions and workload."
    head = (f"{env['device_name']} ({env['device']}), torch {env['torch']}, transformers {env['transformers']}, "
            f"{args.dtype}, batch {args.batch_size}, size {args.size}; ratio = ours / transformers (below 1: ours is "
            f"faster or leaner)\n\n")
    lines = ['| model | mode | ours ms | transformers ms | time ratio | ours MiB | transformers MiB | memory ratio |',
             '|---|---|---:|---:|---:|---:|---:|---:|']
    lines += [f"| {r['model']} | {r['mode']} | {r['ours_ms']:.2f} | {r['theirs_ms']:.2f} | {r['time_ratio']:.2f} | "
              f"{r['ours_mb']:.1f} | {r['theirs_mb']:.1f} | {r['mem_ratio']:.2f} |" for r in rows]
    return head + '\n'.join(lines) + '\n'


def multimodal_row(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, log: Callable[[str], None]) -> dict:
    "Our `reconstruct` of a whole clip against one chunk of transformers' documented chunk loop, same weights and clip."
    from perceiver_nb.tasks.multimodal import PerceiverForMultimodalAutoencoding, reconstruct, demo_config
    fields = dict(RELEASED_CONFIGS['deepmind/multimodal-perceiver']) if args.size == 'released' else \
        demo_config().to_dict() | dict(num_labels=5)
    fields = {k: v for k, v in fields.items() if k in PerceiverConfig().to_dict() and k not in ('id2label', 'label2id')} | \
        {'num_labels': fields.get('num_labels', 2)}
    torch.manual_seed(args.seed)
    theirs = transformers.PerceiverForMultimodalAutoencoding(transformers.PerceiverConfig(**fields)).eval()
    ours = PerceiverForMultimodalAutoencoding(PerceiverConfig(**fields)).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    cfg, B, g = ours.config, args.batch_size, torch.Generator().manual_seed(args.seed)
    T, H, W = cfg.output_shape[1:]
    samples = cfg.num_frames * cfg.audio_samples_per_frame
    clip = dict(image=torch.rand(B, T, 3, H, W, generator=g) * 2 - 1, audio=torch.rand(B, samples, 1, generator=g) * 2 - 1,
                label=torch.zeros(B, cfg.num_labels))
    n = min(args.chunks, samples // cfg.samples_per_patch)  # a small clip has fewer audio patches than 128 chunks
    if n < args.chunks: log(f'note: multimodal: {n} chunks instead of {args.chunks}, one audio patch each (a small clip)')
    image_chunk, audio_chunk = T * H * W // n, samples // cfg.samples_per_patch // n
    points = {'image': torch.arange(image_chunk), 'audio': torch.arange(audio_chunk), 'label': None}
    ours.to(device); theirs.to(device)
    clip, points = _to(clip, device), {k: (v.to(device) if v is not None else None) for k, v in points.items()}
    with torch.no_grad():
        a, b = reconstruct(ours, clip), theirs(inputs=clip, subsampled_output_points=points).logits
        diffs = dict(image=_max_diff(a['image'].permute(0, 1, 3, 4, 2).reshape(B, -1, 3)[:, :image_chunk], b['image'], 'image'),
                     audio=_max_diff(a['audio'][:, :audio_chunk * cfg.samples_per_patch, 0], b['audio'], 'audio'),
                     label=_max_diff(a['label'], b['label'], 'label'))
    if bad := {k: v for k, v in diffs.items() if not v <= args.atol}:
        raise ParityError('PerceiverForMultimodalAutoencoding differs from transformers on the first chunk: ' +
                          ', '.join(f'{k} {v:.3g}' for k, v in bad.items()))
    log(f'PerceiverForMultimodalAutoencoding: {sum(p.numel() for p in ours.parameters()):,} parameters, clip {T}x{H}x{W} '
        f'+ {samples} samples, parity on chunk 1 of {n}: ' + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
    if dtype != torch.float32: ours.to(dtype); theirs.to(dtype); clip = _to(clip, device, dtype)
    def ours_step():
        with torch.no_grad(): reconstruct(ours, clip)
    def theirs_step():
        with torch.no_grad(): theirs(inputs=clip, subsampled_output_points=points)
    steps = dict(ours=ours_step, theirs=theirs_step)
    times = time_steps(steps, device, args.warmup, args.repeat)
    mem = {k: peak_memory(step, device) for k, step in steps.items()}
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    log(f"multimodal: ours reconstruct the whole clip in {ms['ours']:.1f} ms; transformers' loop would take about "
        f"{n} x {ms['theirs']:.1f} ms = {n * ms['theirs'] / 1e3:.2f} s ({n * ms['theirs'] / ms['ours']:.1f}x ours)")
    return dict(model='PerceiverForMultimodalAutoencoding', mode=f'whole clip vs 1/{n}', output_attentions=False,
                ours_ms=ms['ours'], theirs_ms=ms['theirs'], time_ratio=_ratio(ms['ours'], ms['theirs']),
                ours_mb=mem['ours'] / 2**20, theirs_mb=mem['theirs'] / 2**20, mem_ratio=_ratio(mem['ours'], mem['theirs']),
                ours_runs_ms=[1e3 * t for t in times['ours']], theirs_runs_ms=[1e3 * t for t in times['theirs']],
                parity=diffs, config=fields, chunks=n)


def main(argv: list[str] | None = None) -> list[dict]:
    "Parse `argv` (default: the command line), run the benchmark, print the table; return the rows."
    return run(parse_args(argv))


if __name__ == '__main__': main()
