"The CUDA-only checks (skipped without a GPU) and gpu-check's contracts on any machine"
import json
from pathlib import Path
import pytest, torch
from synthsae.core import make_generator
from synthsae.model import SyntheticModel
from synthsae.sampler import SamplerConfig
from synthsae.saes import make_sae
from synthsae.gpu_check import gpu_check, hot_path_steps, check_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py

@cuda
def test_cuda_hot_path_has_no_host_sync():
    # the dense strategy ('auto' on CUDA) and a BatchTopK step, under set_sync_debug_mode('error')
    model = SyntheticModel.from_preset('tiny', device='cuda')
    assert model.sampling_strategy == 'dense'
    sae = make_sae('batchtopk', d_in=model.hidden_dim, d_sae=128, k=8, seed=0, device='cuda')
    r = hot_path_steps(model, sae, 512, n_steps=3)
    assert r['checked'] and r['ok'], r

@cuda
def test_cuda_strategies_agree_on_the_device():
    # mean L0 of 20,000 samples each (tiny world, L0 ≈ 6.3, per-sample sd ≈ 2.4): σ of the difference ≈ 0.024; 6σ
    model = SyntheticModel.from_preset('tiny', device='cuda')
    l0 = {}
    for s in ('sparse', 'dense'):
        model.set_sampler_config(SamplerConfig(strategy=s))
        f = model.sample_with_features(20_000, make_generator(0, 'cuda'))[1]
        l0[s] = float((f > 0).sum(1).double().mean())
    assert abs(l0['sparse'] - l0['dense']) < 0.15, l0

@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_device_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="device: 'cuda' was asked for but torch sees no usable GPU"):
        gpu_check(out=tmp_path/'gc', device='cuda')
    assert not (tmp_path/'gc').exists()  # before any work

def test_smoke_runs_every_phase(tmp_path):
    rec = gpu_check(out=tmp_path/'gc', device='cpu', size='smoke')
    saved = json.loads((tmp_path/'gc'/'gpu_check.json').read_text())
    assert saved['stopped'] is None and rec['results']['samples_trained'] == 20_480
    assert saved['strategy'] in ('sparse', 'dense') and saved['auto_strategy'] == 'sparse'
    assert saved['backward'] in ('sparse', 'dense') and saved['auto_backward'] == 'sparse'  # the CPU's default
    assert set(saved['eval']) >= {'mcc', 'f1', 'explained_variance', 'uniqueness', 'sae_l0', 'dead_latents'}

def test_budget_stop_still_writes_the_json(tmp_path):
    rec = gpu_check(out=tmp_path/'gc', device='cpu', size='smoke', budget_s=0.5)
    saved = json.loads((tmp_path/'gc'/'gpu_check.json').read_text())
    assert saved['stopped'].startswith('budget') and saved['stopped'] == rec['stopped']

def test_training_stops_at_the_budget(tmp_path):
    # a plan far longer than the budget allows (max samples forced up, throughput batches short): the trainer's hook
    # stops it, the SAE trained so far is evaluated and the JSON says the budget cut training
    rec = gpu_check(out=tmp_path/'gc', device='cpu', size='smoke', budget_s=20, training_samples=50_000_000)
    assert rec['stopped'] is None or rec['stopped'].startswith('budget'), rec.get('traceback')
    assert rec['wall_s'] < 30

def test_check_device_names_the_field():
    assert check_device('cpu') == torch.device('cpu')
    with pytest.raises(ValueError, match="device: 'tpu9'"): check_device('tpu9')

def test_train_until_stops_at_the_deadline(tiny):
    import time
    from synthsae.gpu_check import _train_until
    from synthsae.training import TrainConfig
    model = tiny
    sae = make_sae('batchtopk', d_in=model.hidden_dim, d_sae=64, k=4, seed=0)
    cfg = TrainConfig(training_samples=256 * 1000, batch_size=256, lr=3e-3)
    out, done, cut = _train_until(sae, model, cfg, 'cpu', time.perf_counter() - 1, every=5)
    assert cut and done == 5 * 256 and not out.training   # stopped at the first check, with the exported SAE
