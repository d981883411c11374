"""Training: every architecture reaches its L0 on the tiny world, exact resume after SIGKILL, many SAEs on one
stream, data parallel over 2 gloo processes, RunConfig round trips and error messages."""
import json, math, os, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path
import pytest, torch
from synthsae.model import SyntheticModel
from synthsae.saes import ARCHS, make_sae, paper_sae_config, load_sae
from synthsae.evaluation import evaluate
from synthsae.testing import assert_sums_close, linear_magnitude
from synthsae.runs import RunConfig, EvalConfig, run, train_many, build_sae
from synthsae.training import (train_sae, TrainConfig, read_log,
                               latest_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}   # one thread: deterministic and fast on a shared 2-core machine

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py

def same_weights(a, b)->bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

def tiny_cfg(arch:str, d_in:int, target:float=5.):
    c = paper_sae_config(arch, d_in, 64, target, seed=0)
    if arch == 'standard': c = replace(c, l1_warm_up_steps=0, autotune_start_step=0)
    if arch == 'matryoshka_batchtopk': c = replace(c, matryoshka_widths=(8, 16, 32, 64))
    return c

def test_every_arch_reaches_target_l0_and_beats_random(tiny):
    # 6 SAEs × 700 steps × 256 samples on one stream: ≈ 25–35 s on one CPU core
    fast_tuner = dict(integral_gain=2e-2, convergence_gain=0.1, smoothing=0.9, rate_smoothing=0.8)
    saes = train_sae([ARCHS[a](tiny_cfg(a, tiny.hidden_dim)) for a in ARCHS], tiny, 700 * 256, batch_size=256, lr=3e-3,
                     progress=False, norm_batches=20, autotuner=fast_tuner)
    for a, s in zip(ARCHS, saes):
        e = evaluate(s, tiny, 20_000, seed=0)
        e0 = evaluate(ARCHS[a](tiny_cfg(a, tiny.hidden_dim)), tiny, 20_000, seed=0)
        assert abs(e.sae_l0 - 5) <= 0.15 * 5, (a, e.sae_l0)
        assert e.mcc > e0.mcc + 0.15, (a, e.mcc, e0.mcc)

def test_list_equals_each_alone(tiny):
    # every architecture is deterministic on CPU, so sharing the stream changes nothing bit for bit
    mk = lambda: [ARCHS[a](tiny_cfg(a, tiny.hidden_dim)) for a in ARCHS]
    kw = dict(batch_size=64, lr=1e-3, progress=False, norm_batches=2, dead_feature_window=3, log_every=4)
    together = train_sae(mk(), tiny, 12 * 64, **kw)
    for s, t in zip(together, mk()):
        assert same_weights(s, train_sae(t, tiny, 12 * 64, **kw)), s.architecture

def test_dead_mask_skipping_and_prefetch_are_exact(tiny):
    # the mask is dropped only while no latent can be dead: results do not depend on when the horizon is refreshed;
    # prefetching draws the same batches in a thread
    kw = dict(batch_size=64, lr=3e-3, progress=False, dead_feature_window=4)
    a = train_sae(make_sae('topk', tiny.hidden_dim, 64, k=2, seed=0), tiny, 30 * 64, log_every=1, **kw)
    b = train_sae(make_sae('topk', tiny.hidden_dim, 64, k=2, seed=0), tiny, 30 * 64, log_every=13, **kw)
    c = train_sae(make_sae('topk', tiny.hidden_dim, 64, k=2, seed=0), tiny, 30 * 64, log_every=13, prefetch=False, **kw)
    assert same_weights(a, b) and same_weights(a, c)   # a and b prefetch (the CPU's default), c does not

@pytest.mark.parametrize('mat_aux', [False, True])
def test_sparse_backward_trains_as_the_dense_path(tiny, mat_aux):
    # 20 steps with dead latents from step 4 (AuxK on): the backward through the selected pre-activations only
    # (`sparse_grad`, the default) against the dense backward. The two differ in the order of the gradients' sums:
    # each of T Adam steps moves a parameter by about lr, and a sum of n terms changes by at most n·eps relatively,
    # so the parameters may differ by n·eps·(T·lr) with n = T·B (the gradient's sum over the batch, at each step).
    T, B, lr = 20, 64, 1e-3
    def cfg(a):
        c = tiny_cfg(a, tiny.hidden_dim)
        return replace(c, use_matryoshka_aux_loss=mat_aux) if a == 'matryoshka_batchtopk' else c
    dense = [ARCHS[a](cfg(a)) for a in ARCHS]
    for s in dense: s.sparse_grad = False
    kw = dict(batch_size=B, lr=lr, progress=False, norm_batches=2, dead_feature_window=3, log_every=5)
    dense = train_sae(dense, tiny, T * B, **kw)
    sparse = train_sae([ARCHS[a](cfg(a)) for a in ARCHS], tiny, T * B, **kw)
    for d, s in zip(dense, sparse):
        assert s.sparse_grad is None and d.sparse_grad is False  # None: the sparse backward on the CPU
        for (name, p), q in zip(d.named_parameters(), s.parameters()):
            assert_sums_close(q, p, terms=T * B, magnitude=T * lr, dtype=torch.float32)
        # the architectures whose CPU step has its own backward (Standard's: on pre-activations computed once)
        assert torch.equal(d.W_dec, s.W_dec) or d.architecture in ('topk', 'batchtopk', 'matryoshka_batchtopk',
                                                                    'standard')

RESUME_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from synthsae.model import SyntheticModel
from synthsae.saes import make_sae
from synthsae.training import train_sae
m = SyntheticModel.from_preset('tiny')
train_sae([make_sae('jumprelu', m.hidden_dim, 64, seed=1, target_l0=5.), make_sae('batchtopk', m.hidden_dim, 64, k=4., seed=2)],
          m, {steps} * 64, batch_size=64, lr=1e-3, progress=False, checkpoint_dir=sys.argv[1], checkpoint_every=10,
          log_every=5, log_path=sys.argv[2], dead_feature_window=20)
"""

def resume_saes(m):
    return [make_sae('jumprelu', m.hidden_dim, 64, seed=1, target_l0=5.), make_sae('batchtopk', m.hidden_dim, 64, k=4., seed=2)]

def test_sigkill_then_resume_is_bit_exact(tiny, tmp_path):
    steps = 300
    ck, log = tmp_path/'ck', tmp_path/'log.jsonl'
    p = subprocess.Popen([sys.executable, '-c', RESUME_SCRIPT.format(steps=steps), str(ck), str(log)], env=ENV, cwd=ROOT)
    t0 = time.time()
    while latest_checkpoint(ck) is None or int(latest_checkpoint(ck).name) < 30 * 64:
        assert p.poll() is None and time.time() - t0 < 60, "worker ended before writing its checkpoints"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait()
    killed_at = int(latest_checkpoint(ck).name)
    assert killed_at < steps * 64
    kw = dict(batch_size=64, lr=1e-3, progress=False, checkpoint_every=10, log_every=5, dead_feature_window=20)
    resumed = train_sae(resume_saes(tiny), tiny, steps * 64, checkpoint_dir=ck, resume=True, log_path=log, **kw)
    full = train_sae(resume_saes(tiny), tiny, steps * 64, checkpoint_dir=tmp_path/'ck2', **kw)
    assert all(same_weights(a, b) for a, b in zip(resumed, full))
    for i in range(2):   # the log has each step once, in order, although the killed run wrote past its checkpoint
        steps_logged = [r['step'] for r in read_log(log) if r['sae'] == i]
        assert steps_logged == list(range(4, steps, 5))

def test_incompatible_checkpoint_says_what_differs(tiny, tmp_path):
    kw = dict(batch_size=32, progress=False, checkpoint_dir=tmp_path, checkpoint_every=5)
    train_sae(make_sae('topk', tiny.hidden_dim, 64, k=4), tiny, 10 * 32, **kw)
    with pytest.raises(ValueError, match=r"saes\.0\.d_sae: checkpoint has 64, this run has 32"):
        train_sae(make_sae('topk', tiny.hidden_dim, 32, k=4), tiny, 10 * 32, resume=True, **kw)
    with pytest.raises(ValueError, match=r"saes\.0\.architecture: checkpoint has 'topk', this run has 'batchtopk'"):
        train_sae(make_sae('batchtopk', tiny.hidden_dim, 64, k=4), tiny, 10 * 32, resume=True, **kw)

def test_nan_names_step_and_last_checkpoint(tiny, tmp_path):
    with pytest.raises(FloatingPointError, match=r"not finite at step \d+; last good checkpoint: .*ck/"):
        train_sae(make_sae('standard', tiny.hidden_dim, 32), tiny, 400 * 32, batch_size=32, lr=1e30, grad_clip=None,
                  progress=False, log_every=10, checkpoint_dir=tmp_path/'ck', checkpoint_every=1)

def test_input_scale_is_folded(tiny, tmp_path):
    # the checkpoint holds the SAE trained on s·x; the returned one must read raw x and give x̂ = (SAE on s·x) / s
    cfg = paper_sae_config('jumprelu', tiny.hidden_dim, 32, 5., seed=0)
    assert cfg.normalize_activations == 'expected_average_only_in'
    sae = train_sae(ARCHS['jumprelu'](cfg), tiny, 20 * 64, batch_size=64, progress=False, norm_batches=3,
                    checkpoint_dir=tmp_path, checkpoint_every=20)
    st = torch.load(latest_checkpoint(tmp_path)/'trainer_state.pt', weights_only=False)['members'][0]
    raw = ARCHS['jumprelu'](cfg); raw.load_state_dict(st['sae']); s = st['scale']
    norms = tiny.sample(20_000, tiny.batch_generator(0, 'eval', 9)).norm(dim=-1)
    assert abs(s * norms.mean() / 48 ** 0.5 - 1) < 0.03   # s = √D / E‖x‖ (3 × 64 samples: σ of the mean norm ≈ 0.5%)
    x = tiny.sample(512, tiny.batch_generator(0, 'eval', 5))
    # another float order of the same SAE: pre-activations (two d-term sums, the scale folded in: 2d + 8 roundings
    # on |s x||W_enc| + |b_enc| + |b_dec||W_enc|), carried through the decoder (L + 2 more), divided by s
    z = raw.encode(s * x)
    assert torch.equal(sae.encode(x) != 0, z != 0)
    M_pre = linear_magnitude(s * x, raw.W_enc, raw.b_enc) + linear_magnitude(raw.b_dec, raw.W_enc)
    d, L = tiny.hidden_dim, raw.cfg.d_sae
    assert_sums_close(sae.decode(sae.encode(x)), raw.decode(z) / s, 2 * d + 8 + L + 2,
                      linear_magnitude(M_pre * (z != 0), raw.W_dec, raw.b_dec) / s)

@pytest.mark.skipif(not (ROOT/'.venv'/'bin'/'torchrun').exists() and not any((Path(p)/'torchrun').exists() for p in os.environ.get('PATH', '').split(':')),
                    reason='torchrun not found')
def test_ddp_two_gloo_processes(tmp_path):
    # ≈ 15 s: two ranks with different init seeds end with identical weights, and the loss drops
    torchrun = Path(sys.executable).parent/'torchrun'
    cmd = [str(torchrun) if torchrun.exists() else 'torchrun', '--standalone', '--nproc_per_node', '2',
           str(ROOT/'tests'/'ddp_worker.py'), str(tmp_path), '100']
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path/f'rank{i}.pt') for i in range(2))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path/'log.jsonl')
    assert log[-1]['samples'] == 100 * 128 * 2
    assert log[-1]['loss'] < 0.6 * log[0]['loss']

def test_run_config_round_trip(tmp_path):
    cfg = RunConfig(model='tiny', sae=paper_sae_config('matryoshka_batchtopk', 48, 64, 5.),
                    train=TrainConfig(training_samples=1000, batch_size=100, checkpoint_every=5, autotuner=dict(integral_gain=0.01)),
                    eval=EvalConfig(num_samples=500, seed=3), out_dir=str(tmp_path/'run'))
    assert cfg.sae['architecture'] == 'matryoshka_batchtopk' and cfg.sae['matryoshka_widths'] == [2, 8, 32, 64]
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert RunConfig.load(cfg.save(tmp_path/'c.json')) == cfg
    with pytest.raises(ValueError, match='unknown RunConfig keys'): RunConfig.from_dict({**cfg.to_dict(), 'trian': {}})

def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match=r"d_in=32 \(W_enc \(32, 64\)\).*hidden_dim=48"):
        train_sae(make_sae('topk', 32, 64, k=4), tiny, 100, progress=False)
    with pytest.raises(ValueError, match=r"sae.d_in=32 but the model's hidden_dim=48"):
        build_sae(dict(architecture='topk', d_in=32, d_sae=64, k=4), 48)
    with pytest.raises(ValueError, match=r"sae.architecture must be one of \['standard', 'topk', 'batchtopk'"):
        RunConfig(sae=dict(architecture='gated', d_sae=64))
    with pytest.raises(ValueError, match="valid fields"): RunConfig(sae=dict(architecture='topk', d_sae=64, K=4))
    with pytest.raises(ValueError, match='lr_schedule must be one of'): TrainConfig(lr_schedule='linear')
    with pytest.raises(ValueError, match='resume=True needs a checkpoint_dir'):
        train_sae(make_sae('topk', 48, 64, k=4), tiny, 100, resume=True, progress=False)

@pytest.mark.skipif(__import__('importlib').util.find_spec('wandb') is not None, reason='wandb is installed')
def test_wandb_asked_but_missing(tiny):
    with pytest.raises(ValueError, match='wandb is not installed'):
        train_sae(make_sae('topk', 48, 64, k=4), tiny, 100, wandb_project='x', progress=False)

def test_run_writes_folder_and_resumes(tmp_path):
    cfg = RunConfig(model='tiny', sae=dict(architecture='batchtopk', d_sae=64, k=5.),
                    train=TrainConfig(training_samples=60 * 128, batch_size=128, lr=3e-3, log_every=20, checkpoint_every=30),
                    eval=EvalConfig(num_samples=4096), out_dir=str(tmp_path/'run'))
    res = run(cfg, device='cpu', progress=False)
    out = tmp_path/'run'
    assert sorted(p.name for p in out.iterdir()) == ['checkpoints', 'eval.json', 'eval_stats.json', 'log.jsonl', 'run_config.json', 'sae']
    ev = json.loads((out/'eval.json').read_text())
    assert set(ev) == {'batch', 'threshold'} and ev['batch']['sae_l0'] == pytest.approx(5., abs=1e-6)
    assert json.loads((out/'eval_stats.json').read_text()) == ev['batch']
    assert [r['step'] for r in read_log(out/'log.jsonl')] == [19, 39, 59]
    assert load_sae(out/'sae').architecture == 'jumprelu'   # BatchTopK exports as JumpReLU
    again = run(cfg, device='cpu', progress=False)   # finished checkpoints: resumes at the end, same SAE
    assert same_weights(res['sae'], again['sae'])

def test_train_many_groups_share_a_stream(tmp_path):
    t = TrainConfig(training_samples=20 * 64, batch_size=64, lr=1e-3, eval_every=10)
    cfgs = [RunConfig(sae=dict(architecture='topk', d_sae=64, k=k, seed=0), train=t, eval=EvalConfig(num_samples=1024)) for k in (3, 6)]
    cfgs.append(RunConfig(sae=dict(architecture='topk', d_sae=64, k=3, seed=0), train=replace(t, seed=1), eval=EvalConfig(num_samples=1024)))
    res = train_many(cfgs, device='cpu', progress=False)
    assert [r['eval']['default'].sae_l0 <= k + 1e-6 for r, k in zip(res, (3, 6, 3))] == [True] * 3
    assert not same_weights(res[0]['sae'], res[2]['sae'])   # another data seed, another stream
    evals = [r for r in res[1]['log'] if 'eval' in r]       # periodic evaluations at steps 9 and 19, logged per SAE
    assert [r['step'] for r in evals] == [9, 19] and 0 < evals[-1]['eval']['mcc'] <= 1

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_bf16_training(tiny, tmp_path):
    # bf16 autocast by default on CUDA; the batch L0 of BatchTopK stays exactly k; checkpoints reload on the GPU
    saes = train_sae([make_sae('batchtopk', tiny.hidden_dim, 64, k=5., seed=0), ARCHS['jumprelu'](tiny_cfg('jumprelu', tiny.hidden_dim))],
                     tiny, 100 * 256, batch_size=256, lr=3e-3, device='cuda', progress=False, log_every=50,
                     log_path=tmp_path/'log.jsonl', checkpoint_dir=tmp_path/'ck', checkpoint_every=50, norm_batches=2)
    log = read_log(tmp_path/'log.jsonl')
    assert all(s.W_dec.device.type == 'cuda' for s in saes)
    assert log[-1]['l0'] == pytest.approx(5., abs=1e-4) and all(math.isfinite(r['loss']) for r in log)
    again = train_sae([make_sae('batchtopk', tiny.hidden_dim, 64, k=5., seed=0), ARCHS['jumprelu'](tiny_cfg('jumprelu', tiny.hidden_dim))],
                      tiny, 100 * 256, batch_size=256, lr=3e-3, device='cuda', progress=False, log_every=50, resume=True,
                      checkpoint_dir=tmp_path/'ck', checkpoint_every=50, norm_batches=2)
    assert all(same_weights(a, b) for a, b in zip(saes, again))

def test_short_run_reaches_target_l0_without_overrides(tiny):
    # Standard and JumpReLU with the library defaults and no autotuner overrides, 600 steps of 1,024 on one stream
    # (≈ 10 s on one idle core): L0 within 15% of the target, MCC at least 0.15 above the untrained SAE's
    mk = lambda: [make_sae('standard', tiny.hidden_dim, 64, seed=0), make_sae('jumprelu', tiny.hidden_dim, 64, seed=0)]
    saes = train_sae(mk(), tiny, 600 * 1024, batch_size=1024, lr=3e-3, target_l0=4., progress=False)
    for s, s0 in zip(saes, mk()):
        e, e0 = evaluate(s, tiny, 20_000, seed=0), evaluate(s0, tiny, 20_000, seed=0)
        assert abs(e.sae_l0 - 4) <= 0.15 * 4, (s.architecture, e.sae_l0)
        assert e.mcc >= e0.mcc + 0.15, (s.architecture, e.mcc, e0.mcc)

def test_autotuner_gains_are_the_papers_at_its_length(tiny, tmp_path):
    from synthsae.saes import PAPER_TOTAL_STEPS, jumprelu_paper_v1
    from synthsae.training import L0AutotunerConfig, autotuner_defaults, _Member
    paper = dict(smoothing=0.99, rate_smoothing=0.95, integral_gain=3e-4, gain_scale=10., convergence_gain=0.01)
    gains = lambda cfg: {k: getattr(cfg, k) for k in paper}
    assert gains(L0AutotunerConfig(25., n_steps=PAPER_TOTAL_STEPS)) == paper == gains(L0AutotunerConfig(25.))
    for arch in ('standard', 'jumprelu'):      # what the trainer builds for the paper's run, warm-up start included
        sae = ARCHS[arch](paper_sae_config(arch, 768, 64, 25.))
        m = _Member(sae, 3e-4, None, 1., torch.device('cpu'), None, PAPER_TOTAL_STEPS)
        assert gains(m.tuner.cfg) == paper and m.tuner.cfg.start_step == {'standard': 65_104, 'jumprelu': 0}[arch]
    over = _Member(make_sae('standard', 8, 16, target_l0=3.), 1e-3, None, 1., torch.device('cpu'), dict(integral_gain=0.02), 600)
    assert over.tuner.cfg.integral_gain == 0.02 and over.tuner.cfg.smoothing == autotuner_defaults(600)['smoothing']
    jr = jumprelu_paper_v1(768, 64, 25.)        # the paper preset keeps its own initialisation
    assert (jr.jumprelu_init_threshold, jr.jumprelu_bandwidth, jr.decoder_init_norm) == (0.5, 2., 0.5)
    # train_sae resolves the gains for its own step count: the first update is 1 + K_i(n)·tanh(10|ℓ − 4|/4)
    train_sae(make_sae('standard', tiny.hidden_dim, 64, seed=0), tiny, 3 * 64, batch_size=64, target_l0=4., progress=False,
              log_every=1, log_path=tmp_path/'log.jsonl')
    r = read_log(tmp_path/'log.jsonl')[0]
    k_i = autotuner_defaults(3)['integral_gain']
    adj = k_i * math.tanh(10 * abs(r['l0'] - 4) / 4)
    assert math.isclose(r['multiplier'], 1 + math.copysign(adj, r['l0'] - 4), rel_tol=1e-12)


def test_adam_sees_w_enc_transposed_and_trains_the_same(tiny):
    "Adam updates W_enc through a contiguous transposed view of its memory: bit-identical to Adam on W_enc itself"
    from synthsae.training import step_state, sae_step
    saes = [make_sae('batchtopk', tiny.hidden_dim, 64, k=4, seed=0) for _ in range(2)]
    m, plain = step_state(saes[0], 1e-3), step_state(saes[1], 1e-3)
    assert not saes[0].W_enc.is_contiguous()   # (d, L) stored column-major
    views = [v for p, v in zip(m.params, m.adam_params) if v is not p]
    assert len(views) == 1 and views[0].is_contiguous() and views[0].data_ptr() == saes[0].W_enc.data_ptr()
    plain.adam_params = plain.params
    plain.opt = torch.optim.Adam(plain.params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=True)
    for t in range(5):
        x = tiny.sample(64, tiny.batch_generator(t, 'train', 0))
        for s in (m, plain): sae_step(s, x, t, 1e-3)
    for p, q in zip(saes[0].parameters(), saes[1].parameters()): assert torch.equal(p, q)   # elementwise: exact
    assert all(p.grad is None for p in m.params + m.adam_params)


def test_adam_view_errors_and_old_checkpoints(tiny):
    "A parameter replaced after the state was made is an error; moments saved in W_enc's orientation load transposed"
    from synthsae.training import step_state, sae_step
    m = step_state(make_sae('topk', tiny.hidden_dim, 32, k=2, seed=0), 1e-3)
    sae_step(m, tiny.sample(32, tiny.batch_generator(0, 'train', 0)), 0, 1e-3)
    sd = m.state_dict()
    i = next(i for i, (p, v) in enumerate(zip(m.params, m.adam_params)) if v is not p)
    moments = {k: t.clone() for k, t in sd['opt']['state'][i].items()}
    sd['opt']['state'][i] = {k: t.t() if t.dim() == 2 else t for k, t in moments.items()}   # as written before
    fresh = step_state(make_sae('topk', tiny.hidden_dim, 32, k=2, seed=0), 1e-3)
    fresh.load_state_dict(sd)
    for k, t in fresh.opt.state[fresh.adam_params[i]].items(): assert torch.equal(t, moments[k])
    m.sae.W_enc.data = m.sae.W_enc.data.clone()
    with pytest.raises(RuntimeError, match='replaced after its training state was made'):
        sae_step(m, tiny.sample(32, tiny.batch_generator(1, 'train', 0)), 1, 1e-3)


def test_standard_sparse_backward_trains_as_the_dense_path(tiny, monkeypatch):
    # a Standard SAE with 1–4% of its entries active (a strong penalty keeps them so): 20 steps through the active
    # entries only against the dense step; the tolerance is `test_sparse_backward_trains_as_the_dense_path`'s
    from synthsae.saes import StandardSAE
    T, B, lr = 20, 64, 1e-3
    def sae():
        s = make_sae('standard', tiny.hidden_dim, 256, seed=0, l1_coefficient=10.)
        x = tiny.sample(256, tiny.batch_generator(0, 'misc', 9))
        with torch.no_grad(): s.b_enc.sub_(s.hidden_pre(x).quantile(0.98))
        return s
    taken, sparse_forward = [], StandardSAE._sparse_forward
    def spy(self, *args):
        taken.append(True)
        return sparse_forward(self, *args)
    monkeypatch.setattr(StandardSAE, '_sparse_forward', spy)
    dense = sae()
    dense.sparse_grad = False
    kw = dict(batch_size=B, lr=lr, progress=False, log_every=5)
    dense = train_sae(dense, tiny, T * B, **kw)
    assert taken == []
    sparse = train_sae(sae(), tiny, T * B, **kw)
    assert taken == [True] * T   # every step of this run went through the active entries only
    for p, q in zip(dense.parameters(), sparse.parameters()):
        assert_sums_close(q, p, terms=T * B, magnitude=T * lr, dtype=torch.float32)
