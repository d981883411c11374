"""Training throughput, ours and the reference's, as JSON: `make train-bench`.

    python tools/train_bench.py --scale full --out reports/train_benchmark.json

The headline SAE of the benchmark: **BatchTopK, L = 4,096, k = 25, on the SynthSAEBench-16k world at batch
1,024** (`--scale full`; `tiny` runs in seconds: tiny world, L = 64, k = 5, batch 256). Measured on one device:

- `train_sae` end to end (fresh batches of the replayable stream and the SAE step), after a short warm-up run,
  with `prefetch=False` (`train`) and with `prefetch=True` (`train_prefetch`: the next batch drawn in a thread
  during the step, the default on the CPU);
- the SAE step alone: `train_sae` on a stream that returns one fixed batch;
- data generation alone;
- the floor: what no TopK-family step can skip, the encoder product x W_enc + b and one fused Adam update of every
  parameter, alone; with the data, the bound on the whole run (`floor_*` and `*_of_floor` in the summary);
- the reference (`sae_lens`) when a Python that imports it is given (`--reference-python`, else
  `$SYNTHSAE_REFERENCE_PYTHON`): its `SAETrainer.fit` on the same world folder, end to end and on a fixed batch,
  in a subprocess so that the two libraries never share a process.

`--profile` times instead each phase of `sae_step` (data, forward, backward, clip, Adam, bookkeeping, and the
encoder's dense product alone) for every architecture, the TopK family with its sparse and its dense backward and
with AuxK off or at full cost (every latent dead): `make train-profile`. `--density` times instead the Standard step,
through the active entries only (the CPU's default) against the dense step, with 1–50% of the entries active.

Timings on a shared machine are noisy; compare only numbers from one run. On a 2-core machine shared with other
processes, run with `OMP_WAIT_POLICY=PASSIVE` (the make targets do): with libgomp's default, idle OpenMP threads
spin and every parallel region can wait for a descheduled thread (see `tools/bench.py`).
"""
from __future__ import annotations
import json, os, platform, subprocess, time
from pathlib import Path
import torch
from fastcore.script import call_parse, Param
from synthsae.core import config_hash, write_json
from synthsae.model import SyntheticModel, preset, default_cache_dir
from synthsae.saes import make_sae
from synthsae.training import train_sae, sae_step, step_state
from synthsae.saes import ARCHS, paper_sae_config

SCALES = {'tiny': dict(preset='tiny', d_sae=64, k=5., batch_size=256, n_steps=20),
          'full': dict(preset='synthsaebench-16k', d_sae=4096, k=25., batch_size=1024, n_steps=10)}


def _sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize(device)


class FixedBatch:
    "The world `model`, except that every batch it draws is `x`: `train_sae` on it times the SAE step alone"
    def __init__(self, model:SyntheticModel, x:torch.Tensor): self.model, self.x = model, x
    def __getattr__(self, name): return getattr(self.model, name)   # hidden_dim, cfg, device, batch_generator, …
    def sample(self, batch_size:int, generator=None)->torch.Tensor: return self.x[:batch_size]


def _timed_train(data, d_sae:int, k:float, batch_size:int, n_steps:int, device, prefetch:bool=False)->dict:
    "Samples/s of `train_sae` on `data` over `n_steps`, after a 2-step warm-up run"
    mk = lambda: make_sae('batchtopk', data.hidden_dim, d_sae, k=k, seed=0)
    train_sae(mk(), data, 2 * batch_size, batch_size=batch_size, device=device, progress=False)
    _sync(device)
    t = time.perf_counter()
    train_sae(mk(), data, n_steps * batch_size, batch_size=batch_size, device=device, progress=False, log_every=n_steps, prefetch=prefetch)
    _sync(device)
    s = time.perf_counter() - t
    return dict(samples_per_s=n_steps * batch_size / s, seconds=s, steps=n_steps)


def bench_data(model:SyntheticModel, batch_size:int, n_steps:int)->dict:
    "Samples/s of drawing fresh batches of the training stream"
    model.sample(batch_size, model.batch_generator(0, 'train', 1)); _sync(model.device)
    t = time.perf_counter()
    for i in range(n_steps): model.sample(batch_size, model.batch_generator(i + 1, 'train', 1))
    _sync(model.device)
    s = time.perf_counter() - t
    return dict(samples_per_s=n_steps * batch_size / s, seconds=s, steps=n_steps)


def bench_step(model:SyntheticModel, d_sae:int, k:float, batch_size:int, n_steps:int, device)->dict:
    "Samples/s of the BatchTopK training step alone: `train_sae` on one fixed batch"
    x = model.sample(batch_size, model.batch_generator(0, 'train', 2)).to(device)
    return _timed_train(FixedBatch(model, x), d_sae, k, batch_size, n_steps, device)


def bench_train(model:SyntheticModel, d_sae:int, k:float, batch_size:int, n_steps:int, device, prefetch:bool=False)->dict:
    "Samples/s of `train_sae` end to end (data + step)"
    return _timed_train(model, d_sae, k, batch_size, n_steps, device, prefetch)


def bench_floor(model:SyntheticModel, d_sae:int, batch_size:int, n_steps:int, device, data_s:float)->dict:
    "What no TopK-family step can skip: the encoder product and one Adam update of every parameter (`data_s`: the batch)"
    x = model.sample(batch_size, model.batch_generator(0, 'train', 2)).to(device)
    sae = make_sae('batchtopk', model.hidden_dim, d_sae, k=1., seed=0).to(device)
    W, b = sae.W_enc.detach(), sae.b_enc.detach()
    def timed(fn):
        fn()
        ts = []
        for _ in range(n_steps):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t)
        return sorted(ts)[len(ts) // 2]
    product = timed(lambda: torch.addmm(b, x, W))
    params = [torch.nn.Parameter(p.detach().contiguous()) for p in sae.parameters()]   # the floor: no layout copies
    for p in params: p.grad = torch.full_like(p, 1e-3)
    opt = torch.optim.Adam(params, lr=1e-4, fused=torch.device(device).type in ('cpu', 'cuda'))
    adam = timed(opt.step)
    return dict(product_ms=1e3 * product, adam_ms=1e3 * adam, data_ms=1e3 * data_s,
                step_samples_per_s=batch_size / (product + adam), samples_per_s=batch_size / (product + adam + data_s))


PHASES = ('data', 'encoder product', 'forward', 'backward', 'clip', 'adam', 'bookkeeping')
TOPK_FAMILY = ('topk', 'batchtopk', 'matryoshka_batchtopk')


def profile_step(
    model:SyntheticModel,      # the world; batches come from its training stream
    arch:str,                  # a key of `ARCHS`; the paper's config at this size (`paper_sae_config`)
    d_sae:int, k:float, batch_size:int,
    n_steps:int=5,             # timed steps (after one untimed)
    device='cpu',
    sparse_grad:bool=True,     # False: the dense backward (the oracle)
    dead:bool=False,           # True: every latent is dead from the first step on (AuxK at its full cost)
)->dict:                       # ms per step of each phase of `PHASES`, their sum 'step', and 'samples_per_s'
    "Median time of each phase of `sae_step` (data drawn apart; 'encoder product' is x W_enc + b alone, no grad)"
    cfg = paper_sae_config(arch, model.hidden_dim, d_sae, k if arch in TOPK_FAMILY else max(1., k), seed=0)
    sae = ARCHS[arch](cfg)
    sae.sparse_grad = sparse_grad
    m = step_state(sae, 1e-4, device)
    window = -1 if dead else 10 ** 9                       # since_fired > -1 marks every latent dead
    times = {p: [] for p in PHASES}
    for t in range(n_steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        x = model.sample(batch_size, model.batch_generator(t, 'train', 3)).to(device)
        _sync(device)
        t1 = time.perf_counter()
        if not sae.tied:                                   # Matching Pursuit has no encoder product
            with torch.no_grad(): sae.hidden_pre(x)
        _sync(device)
        last = [time.perf_counter()]
        lap = {'data': t1 - t0, 'encoder product': last[0] - t1}
        def mark(phase):
            _sync(device)
            now = time.perf_counter()
            lap[phase] = now - last[0]
            last[0] = now
        sae_step(m, x, t, 1e-4, dead_feature_window=window, mark=mark)
        if t: [times[p].append(lap[p]) for p in PHASES]
    med = {p: 1e3 * sorted(v)[len(v) // 2] for p, v in times.items()}
    med['step'] = sum(v for p, v in med.items() if p not in ('data', 'encoder product'))
    med['samples_per_s'] = batch_size / (med['step'] + med['data']) * 1e3
    return med


def profile_all(model:SyntheticModel, d_sae:int, k:float, batch_size:int, n_steps:int=5, device='cpu')->list[dict]:
    "`profile_step` rows: every architecture, the TopK family also with the dense backward and with all latents dead"
    rows = []
    for arch in ARCHS:
        variants = [(True, False)] + ([(False, False), (True, True), (False, True)] if arch in TOPK_FAMILY else [])
        for sparse, dead in variants:
            r = profile_step(model, arch, d_sae, k, batch_size, n_steps, device, sparse, dead)
            rows.append(dict(arch=arch, path='sparse' if sparse and arch in TOPK_FAMILY else 'dense',
                             auxk='all dead' if dead else 'off', **{p: round(v, 1) for p, v in r.items()}))
    return rows


def profile_table(rows:list[dict])->str:
    "Markdown table of `profile_all`'s rows (ms per step)"
    cols = ['arch', 'path', 'auxk', *PHASES, 'step', 'samples_per_s']
    out = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    out += ['| ' + ' | '.join(str(round(r[c]) if c == 'samples_per_s' else r[c]) for c in cols) + ' |' for r in rows]
    return '\n'.join(out)



def standard_by_density(
    model:SyntheticModel,      # the world; one fixed batch of its stream is used
    d_sae:int, batch_size:int,
    active:tuple=(0.01, 0.02, 0.04, 0.06, 0.5),   # share of the batch's entries made active (b_enc shifted)
    n_steps:int=6,             # timed steps per path, alternated (after two untimed)
    device='cpu',
)->list[dict]:
    "Ms per Standard step, the sparse step (the CPU's default) against the dense one, at each share of active entries"
    x = model.sample(batch_size, model.batch_generator(0, 'misc', 2)).to(device).float()
    rows = []
    for a in active:
        states = {}
        for sparse in (True, False):
            sae = make_sae('standard', model.hidden_dim, d_sae, seed=0, device=device)
            with torch.no_grad():   # shift every pre-activation by the (1 − a) quantile of a subsample
                sae.b_enc.sub_(sae.hidden_pre(x).flatten()[::97].quantile(1 - a))
            sae.sparse_grad = sparse
            states[sparse] = step_state(sae, 0., device)   # lr 0: the share stays where it was set
        times = {True: [], False: []}
        for t in range(n_steps + 2):
            for sparse, m in states.items():
                _sync(device)
                t0 = time.perf_counter()
                sae_step(m, x, t, 0.)
                _sync(device)
                if t >= 2: times[sparse].append(1e3 * (time.perf_counter() - t0))
        with torch.no_grad(): share = float((states[True].sae.hidden_pre(x) > 0).float().mean())
        med = lambda v: sorted(v)[len(v) // 2]
        rows.append(dict(active=round(share, 4), sparse_ms=round(med(times[True]), 1), dense_ms=round(med(times[False]), 1)))
    return rows

REFERENCE_SCRIPT = r'''
import json, sys, time, itertools, torch
out = {}
try:
    a = json.loads(sys.argv[1])
    if a.get('threads'): torch.set_num_threads(a['threads'])
    import sae_lens
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig
    from sae_lens.synthetic.synthetic_model import SyntheticModel
    from sae_lens.synthetic.synthetic_sae_runner import SyntheticSAERunnerConfig
    from sae_lens.synthetic.training import SyntheticActivationIterator
    from sae_lens.training.sae_trainer import SAETrainer
    out['version'] = getattr(sae_lens, '__version__', '?')
    model = SyntheticModel.load_from_source(a['model_dir'], device=a['device'])
    bs, n = a['batch_size'], a['n_steps']
    def fit(data, steps):
        sae_cfg = BatchTopKTrainingSAEConfig(d_in=model.cfg.hidden_dim, d_sae=a['d_sae'], k=a['k'], device=a['device'])
        sae = BatchTopKTrainingSAE(sae_cfg)
        rc = SyntheticSAERunnerConfig(synthetic_model=a['model_dir'], sae=sae_cfg, training_samples=steps * bs, batch_size=bs,
                                      device=a['device'], logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, output_path=None)
        trainer = SAETrainer(cfg=rc.to_sae_trainer_config(), sae=sae, data_provider=data, evaluator=None, save_checkpoint_fn=lambda *_: None)
        t = time.perf_counter(); trainer.fit()
        if a['device'].startswith('cuda'): torch.cuda.synchronize()
        return time.perf_counter() - t
    it = lambda: SyntheticActivationIterator(feature_dict=model.feature_dict, activations_generator=model.activation_generator, batch_size=bs)
    fit(it(), 2)
    s = fit(it(), n); out['train'] = dict(samples_per_s=n * bs / s, seconds=s, steps=n)
    x = next(it())
    s = fit(itertools.repeat(x), n); out['step'] = dict(samples_per_s=n * bs / s, seconds=s, steps=n)
except Exception as e:
    out['error'] = f'{type(e).__name__}: {e}'
print('REFERENCE_JSON ' + json.dumps(out))
'''


def bench_reference(
    python:str|None,           # a Python interpreter that imports sae_lens
    model_dir:str|Path,        # saved world folder
    d_sae:int, k:float, batch_size:int, n_steps:int, device:str,
    threads:int|None=None,     # torch threads in the reference process
    timeout:float=1800,
)->dict:
    "The reference's training throughput in a subprocess: {'train', 'step', 'version'}, or {'skipped'/'error': why}"
    if not python: return dict(skipped='no reference Python given (--reference-python or $SYNTHSAE_REFERENCE_PYTHON)')
    if not Path(python).exists(): return dict(skipped=f'reference python not found: {python}')
    chk = subprocess.run([python, '-c', 'import sae_lens'], capture_output=True, text=True)
    if chk.returncode != 0: return dict(skipped=f'sae_lens is not importable by {python}')
    args = dict(model_dir=str(model_dir), d_sae=d_sae, k=k, batch_size=batch_size, n_steps=n_steps, device=device, threads=threads)
    r = subprocess.run([python, '-c', REFERENCE_SCRIPT, json.dumps(args)], capture_output=True, text=True, timeout=timeout)
    line = [l for l in r.stdout.splitlines() if l.startswith('REFERENCE_JSON ')]
    return json.loads(line[-1][15:]) if line else dict(error=f'no result (exit {r.returncode}): {r.stderr[-2000:]}')


def world_dir(name:str)->Path:
    "The cache folder `SyntheticModel.from_preset(name)` uses (the reference loads the world from there)"
    return default_cache_dir()/f'{name}-{config_hash(preset(name))}'


def run_benchmark(
    scale:str='tiny',          # a key of `SCALES`
    device:str='cpu',
    batch_size:int|None=None,  # None: the scale's
    n_steps:int|None=None,     # None: the scale's
    reference_python:str|None=None,  # Python importing sae_lens; None: skipped
    threads:int|None=None,     # torch CPU threads (ours); None: unchanged
)->dict:
    "All throughput measurements of one scale on one device, with ratios to the reference when it ran"
    c = dict(SCALES[scale]); bs, n = batch_size or c['batch_size'], n_steps or c['n_steps']
    old = torch.get_num_threads()
    if threads: torch.set_num_threads(threads)
    try:
        model = SyntheticModel.from_preset(c['preset'], device=device)
        res = dict(scale=scale, device=device, preset=c['preset'], d_sae=c['d_sae'], k=c['k'], batch_size=bs, n_steps=n,
                   torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(), platform=platform.platform(),
                   load_avg=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
                   gpu=torch.cuda.get_device_name() if torch.device(device).type == 'cuda' else None)
        res['data'] = bench_data(model, bs, n)
        res['step'] = bench_step(model, c['d_sae'], c['k'], bs, n, device)
        res['train'] = bench_train(model, c['d_sae'], c['k'], bs, n, device)
        res['train_prefetch'] = bench_train(model, c['d_sae'], c['k'], bs, n, device, prefetch=True)
        res['floor'] = bench_floor(model, c['d_sae'], bs, n, device, bs / res['data']['samples_per_s'])
    finally: torch.set_num_threads(old)
    res['reference'] = bench_reference(reference_python, world_dir(c['preset']), c['d_sae'], c['k'], bs, n, device, threads)
    for key, ref in (('train', 'train'), ('train_prefetch', 'train'), ('step', 'step')):
        if ref in res['reference']: res[f'ratio_{key}'] = res[key]['samples_per_s'] / res['reference'][ref]['samples_per_s']
    return res


def summary(res:dict)->dict:
    "Samples/s (rounded) of every measurement, the reference's and the ratios, with the settings"
    ref = res['reference']
    out = {k: res[k] for k in ('scale', 'device', 'preset', 'd_sae', 'k', 'batch_size', 'n_steps', 'threads')}
    out.update({f'{k}_samples_per_s': round(res[k]['samples_per_s']) for k in ('data', 'step', 'train', 'train_prefetch')})
    out.update({f'reference_{k}_samples_per_s': round(ref[k]['samples_per_s']) for k in ('step', 'train') if k in ref})
    out.update({k: round(v, 2) for k, v in res.items() if k.startswith('ratio_')})
    if 'floor' in res:  # the product + Adam (+ data) bound, and how close the step (and the whole run) come to it
        f = res['floor']
        out.update(floor_step_samples_per_s=round(f['step_samples_per_s']), floor_samples_per_s=round(f['samples_per_s']),
                   step_of_floor=round(res['step']['samples_per_s'] / f['step_samples_per_s'], 2),
                   train_of_floor=round(res['train']['samples_per_s'] / f['samples_per_s'], 2))
    out.update({k: v for k, v in ref.items() if k in ('skipped', 'error')})
    return out


@call_parse
def main(
    scale:Param("'tiny' (seconds) or 'full' (the 16k world, BatchTopK L 4096, k 25, batch 1024)", str)='tiny',
    device:Param("torch device of the SAE (and of the world's sampler)", str)='cpu',
    batch_size:Param("samples per step; default: the scale's", int)=None,
    n_steps:Param("timed steps per measurement; default: the scale's", int)=None,
    reference_python:Param("a Python that imports sae_lens; default $SYNTHSAE_REFERENCE_PYTHON, else skipped", str)=None,
    threads:Param("torch CPU threads for our measurements; default: torch's", int)=None,
    out:Param("write the results to this JSON file", str)=None,
    profile:Param("instead, time each phase of a step for every architecture (`profile_all`) and print the table", bool)=False,
    density:Param("instead, time the Standard step, sparse against dense, by share of active entries", bool)=False,
)->dict:
    "Measure training throughput and print the summary"
    if density:
        c = dict(SCALES[scale])
        if threads: torch.set_num_threads(threads)
        model = SyntheticModel.from_preset(c['preset'], device=device)
        rows = standard_by_density(model, c['d_sae'], batch_size or c['batch_size'], n_steps=n_steps or 6, device=device)
        res = dict(scale=scale, device=device, threads=torch.get_num_threads(), standard_by_density=rows,
                   omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'))
        if out: write_json(out, res)
        print('| active entries | sparse step (ms) | dense step (ms) |\n|---|---|---|')
        print('\n'.join(f"| {r['active']:.1%} | {r['sparse_ms']} | {r['dense_ms']} |" for r in rows))
        return res
    if profile:
        c = dict(SCALES[scale])
        if threads: torch.set_num_threads(threads)
        model = SyntheticModel.from_preset(c['preset'], device=device)
        rows = profile_all(model, c['d_sae'], c['k'], batch_size or c['batch_size'], n_steps or 5, device)
        res = dict(scale=scale, device=device, threads=torch.get_num_threads(), profile=rows,
                   omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
                   load_avg=os.getloadavg()[0] if hasattr(os, 'getloadavg') else None)
        if out: write_json(out, res)
        print(profile_table(rows))
        return res
    res = run_benchmark(scale, device, batch_size, n_steps, reference_python or os.environ.get('SYNTHSAE_REFERENCE_PYTHON'), threads)
    if out: write_json(out, res)
    print(json.dumps(summary(res), indent=2))
    return res
