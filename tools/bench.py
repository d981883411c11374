"""Data-engine speed, ours and the reference's (SAELens `sae_lens.synthetic`) in one run: `make bench`.

    python tools/bench.py --scale full --out reports/benchmarks     # writes benchmarks.json and benchmarks.md

Every number is measured in this run on this machine and the table is printed from them. The reference, when a
Python that imports it is given (`--reference-python`, else `$SYNTHSAE_REFERENCE_PYTHON`, else this interpreter
if it has `sae_lens`), runs in a subprocess on the *same* world (saved by us and loaded by its own
`load_from_disk`: our save format is the reference's) with the same thread count. Our timings are medians over
`n_batches` batches after one warm-up batch (the repeats below warm up longer).

* **samples/s**: `model.sample(batch_size)`, hidden activations `(B, D)`, everything included;
* **build**: `SyntheticModel(cfg)` from scratch: hierarchy, copula, directions with the config's
  orthogonalisation steps (100 for the 16k world), probabilities and magnitudes; the reference's 100 steps
  would take too long, so its per-step time is extrapolated;
* **rho_mm**: `superposition_stats` over all N(N−1) pairs, with and without the per-feature percentiles;
* **repeats** (`--repeats N`, N ≥ 1): samples/s in N fresh processes each, ours and the reference's interleaved,
  as min / median / max, with the ratio of each pair. Each of our processes warms up (≥ 3 batches and 0.5 s: the
  first two batches page in the world and grow the heap, ≈ 10k first-touch page faults) and then times batches for
  ≥ 2 s (≥ `n_batches`), so that a process's median does not rest on a fraction of a second of a shared machine.
  Why the spread. (1) torch's OpenMP threads, once a parallel region ends, *spin* waiting for the next one
  (libgomp's default wait policy); the sampler runs ≈ 110 parallel regions per batch, and on a 2-core machine where
  any other process runs a spinning thread takes the core its partner needs, so our samples/s fell by up to 10×
  while the reference's few large products barely notice. `OMP_WAIT_POLICY=PASSIVE` (threads sleep when idle)
  removes that; the repeats run both libraries with `--omp_wait_policy` (default PASSIVE). (2) What is left is the
  machine, not the process: with another job on the cores, the medians of consecutive 10-batch windows *inside*
  one process differ by 1.8–1.9× (max/min), more than the medians of whole processes (1.5–1.6×), and
  `ours_cpu_per_wall` (CPU seconds per wall second while timing) shows how much of the two cores a process got.
  (3) A per-process effect that was real but small: glibc returning heap memory to the kernel between batches,
  0–550 page faults per batch depending on the process; the sampler now keeps its large temporaries in per-thread
  scratch memory (≈ 2 faults per batch).
* **scaling**: samples/s of independent features (no hierarchy, no copula) at a fixed expected L0 as N grows:
  the sampler's cost follows L0, not N (what bounds it is discussed in the sampler notebook).
"""
from __future__ import annotations
import json, os, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path
import torch
from fastcore.script import call_parse, Param
from synthsae.core import make_generator, unit_rows, write_json, atomic_file
from synthsae.firing import ZipfianFiringProbabilityConfig
from synthsae.geometry import superposition_stats
from synthsae.sampler import FeatureSampler
from synthsae.model import SyntheticModel, preset
from synthsae.paper import median_seconds, machine_info, find_reference_python, run_reference, REFERENCE_SCRIPT


def model_samples_per_second(model:SyntheticModel, batch_size:int=1024, repeats:int=10)->float:
    "Samples/s of `model.sample(batch_size)` (median batch time)"
    g = torch.Generator(model.device).manual_seed(0)
    return batch_size / median_seconds(lambda: model.sample(batch_size, g), repeats, device=model.device)


def fixed_l0_probabilities(num_features:int, l0:float|None=None)->torch.Tensor:
    "The 16k Zipf firing recipe at `num_features`, scaled so that Σp equals `l0` (default: the 16k recipe's Σp)"
    recipe = ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-4)
    l0 = float(recipe.generate(16_384, seed=0).sum()) if l0 is None else l0
    p = recipe.generate(num_features, seed=0).double()
    return (p * l0 / p.sum()).clamp(max=1.).float()


class ScalingWorld:
    "Independent features at a fixed expected L0 with random unit directions: the sampler alone"
    def __init__(self, num_features:int, hidden_dim:int=768, l0:float|None=None, device='cpu', seed:int=0):
        g = make_generator(seed)
        p = fixed_l0_probabilities(num_features, l0)
        self.sampler = FeatureSampler(p, torch.ones(num_features), torch.full((num_features,), 0.5)).to(device)
        self.W = unit_rows(torch.randn(num_features, hidden_dim, generator=g)).to(device)
        self.expected_l0 = float(p.sum())

    def sample(self, batch_size:int, generator=None)->torch.Tensor:
        return self.sampler.sparse_features(batch_size, generator).hidden(self.W)


def scaling_samples_per_second(sizes, hidden_dim:int=768, batch_size:int=1024, repeats:int=10, device='cpu')->list[dict]:
    "Samples/s of `ScalingWorld(N)` for each N in `sizes`, with each batch time relative to N = 16,384's"
    rows = []
    for n in sizes:
        w = ScalingWorld(n, hidden_dim, device=device)
        g = torch.Generator(device).manual_seed(1)
        s = median_seconds(lambda: w.sample(batch_size, g), repeats, device=device)
        rows.append(dict(num_features=n, expected_l0=w.expected_l0, seconds_per_batch=s, samples_per_second=batch_size / s))
        del w
    base = next((r for r in rows if r['num_features'] == 16_384), None)
    for r in rows: r['time_vs_16k'] = r['seconds_per_batch'] / base['seconds_per_batch'] if base else None
    return rows


def measure_ours(world:str, batch_size:int, n_batches:int, device:str)->tuple[dict, SyntheticModel]:
    "Build, sampling and superposition-statistics timings of the preset `world`"
    cfg = preset(world)
    t = time.perf_counter()
    model = SyntheticModel(cfg, device=device)
    ours = dict(world=world, num_features=cfg.num_features, hidden_dim=cfg.hidden_dim, build_s=time.perf_counter() - t,
                ortho_steps=cfg.orthogonalization.num_steps if cfg.orthogonalization else 0,
                samples_per_second=model_samples_per_second(model, batch_size, n_batches))
    W = model.feature_vectors.float()
    ours['rho_mm_s'] = median_seconds(lambda: superposition_stats(W, percentiles=()), 1, warmup=0, device=device)
    ours['superposition_stats_s'] = median_seconds(lambda: superposition_stats(W), 1, warmup=0, device=device)
    ours['rho_mm'] = superposition_stats(W, percentiles=()).rho_mm
    return ours, model


OURS_SCRIPT = r'''
import json, statistics, sys, time, torch
a = json.loads(sys.argv[1])
if a['threads']: torch.set_num_threads(a['threads'])
from synthsae.model import SyntheticModel
m = SyntheticModel.load(a['path'])
g = torch.Generator().manual_seed(0)
# warm-up: the first batches page in the world and grow the heap (≈ 10k first-touch page faults in two batches)
end = time.perf_counter() + a['warmup_s']
for i in range(1000):
    m.sample(a['batch_size'], g)
    if i + 1 >= a['warmup_batches'] and time.perf_counter() > end: break
times, end, cpu = [], time.perf_counter() + a['min_seconds'], time.process_time()
while len(times) < a['repeats'] or time.perf_counter() < end:
    t = time.perf_counter(); m.sample(a['batch_size'], g); times.append(time.perf_counter() - t)
cpu_per_wall = (time.process_time() - cpu) / sum(times)  # < 1 per busy thread: other work had the cores
print(json.dumps(dict(samples_per_second=a['batch_size'] / statistics.median(times), n_batches=len(times),
                      cpu_per_wall=cpu_per_wall, torch_threads=torch.get_num_threads())))
'''


def _spread(v:list[float])->dict:
    return dict(min=min(v), median=statistics.median(v), max=max(v), values=v)


def repeated_sampling(
    model:SyntheticModel,      # the world (saved once, loaded by every process)
    repeats:int=5,             # processes per library
    batch_size:int=1024,
    n_batches:int=20,          # timed batches per process (median)
    threads:int=0,             # torch threads in every process; 0: torch's default
    reference_python:str|None=None,  # a Python with sae_lens; None: ours only
    omp_wait_policy:str='PASSIVE',   # OMP_WAIT_POLICY of every process ('' leaves the environment's)
    timeout:float=1800,
    min_seconds:float=2.,      # our processes time batches for at least this long (the reference's take longer)
    warmup_s:float=0.5,        # our processes' warm-up: at least 3 batches and this long
)->dict:
    "Samples/s in `repeats` fresh processes per library, interleaved (ours, reference, ours, …): min/median/max"
    env = {**os.environ, **({'OMP_WAIT_POLICY': omp_wait_policy} if omp_wait_policy else {})}
    ours, ref, errors, cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        model.save(Path(d)/'world')
        a = dict(path=str(Path(d)/'world'), batch_size=batch_size, repeats=n_batches, threads=threads)
        oa = dict(a, min_seconds=min_seconds, warmup_s=warmup_s, warmup_batches=3)
        for _ in range(repeats):
            r = subprocess.run([sys.executable, '-c', OURS_SCRIPT, json.dumps(oa)], capture_output=True, text=True,
                               timeout=timeout, env=env)
            if r.returncode: raise RuntimeError(f"our sampler process failed:\n{r.stderr[-2000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            ours.append(res['samples_per_second'])
            cpu.append(res['cpu_per_wall'])
            if not reference_python: continue
            ra = dict(a, ortho_steps=0, rho=False)
            r = subprocess.run([reference_python, '-c', REFERENCE_SCRIPT, json.dumps(ra)], capture_output=True,
                               text=True, timeout=timeout, env=env)
            if r.returncode: errors.append(r.stderr[-500:])
            else: ref.append(json.loads(r.stdout.strip().splitlines()[-1])['samples_per_second'])
    out = dict(repeats=repeats, n_batches=n_batches, min_seconds=min_seconds, omp_wait_policy=omp_wait_policy or None,
               ours=_spread(ours), ours_cpu_per_wall=_spread(cpu))
    if ref:
        out['reference'] = _spread(ref)
        out['ratio'] = _spread([o / r for o, r in zip(ours, ref)])   # each pair ran one after the other
        out['ratio_of_medians'] = out['ours']['median'] / out['reference']['median']
    if errors: out['reference_errors'] = errors
    return out


def repeats_markdown(rep:dict)->str:
    "min / median / max of `repeated_sampling`"
    rows = [('synthsae samples/s', rep['ours'], ',.0f')]
    if 'ours_cpu_per_wall' in rep:
        rows += [('synthsae CPU s per wall s (2: both threads busy)', rep['ours_cpu_per_wall'], '.2f')]
    if 'reference' in rep: rows += [('reference samples/s', rep['reference'], ',.0f'), ('ratio (pairs)', rep['ratio'], '.1f')]
    ours_n = f"{rep['n_batches']} batches"
    if 'min_seconds' in rep: ours_n = f"≥ {rep['n_batches']} batches and ≥ {rep['min_seconds']:g} s"
    lines = [f"Sampling in {rep['repeats']} fresh processes per library (median batch time; ours: {ours_n} after a "
             f"warm-up, the reference: {rep['n_batches']} batches), OMP_WAIT_POLICY={rep['omp_wait_policy']}", '',
             '| | min | median | max |', '|---|---|---|---|']
    lines += [f"| {n} | {v['min']:{f}} | {v['median']:{f}} | {v['max']:{f}} |" for n, v, f in rows]
    return '\n'.join(lines) + '\n'


def summarize(ours:dict, reference:dict|None, scaling:list[dict])->dict:
    "Ratios of ours to the reference, with the reference's build extrapolated from its per-step orthogonalisation time"
    out = dict(ours=ours, reference=reference, scaling=scaling, ratios={})
    r = out['ratios']
    if reference and 'error' not in reference:
        r['sampling_speedup'] = ours['samples_per_second'] / reference['samples_per_second']
        if reference.get('ortho_step_s') and ours.get('ortho_steps'):
            reference['ortho_steps_s_extrapolated'] = reference['ortho_step_s'] * ours['ortho_steps']
            r['build_speedup_vs_ortho_alone'] = reference['ortho_steps_s_extrapolated'] / ours['build_s']
        if reference.get('rho_mm_s'): r['rho_mm_speedup'] = reference['rho_mm_s'] / ours['superposition_stats_s']
    big = max(scaling, key=lambda s: s['num_features']) if scaling else None
    if big and big.get('time_vs_16k') is not None: r['largest_N_time_vs_16k'] = big['time_vs_16k']
    return out


def _f(v, fmt:str)->str: return '' if v is None else format(v, fmt)

def results_markdown(summary:dict)->str:
    "The run's results as Markdown tables, with what they were measured on"
    o, r, q, m = summary['ours'], summary['reference'] or {}, summary['ratios'], summary['machine']
    p = summary['params']
    ref = f"SAELens {r['version']}" if 'version' in r else f"reference: {r.get('error', 'not run')[:200]}"
    lines = [f"# Data-engine benchmark ({p['scale']}, {o['world']} world)", '',
             f"{summary['finished']} · {m['platform']} · {m['cpu_count']} CPUs · torch {m['torch']}, {m['torch_threads']} threads"
             + (f" · {m['cuda']}" if m.get('cuda') else '') + f" · device {p['device']} · batch {p['batch_size']:,}, median of "
             f"{p['n_batches']} · {ref}", '',
             '| measurement | synthsae | reference | ratio |', '|---|---|---|---|',
             f"| samples/s | {o['samples_per_second']:,.0f} | {_f(r.get('samples_per_second'), ',.0f')} | {_f(q.get('sampling_speedup'), '.1f')} |",
             f"| build with {o['ortho_steps']} orthogonalisation steps (s) | {o['build_s']:.1f} | "
             f"{_f(r.get('ortho_steps_s_extrapolated'), '.1f')} (orthogonalisation alone, extrapolated) | {_f(q.get('build_speedup_vs_ortho_alone'), '.1f')} |",
             f"| ρ_mm alone (s) | {o['rho_mm_s']:.2f} | | |",
             f"| superposition stats with percentiles (s) | {o['superposition_stats_s']:.2f} | {_f(r.get('rho_mm_s'), '.2f')} | {_f(q.get('rho_mm_speedup'), '.1f')} |",
             '', 'Scaling: independent features at a fixed expected L0', '',
             '| N | E[L0] | samples/s | time vs N = 16,384 |', '|---|---|---|---|']
    lines += [f"| {s['num_features']:,} | {s['expected_l0']:.1f} | {s['samples_per_second']:,.0f} | {_f(s['time_vs_16k'], '.2f')} |" for s in summary['scaling']]
    return '\n'.join(lines) + '\n'


def run_benchmark(scale:str='tiny', device:str='cpu', batch_size:int=1024, n_batches:int=10, threads:int=0,
                  reference_python:str|None=None, reference_ortho_steps:int=1, repeats:int=0,
                  omp_wait_policy:str='PASSIVE')->dict:
    "Every measurement of one scale ('tiny': seconds, a smoke test; 'full': the 16k world), summarised"
    if scale not in ('tiny', 'full'): raise ValueError(f"scale must be 'tiny' or 'full', got {scale!r}")
    old = torch.get_num_threads()
    if threads: torch.set_num_threads(threads)
    try:
        ours, model = measure_ours('synthsaebench-16k' if scale == 'full' else 'tiny', batch_size, n_batches, device)
        sizes = [1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576] if scale == 'full' else [1_024, 4_096, 16_384]
        scaling = scaling_samples_per_second(sizes, 768 if scale == 'full' else 64, batch_size, n_batches, device)
        python, reference = find_reference_python(reference_python or os.environ.get('SYNTHSAE_REFERENCE_PYTHON', '')), None
        if python and torch.device(device).type == 'cpu':
            try: reference = run_reference(model, python, batch_size, n_batches, reference_ortho_steps, threads or torch.get_num_threads())
            except Exception as e: reference = dict(error=str(e)[-500:])
        summary = summarize(ours, reference, scaling)
        if repeats and torch.device(device).type == 'cpu':
            summary['repeats'] = repeated_sampling(model, repeats, batch_size, n_batches, threads, python, omp_wait_policy)
        summary['machine'] = machine_info()
    finally: torch.set_num_threads(old)
    summary['params'] = dict(scale=scale, device=device, batch_size=batch_size, n_batches=n_batches, threads=threads)
    summary['finished'] = datetime.now(timezone.utc).isoformat(timespec='seconds')
    return summary


@call_parse
def main(
    scale:Param("'tiny' (seconds: a small world, smoke test) or 'full' (the SynthSAEBench-16k world)", str)='tiny',
    device:Param("torch device of our sampler", str)='cpu',
    batch_size:Param("samples per batch", int)=1024,
    n_batches:Param("timed batches per measurement (the median is reported)", int)=10,
    threads:Param("torch threads; 0 keeps torch's default", int)=0,
    reference_python:Param("a Python with sae_lens ('' = $SYNTHSAE_REFERENCE_PYTHON, else this one if it has sae_lens, else skip)", str)='',
    reference_ortho_steps:Param("the reference's orthogonalisation steps timed (extrapolated to ours)", int)=1,
    out:Param("write <out>.json and <out>.md ('' = print only)", str)='',
    repeats:Param("also time sampling in this many fresh processes per library (min/median/max; CPU only)", int)=0,
    omp_wait_policy:Param("OMP_WAIT_POLICY of the repeated processes ('' = the environment's)", str)='PASSIVE',
    only_repeats:Param("run only the repeated-process sampling measurement", bool)=False,
)->dict:
    "Time the data engine, ours beside the reference's, and print the results table"
    if only_repeats:
        old = torch.get_num_threads()
        if threads: torch.set_num_threads(threads)
        try:
            model = SyntheticModel.from_preset('synthsaebench-16k' if scale == 'full' else 'tiny', device='cpu')
            python = find_reference_python(reference_python or os.environ.get('SYNTHSAE_REFERENCE_PYTHON', ''))
            summary = dict(repeats=repeated_sampling(model, max(repeats, 1), batch_size, n_batches, threads, python,
                                                     omp_wait_policy), machine=machine_info())
        finally: torch.set_num_threads(old)
        md = repeats_markdown(summary['repeats'])
        print(md)
        if out: write_json(f'{out}.json', summary)
        return summary
    summary = run_benchmark(scale, device, batch_size, n_batches, threads, reference_python, reference_ortho_steps,
                            repeats, omp_wait_policy)
    md = results_markdown(summary) + ('\n' + repeats_markdown(summary['repeats']) if 'repeats' in summary else '')
    print(md)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(f'{out}.json', summary)
        with atomic_file(f'{out}.md') as f: f.write(md)
    return summary
