"""Operator-level profile of the paper-protocol training step: `torch.profiler` over a few steps of BatchTopK-4096,
k = 25 on the 16k world (batch 1,024; bf16 autocast on CUDA, as the paper; the batch drawn in the loop, as in
`train_sae`). Prints and writes the top operators by device time and by host time, the kernels launched per step, and
ms per step with and without drawing the batch. `--scale tiny` runs in seconds (tiny world, L = 64, k = 4, batch 256).

    python tools/op_profile.py --out reports/op_profile            # CUDA when torch sees a GPU, else the CPU
    python tools/op_profile.py --dense --out reports/op_profile_dense   # the dense backward (the oracle) instead
"""
import json, time
from pathlib import Path
import torch
from fastcore.script import call_parse
from synthsae.core import check_choice, check_device
from synthsae.model import SyntheticModel
from synthsae.saes import make_sae
from synthsae.training import sae_step, step_state

SIZES = {'full': ('synthsaebench-16k', 4096, 25., 1024), 'tiny': ('tiny', 64, 4., 256)}


def _ms_per_call(fn, n:int, dev:torch.device)->float:
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    t = time.perf_counter()
    for i in range(n): fn(i)
    if dev.type == 'cuda': torch.cuda.synchronize(dev)
    return (time.perf_counter() - t) / n * 1e3


def profile(scale:str='full', device:str='auto', dense:bool=False, n_steps:int=10)->tuple[dict, dict]:
    "(summary, {table name: text}) of `n_steps` profiled steps after warm-up and timed runs"
    check_choice('scale', scale, tuple(SIZES))
    dev = check_device(device)   # 'auto': CUDA when available; 'cuda' without a GPU is a clear error
    amp = dev.type == 'cuda'
    preset, d_sae, k, bs = SIZES[scale]
    model = SyntheticModel.from_preset(preset, device=dev)
    sae = make_sae('batchtopk', model.hidden_dim, d_sae, k=k, seed=0, device=dev)
    sae.sparse_grad = not dense
    m = step_state(sae, 3e-4, dev)
    def draw(t):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            return model.sample(bs, model.batch_generator(t, 'misc', 1)).float()
    x0 = draw(0)
    def step(t): sae_step(m, draw(t), t, 3e-4, amp=amp)
    for t in range(3): step(t)
    rec = dict(scale=scale, device=str(dev), device_name=torch.cuda.get_device_name(dev) if amp else 'cpu',
               torch=torch.__version__, path='dense' if dense else 'sparse', batch_size=bs, d_sae=d_sae, k=k,
               ms_step_with_data=_ms_per_call(step, 4 * n_steps, dev),
               ms_step_fixed_batch=_ms_per_call(lambda t: sae_step(m, x0, t, 3e-4, amp=amp), 4 * n_steps, dev),
               ms_data=_ms_per_call(draw, 4 * n_steps, dev))
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if amp else [])
    with torch.profiler.profile(activities=acts) as prof:
        for t in range(n_steps): step(100 + t)
        if amp: torch.cuda.synchronize(dev)
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    rec['kernels_per_step'] = kernels / n_steps
    ka = prof.key_averages()
    orders = {'by_host_time': 'self_cpu_time_total'} | ({'by_device_time': 'self_device_time_total'} if amp else {})
    tables = {name: ka.table(sort_by=key, row_limit=25, max_name_column_width=60) for name, key in orders.items()}
    return rec, tables


@call_parse
def main(
    scale:str='full',             # 'full' (the 16k world, BatchTopK-4096) or 'tiny'
    device:str='auto',            # 'cuda', 'cpu' or 'auto' (CUDA when available)
    dense:bool=False,             # the dense backward (`sparse_grad = False`) instead of the sparse one
    n_steps:int=10,               # profiled steps
    out:str='reports/op_profile', # folder receiving summary.json and one text table per sort order
)->dict:
    rec, tables = profile(scale, device, dense, n_steps)
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        Path(out, f'{name}.txt').write_text(text)
        print(name, text, sep='\n')
    Path(out, 'summary.json').write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec, indent=1))
    return rec
