"SAE architectures: sparse kernels against dense decoding, folding, file formats (ours and the reference's), losses"
import json, math, os, subprocess, textwrap, warnings
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from safetensors.torch import load_file
from synthsae.core import make_generator, unit_rows
from synthsae.saes import *

REF = Path(__file__).parent/'data'/'ref_saes'
REF_PY = os.environ.get('SYNTHSAE_REFERENCE_PYTHON', '')  # a Python with sae_lens (e.g. `make reference-venv`: .ref-venv/bin/python)
KW = dict(standard={}, topk=dict(k=6), batchtopk=dict(k=6), jumprelu=dict(jumprelu_init_threshold=0.2),
          matryoshka_batchtopk=dict(k=6, matryoshka_widths=(8, 32, 96)),
          matching_pursuit=dict(max_iterations=5, residual_threshold=0., stop_on_duplicate_support=False))

def perturbed(arch, d_in=24, d_sae=96, seed=0, **kw):
    "An SAE of `arch` with all parameters moved off their initial values"
    sae = make_sae(arch, d_in, d_sae, seed=seed, **{**KW[arch], **kw})
    g = make_generator(seed + 100)
    with torch.no_grad():
        for p in sae.parameters(): p.add_(0.3 * torch.randn(p.shape, generator=g))
        if isinstance(sae, BatchTopKSAE): sae.topk_threshold.fill_(0.4)
    return sae

def xs(n=64, d=24, seed=1): return torch.randn(n, d, generator=make_generator(seed))

def grads(loss, sae): return torch.autograd.grad(loss, [p for p in sae.parameters()], allow_unused=True)

def modes(sae): return list(sae.eval_modes)

@pytest.mark.parametrize('arch', ['topk', 'batchtopk', 'matryoshka_batchtopk', 'matching_pursuit'])
def test_sparse_forward_matches_dense_decode(arch):
    sae = perturbed(arch); sae.eval(); x = xs()
    o = sae(x)
    z = sae.encode(x, mode=modes(sae)[0])
    torch.testing.assert_close(o.z, z)
    torch.testing.assert_close(o.x_hat, sae.decode(z), atol=1e-5, rtol=1e-5)
    g_sparse = grads(o.losses['mse_loss'], sae)
    g_dense = grads(mse_loss(sae.decode(sae.encode(x, mode=modes(sae)[0])), x), sae)
    for a, b in zip(g_sparse, g_dense): torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

def test_sparse_decode_flat_offsets_gradients():
    g = make_generator(3)
    W = torch.randn(50, 7, generator=g, requires_grad=True)
    sample = torch.sort(torch.randint(0, 9, (40,), generator=g)).values   # some samples empty
    lat = torch.randint(0, 50, (40,), generator=g); vals = torch.rand(40, generator=g, requires_grad=True)
    dense = torch.zeros(9, 50).index_put((sample, lat), vals, accumulate=True) @ W
    sparse = sparse_decode(lat, vals, W, runs_to_offsets(sample, 9))
    torch.testing.assert_close(sparse, dense)
    up = torch.randn(9, 7, generator=g)
    for a, b in zip(torch.autograd.grad((sparse * up).sum(), (W, vals)), torch.autograd.grad((dense * up).sum(), (W, vals))):
        torch.testing.assert_close(a, b)

@pytest.mark.parametrize('k,bs', [(2.5, 16), (6, 64), (0.3, 10)])
def test_batchtopk_keeps_floor_k_b(k, bs):
    sae = make_sae('batchtopk', 24, 96, k=k)
    with torch.no_grad(): sae.b_enc.fill_(1.)                         # every pre-activation positive
    assert (sae.encode(xs(bs)) != 0).sum().item() == int(k * bs)
    with torch.no_grad(): sae.b_enc.copy_(torch.where(torch.arange(96) < 2, 1., -10.))  # only 2·bs positive
    assert (sae.encode(xs(bs)) != 0).sum().item() == min(int(k * bs), 2 * bs)

def test_topk_l0_at_most_k():
    sae = perturbed('topk'); z = sae.encode(xs(200))
    assert (z != 0).sum(-1).max().item() <= 6 and (z >= 0).all()

def test_batchtopk_threshold_ema_and_modes():
    sae = perturbed('batchtopk'); sae.topk_threshold.zero_(); x = xs()
    o = sae(x)                                                           # training mode: θ moves
    kept_min = o.z[o.z > 0].min().double()
    torch.testing.assert_close(sae.topk_threshold, 0.01 * kept_min)
    sae.eval(); sae(x); torch.testing.assert_close(sae.topk_threshold, 0.01 * kept_min)
    sae.topk_threshold.fill_(0.5)
    pre = sae.rescaled_pre(x)
    torch.testing.assert_close(sae.encode(x, mode='threshold'), F.relu(pre) * (pre > 0.5))
    with pytest.raises(ValueError, match="mode must be one of"): sae.encode(x, mode='dense')
    assert sae.to(torch.float32).topk_threshold.dtype == torch.float64

@pytest.mark.parametrize('arch', list(KW))
def test_fold_W_dec_norm_keeps_outputs(arch):
    sae = perturbed(arch); sae.eval(); x = xs()
    if sae.tied:
        with pytest.raises(ValueError, match='Matching Pursuit'): sae.fold_W_dec_norm_()
        return
    with torch.no_grad(): sae.W_dec[5] = 0.
    before = {m: (sae.encode(x, mode=m), sae.decode(sae.encode(x, mode=m))) for m in modes(sae)}
    sae.fold_W_dec_norm_()
    assert torch.isfinite(torch.cat([p.flatten() for p in sae.parameters()])).all()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1)[torch.arange(96) != 5], torch.ones(95))
    for m, (z, xh) in before.items():
        torch.testing.assert_close(sae.decode(sae.encode(x, mode=m)), xh, atol=1e-5, rtol=1e-5)
        if isinstance(sae, TopKSAE): torch.testing.assert_close(sae.encode(x, mode=m), z, atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('arch', list(KW))
def test_fold_input_scale(arch):
    sae = perturbed(arch); sae.eval(); x, s = xs(), 3.7
    trained = {m: sae.decode(sae.encode(s * x, mode=m)) for m in modes(sae)}
    sae.fold_input_scale_(s)
    for m, xh in trained.items(): torch.testing.assert_close(sae.decode(sae.encode(x, mode=m)), xh / s, atol=1e-5, rtol=1e-5)

@pytest.mark.parametrize('arch', list(KW))
def test_save_load_round_trip(arch, tmp_path):
    sae = perturbed(arch); sae.eval(); x = xs()
    loaded = load_sae(sae.save(tmp_path/arch))
    mode = 'threshold' if isinstance(sae, BatchTopKSAE) else None
    torch.testing.assert_close(loaded.encode(x), sae.encode(x, mode=mode), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), sae.decode(sae.encode(x, mode=mode)), atol=1e-6, rtol=1e-5)
    cfg = json.loads((tmp_path/arch/'cfg.json').read_text())
    keys = set(load_file(tmp_path/arch/'sae_weights.safetensors'))
    assert cfg['architecture'] == {'batchtopk': 'jumprelu', 'matryoshka_batchtopk': 'jumprelu'}.get(arch, arch)
    assert cfg['metadata']['training_architecture'] == arch and cfg['normalize_activations'] == 'none'
    assert keys == ({'W_dec', 'b_dec'} if arch == 'matching_pursuit' else
                    {'W_enc', 'b_enc', 'W_dec', 'b_dec'} | ({'threshold'} if cfg['architecture'] == 'jumprelu' else set()))
    assert not any(p.name.endswith('.tmp') for p in tmp_path.iterdir())

def test_save_does_not_modify_the_sae(tmp_path):
    sae = perturbed('topk'); before = {k: v.clone() for k, v in sae.state_dict().items()}
    sae.save(tmp_path/'t')
    for k, v in sae.state_dict().items(): assert torch.equal(v, before[k])

@pytest.mark.parametrize('name', ['standard', 'topk', 'batchtopk', 'jumprelu', 'matryoshka_batchtopk', 'matching_pursuit'])
def test_reference_directories_load(name):
    io = load_file(REF/name/'io.safetensors')
    for folder, mode in [(name, None), (f'{name}_train', 'threshold' if 'batchtopk' in name else None)]:
        sae = load_sae(REF/folder)
        torch.testing.assert_close(sae.encode(io['x'], mode=mode), io['z'], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(io['z']), io['x_hat'], atol=1e-5, rtol=1e-5)

@pytest.mark.skipif(not REF_PY or not Path(REF_PY).exists(), reason='set SYNTHSAE_REFERENCE_PYTHON to a Python with sae_lens')
def test_reference_reads_our_directories(tmp_path):
    for arch in KW:
        sae = perturbed(arch); sae.eval(); x = xs(8)
        sae.save(tmp_path/arch)
        mode = 'threshold' if isinstance(sae, BatchTopKSAE) else None
        torch.save(dict(x=x, z=sae.encode(x, mode=mode).detach(), x_hat=sae.decode(sae.encode(x, mode=mode)).detach()), tmp_path/f'{arch}.pt')
    script = textwrap.dedent(f"""
        import torch, warnings; warnings.simplefilter('ignore')
        from sae_lens import SAE
        for arch in {list(KW)!r}:
            io = torch.load('{tmp_path}/' + arch + '.pt'); sae = SAE.load_from_disk('{tmp_path}/' + arch)
            with torch.no_grad():
                torch.testing.assert_close(sae.encode(io['x']), io['z'], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(sae.decode(io['z']), io['x_hat'], atol=1e-5, rtol=1e-5)
        print('ok')""")
    r = subprocess.run([REF_PY, '-c', script], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().endswith('ok'), r.stderr[-2000:]

def test_auxk_hand_computation():
    pre = torch.tensor([[3., -0.5, 0.2, 1.5, -2.], [0.1, 0.4, -0.3, 0.0, 2.]])
    W = torch.randn(5, 6, generator=make_generator(0)); res = torch.randn(2, 6, generator=make_generator(1))
    dead = torch.tensor([False, True, True, True, True])                 # D = 6: k_aux = 3, scale = min(4/3, 1)
    a = torch.tensor([[0., -0.5, 0.2, 1.5, 0.], [0., 0.4, 0., 0., 2.]])  # top 3 dead per row, not ReLU'd
    torch.testing.assert_close(topk_aux_loss(pre, dead, res, W), ((a @ W - res)**2).sum(-1).mean())
    assert topk_aux_loss(pre, torch.zeros(5, dtype=torch.bool), res, W).item() == 0.

def test_topk_aux_no_b_dec_and_zero_without_dead():
    sae = perturbed('topk'); x = xs()
    assert sae(x, dead_mask=torch.zeros(96, dtype=torch.bool)).losses['auxiliary_reconstruction_loss'].item() == 0.
    assert sae(x).losses['auxiliary_reconstruction_loss'].item() == 0.
    dead = torch.arange(96) >= 90; o = sae(x, dead_mask=dead)
    pre = sae.rescaled_pre(x); top = torch.where(dead, pre, -torch.inf).topk(6, dim=-1)
    a = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    expected = 6 / 12 * ((a @ unit_rows(sae.W_dec) - (x - o.x_hat))**2).sum(-1).mean()   # D = 24: k_aux = 12
    torch.testing.assert_close(o.losses['auxiliary_reconstruction_loss'], expected)

def test_matryoshka_loss_is_batchtopk_plus_inner_mses():
    x = xs()
    mat = make_sae('matryoshka_batchtopk', 24, 96, k=6, matryoshka_widths=[8, 32], seed=3)
    btk = make_sae('batchtopk', 24, 96, k=6, seed=3)
    dead = torch.arange(96) % 7 == 0
    om, ob = mat(x, dead_mask=dead), btk(x, dead_mask=dead)
    Wu = unit_rows(mat.W_dec)
    inner = sum(((om.z[:, :w] @ Wu[:w] + mat.b_dec - x)**2).sum(-1).mean() for w in (8, 32))
    torch.testing.assert_close(om.loss, ob.loss + inner)
    assert set(om.losses) == {'mse_loss', 'auxiliary_reconstruction_loss', 'inner_mse_loss_8', 'inner_mse_loss_32'}

def test_matryoshka_aux_hand_computation():
    x = xs(); sae = perturbed('matryoshka_batchtopk', use_matryoshka_aux_loss=True)
    dead = torch.zeros(96, dtype=torch.bool); dead[[0, 3]] = True; dead[40:60] = True   # segments [0,8), [8,32), [32,96)
    o = sae(x, dead_mask=dead)
    pre, Wu = sae.rescaled_pre(x), unit_rows(sae.W_dec)
    x8 = o.z[:, :8] @ Wu[:8] + sae.b_dec
    t1 = 2 / 12 * ((pre[:, [0, 3]] @ Wu[[0, 3]] - (x - x8))**2).sum(-1).mean()
    top = pre[:, 40:60].topk(12, dim=-1); a = torch.zeros(64, 20).scatter(1, top.indices, top.values)
    t3 = 1. * ((a @ Wu[40:60] - (x - o.x_hat))**2).sum(-1).mean()
    torch.testing.assert_close(o.losses['auxiliary_reconstruction_loss'], t1 + t3)

def test_matryoshka_width_validation():
    widths = [8, 32]
    with pytest.warns(UserWarning, match='appending 96'): cfg = MatryoshkaBatchTopKSAEConfig(d_in=24, d_sae=96, k=4, matryoshka_widths=widths)
    assert widths == [8, 32] and cfg.matryoshka_widths == (8, 32, 96)
    with pytest.warns(UserWarning, match='single level'): MatryoshkaBatchTopKSAEConfig(d_in=24, d_sae=96, k=4, matryoshka_widths=[96])
    for bad, msg in [([], 'non-empty'), ([8, 8], 'strictly increasing'), ([0, 96], '1..d_sae'), ([8, 200], '1..d_sae')]:
        with pytest.raises(ValueError, match=msg): MatryoshkaBatchTopKSAEConfig(d_in=24, d_sae=96, k=4, matryoshka_widths=bad)

def test_jumprelu_threshold_gradients():
    h = torch.randn(500, 96, generator=make_generator(0)); bw = 0.3
    theta = torch.rand(96, generator=make_generator(1)) * 0.5 + 0.2
    g = torch.randn(500, 96, generator=make_generator(2))
    th, hh = theta.clone().requires_grad_(), h.clone().requires_grad_()
    (JumpReLUFn.apply(hh, th, bw) * g).sum().backward()
    K = ((h - theta) / bw).abs() < 0.5
    torch.testing.assert_close(th.grad, (-(theta / bw) * K * g).sum(0))
    torch.testing.assert_close(hh.grad, g * (h > theta))
    th2 = theta.clone().requires_grad_()
    (StepFn.apply(h, th2, bw) * g).sum().backward()
    torch.testing.assert_close(th2.grad, (-(1 / bw) * K * g).sum(0))
    log_sae = make_sae('jumprelu', 24, 96, jumprelu_threshold_param='log', jumprelu_init_threshold=0.3)
    raw_sae = make_sae('jumprelu', 24, 96, jumprelu_init_threshold=0.3)
    x = xs()
    log_sae(x).loss.backward(); raw_sae(x).loss.backward()
    torch.testing.assert_close(log_sae.log_threshold.grad, raw_sae.threshold.grad * 0.3)   # chain rule through exp

def test_jumprelu_threshold_stays_fp32():
    sae = make_sae('jumprelu', 24, 96, dtype='bfloat16')
    assert sae.W_enc.dtype == torch.bfloat16 and sae.threshold.dtype == torch.float32
    assert sae.to(torch.float16).threshold.dtype == torch.float32

def test_mp_orthogonal_dictionary_and_memory_path():
    sae = make_sae('matching_pursuit', 24, 24, max_iterations=3, residual_threshold=0., stop_on_duplicate_support=False)
    Q = torch.linalg.qr(torch.randn(24, 24, generator=make_generator(0)))[0]
    with torch.no_grad(): sae.W_dec.copy_(Q)
    g = make_generator(1)
    coef = torch.zeros(50, 24)
    for i in range(50): coef[i, torch.randperm(24, generator=g)[:3]] = torch.tensor([4., 2., 1.])
    torch.testing.assert_close(sae.encode(coef @ Q), coef, atol=1e-5, rtol=0)

def test_config_errors():
    with pytest.raises(ValueError, match="arch must be one of \\['standard', 'topk', 'batchtopk', 'jumprelu', 'matryoshka_batchtopk', 'matching_pursuit'\\]"): make_sae('gated', 4, 8)
    with pytest.raises(ValueError, match='k must satisfy 1 <= k <= 8, got 9'): make_sae('topk', 4, 8, k=9)
    with pytest.raises(ValueError, match='k must satisfy 0 < k <= 8'): make_sae('batchtopk', 4, 8, k=8.5)
    with pytest.raises(ValueError, match='k must be an int'): make_sae('topk', 4, 8, k=2.5)
    with pytest.raises(ValueError, match='jumprelu_threshold_param must be one of'): make_sae('jumprelu', 4, 8, jumprelu_threshold_param='exp')
    with pytest.warns(UserWarning, match='forced to 1.0'): sae = make_sae('matching_pursuit', 4, 8, decoder_init_norm=0.1)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(8))

def test_init_seeded_and_default_norm():
    a, b = make_sae('standard', 24, 96, seed=5), make_sae('standard', 24, 96, seed=5)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, a.W_dec.T) and a.b_dec.abs().sum() == 0
    torch.testing.assert_close(a.W_dec.norm(dim=-1), torch.full((96,), 0.1))

def test_autotuner_matches_spec_steps():
    t = L0Autotuner(10., start_step=0)
    m = t.update(20., 0)                           # ℓ̄ = 20, ṙ = 0, e = 10, gain 1
    assert math.isclose(m, 1 + 3e-4 * math.tanh(10 * 10 / 10), rel_tol=1e-12)
    m2 = t.update(5., 1)                           # ℓ̄ = 19.85, ṙ = 0.05·(−0.15): moving towards the target
    l0_ema, rate = 0.99 * 20 + 0.01 * 5, 0.05 * (0.99 * 20 + 0.01 * 5 - 20)
    assert math.isclose(t.l0_ema, l0_ema) and math.isclose(t.rate_ema, rate)
    assert math.isclose(m2, m * (1 + 3e-4 * 0.01 * math.tanh(10 * (l0_ema - 10) / 10)), rel_tol=1e-12)
    low = L0Autotuner(10., min_multiplier=0.5)
    for s in range(20000): low.update(0., s)
    assert low.multiplier == 0.5

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu_init_and_forward():
    for arch in KW:
        cpu, gpu = make_sae(arch, 24, 96, **KW[arch]), make_sae(arch, 24, 96, device='cuda', **KW[arch])
        for (n, p), q in zip(cpu.named_parameters(), gpu.parameters()): torch.testing.assert_close(p, q.cpu())
        x = xs(); cpu.eval(); gpu.eval()
        torch.testing.assert_close(gpu(x.cuda()).x_hat.cpu(), cpu(x).x_hat, atol=1e-4, rtol=1e-4)

def test_batchtopk_prefilter_selects_the_exact_batch_top_k():
    "The CPU pre-filter (a cut estimated on a strided subsample) keeps exactly the plain top ⌊k·B⌋"
    from synthsae.saes import make_sae
    sae = make_sae('batchtopk', 16, 512, k=4)
    g = torch.Generator().manual_seed(0)
    for shift in (0., 1., 3.):  # 3: mostly zeros after the ReLU
        pre = torch.randn(64, 512, generator=g) - shift
        acts = torch.relu(pre).flatten()
        K = 4 * 64
        fast = sae._prefiltered_topk(acts, K, stride=4)
        plain = acts.topk(K).indices.sort().values
        flat, vals, _ = sae.select_batch(pre)
        assert torch.equal(flat, plain) and torch.equal(vals, acts[plain]), shift
        if fast is not None: assert torch.equal(fast.sort().values, plain), shift
