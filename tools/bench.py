"""Data-engine speed, ours and the reference's (SAELens `sae_lens.synthetic`) in one run: `make bench`.

    python tools/bench.py --scale full --out reports/benchmarks     # writes benchmarks.json and benchmarks.md

Every number is measured in this run on this machine and the table is printed from them. The reference, when a
Python that imports it is given (`--reference-python`, else `$SYNTHSAE_REFERENCE_PYTHON`, else this interpreter
if it has `sae_lens`), runs in a subprocess on the *same* world (saved by us and loaded by its own
`load_from_disk`: our save format is the reference's) with the same thread count. Our timings are medians over
`n_batches` batches after one warm-up batch.

* **samples/s**: `model.sample(batch_size)`, hidden activations `(B, D)`, everything included;
* **build**: `SyntheticModel(cfg)` from scratch: hierarchy, copula, directions with the config's
  orthogonalisation steps (100 for the 16k world), probabilities and magnitudes; the reference's 100 steps
  would take too long, so its per-step time is extrapolated;
* **rho_mm**: `superposition_stats` over all N(N−1) pairs, with and without the per-feature percentiles;
* **scaling**: samples/s of independent features (no hierarchy, no copula) at a fixed expected L0 as N grows:
  the sampler's cost follows L0, not N (what bounds it is discussed in the sampler notebook).
"""
from __future__ import annotations
import os, time
from datetime import datetime, timezone
from pathlib import Path
import torch
from fastcore.script import call_parse, Param
from synthsae.core import make_generator, unit_rows, write_json, atomic_file
from synthsae.firing import ZipfianFiringProbabilityConfig
from synthsae.geometry import superposition_stats
from synthsae.sampler import FeatureSampler
from synthsae.model import SyntheticModel, preset
from synthsae.paper import median_seconds, machine_info, find_reference_python, run_reference


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
                  reference_python:str|None=None, reference_ortho_steps:int=1)->dict:
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
)->dict:
    "Time the data engine, ours beside the reference's, and print the results table"
    summary = run_benchmark(scale, device, batch_size, n_batches, threads, reference_python, reference_ortho_steps)
    md = results_markdown(summary)
    print(md)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json(f'{out}.json', summary)
        with atomic_file(f'{out}.md') as f: f.write(md)
    return summary
