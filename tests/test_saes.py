"SAE architectures: sparse kernels against dense decoding, folding, file formats (ours and the reference's), losses"
import copy, json, math, os, subprocess, textwrap, warnings
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from safetensors.torch import load_file
from synthsae.core import make_generator, unit_rows
from synthsae.saes import *
from synthsae.training import L0Autotuner
from synthsae.testing import assert_linear_close, assert_sums_close, linear_magnitude, sum_tol

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

# Float tolerances (synthsae.testing): two float orders of one sum of n products differ by at most n·eps·M, M the
# sum of the products' absolute values. Counts used below, for d = d_in and L = d_sae:
# - a pre-activation x W_enc + b_enc − b_dec W_enc: two d-term sums and two additions; folding the decoder norms
#   (a d-term sum of squares, a square root, a product) or an input scale adds a few more: 2d + 6 on either side;
# - a decoding z W + b_dec: L products and the bias, plus d + 4 when the atoms are rows normalised again;
# - Matching Pursuit: each step is a d-term dot product and a projection, which never grows the residual, so every
#   coefficient moves by at most iterations·(d + 3)·eps·‖x − b_dec‖ (times √iterations for a re-selected latent).

def decoder_atoms(sae): return sae.dec_weight() if isinstance(sae, TopKSAE) else sae.W_dec

def encode_bound(sae, x):
    "(terms, magnitude) of the latents of `sae` on `x`: two float orders agree within terms·eps·magnitude"
    d = sae.cfg.d_in
    if sae.tied:
        its = sae.cfg.max_iterations or d
        return its * (d + 3) + 2, math.sqrt(its) * (x - sae.b_dec).double().norm(dim=-1, keepdim=True)
    M = linear_magnitude(x, sae.W_enc, sae.b_enc) + linear_magnitude(sae.b_dec, sae.W_enc)   # (bs, L)
    if getattr(sae.cfg, 'rescale_acts_by_decoder_norm', False): M = M * sae.W_dec_norm().double()
    return 2 * d + 6, M

def assert_latents_close(actual, expected, sae, x):
    "Latents of two float orders of `sae` on `x`: the same selection, values within the pre-activation bound"
    assert torch.equal(actual != 0, expected != 0)
    assert_sums_close(actual, expected, *encode_bound(sae, x))

def assert_recon_close(actual, expected, sae, x, z):
    "x̂ = decode(encode(x)) of two float orders: the latents' bound carried through the decoder, plus its own sum"
    t, M = encode_bound(sae, x)
    assert_sums_close(actual, expected, t + sae.cfg.d_sae + sae.cfg.d_in + 4,
                      linear_magnitude(M * (z != 0), decoder_atoms(sae), sae.b_dec))

def sq_err_tol(terms, M):
    "atol of mean_b Σ_k e², e (bs, d) of magnitude M carrying `terms` roundings: squaring doubles them, the sums add d + bs"
    return sum_tol(2 * terms + M.shape[-1] + M.shape[0], (M ** 2).sum(-1).mean())['atol']

def batch_mass(loss_b, params):
    "Per parameter, the largest Σ_b |∂ loss_b[b] / ∂θ| of its entries: the scale of the batch sums in ∇ loss_b.sum()"
    eye = torch.eye(len(loss_b), dtype=loss_b.dtype)
    gs = torch.autograd.grad(loss_b, params, grad_outputs=eye, is_grads_batched=True, retain_graph=True, allow_unused=True)
    return [None if g is None else g.abs().sum(0).max() for g in gs]

@pytest.mark.parametrize('arch', ['topk', 'batchtopk', 'matryoshka_batchtopk', 'matching_pursuit'])
def test_sparse_forward_matches_dense_decode(arch):
    sae = perturbed(arch); sae.eval(); x = xs()
    o = sae(x)
    z = sae.encode(x, mode=modes(sae)[0])
    assert torch.equal(o.z, z)                      # the same selection and values: only the decoding differs
    # two orders of z W + b_dec; Matching Pursuit adds a re-selected latent's coefficients first (≤ 5 more roundings)
    assert_linear_close(o.x_hat, sae.decode(z), z, decoder_atoms(sae), sae.b_dec, extra_terms=sae.cfg.d_in + 4 + 5)
    # gradients in float64 of the same squared error: batch sums of B per-sample gradients, each from a decoding of L
    # terms and its normalisation (d), so B + 2(L + d) roundings; magnitude: the tensor's largest Σ_b |per-sample
    # gradient| (an entry can cancel inside a sample, its terms stay of that scale). In float64 this is ~1e-13 of
    # the gradients, far below a wrong or missing term
    s64, x64 = copy.deepcopy(sae).double(), x.double()
    sq = lambda xh: ((xh - x64) ** 2).sum(-1) / len(x)
    params = list(s64.parameters())
    g_sparse = grads(sq(s64(x64).x_hat).sum(), s64)
    dense_b = sq(s64.decode(s64.encode(x64, mode=modes(s64)[0])))
    mass = batch_mass(dense_b, params)
    g_dense = grads(dense_b.sum(), s64)
    terms = len(x) + 2 * (sae.cfg.d_sae + sae.cfg.d_in)
    for a, b, M in zip(g_sparse, g_dense, mass):
        assert (a is None) == (b is None)
        if a is not None: assert_sums_close(a, b, terms, M)

def test_sparse_decode_flat_offsets_gradients():
    g = make_generator(3)
    W = torch.randn(50, 7, generator=g, requires_grad=True)
    sample = torch.sort(torch.randint(0, 9, (40,), generator=g)).values   # some samples empty
    lat = torch.randint(0, 50, (40,), generator=g); vals = torch.rand(40, generator=g, requires_grad=True)
    A = torch.zeros(9, 50).index_put((sample, lat), vals, accumulate=True)   # (9, 50): repeated pairs add up
    dense = A @ W
    sparse = sparse_decode(lat, vals, W, runs_to_offsets(sample, 9))
    assert_linear_close(sparse, dense, A, W, extra_terms=40)          # 40 products at most, in two orders
    up = torch.randn(9, 7, generator=g)
    gW_s, gv_s = torch.autograd.grad((sparse * up).sum(), (W, vals))
    gW_d, gv_d = torch.autograd.grad((dense * up).sum(), (W, vals))
    assert_linear_close(gW_s, gW_d, A.T, up, extra_terms=40)          # Aᵀ up: one term per occurrence of a latent
    assert_sums_close(gv_s, gv_d, 7, linear_magnitude(up, W.T)[sample, lat])   # up W[lat]ᵀ: a 7-term dot product

@pytest.mark.parametrize('arch', list(KW))
def test_fired_and_count_without_building_z(arch):
    "`SAEOut.fired` and `active_count` (the trainer's dead-latent and L0 bookkeeping) equal what the dense z gives"
    sae = perturbed(arch); x = xs()
    for training in (True, False):
        sae.train(training)
        o = sae(x)
        fired, count = o.fired(), o.active_count()
        assert torch.equal(fired, o.z.detach().any(0)) and int(count) == int(torch.count_nonzero(o.z))
        assert 0 < int(count) < o.z.numel()
    x_hat, z, loss, losses = o                          # unpacks and indexes as the 4-tuple it used to be
    assert z is o.z and o[0] is x_hat and o[2] is loss and losses is o.losses and len(o) == 4

def test_sparse_latents_with_repeated_indices():
    "Matching Pursuit's re-selections: values at a repeated index add up, and it counts once"
    z = SparseLatents(torch.tensor([0, 0, 5, 7, 7, 9]), torch.tensor([1., 2., 0., 0., 3., 4.]), (2, 5), distinct=False)
    assert torch.equal(z.dense(), torch.tensor([[3., 0., 0., 0., 0.], [0., 0., 3., 0., 4.]]))
    assert int(z.count()) == 3 and torch.equal(z.fired(), torch.tensor([True, False, True, False, True]))

def test_gather_pre_dense_branch_on_a_latent_range():
    "Many entries inside one range of latents (a Matryoshka segment's AuxK): the dense branch on that range only"
    g = make_generator(7)
    x, W, be, bd, s = (torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True)
                       for sh in ((6, 8), (8, 32), (32,), (8,), (32,)))
    W_cm = W.detach().t().contiguous().t().requires_grad_()   # column-major, as an SAE's W_enc
    h = lambda: ((x - bd) @ W_cm + be) * s
    with torch.no_grad(): r = h()
    sparse = PreActs(r, lambda rows, cols: GatherPre.apply(r, x, W_cm, be, bd, s, rows, cols)).narrow(8, 16)
    idx = torch.randint(0, 8, (6, 6), generator=g)             # 36 of the range's 48 entries: dense on 8 columns
    params = (x, W_cm, be, bd, s)
    got = torch.autograd.grad(sparse.gather(idx).sum(), params)
    want = torch.autograd.grad(PreActs.dense(h()).narrow(8, 16).gather(idx).sum(), params)
    for a, b in zip(got, want): torch.testing.assert_close(a, b)
    assert got[1].stride() == W_cm.stride()                   # no transposed copy when the gradient is accumulated

def test_pursuit_gram_updates_match_fresh_products():
    "Pursuit's correlations updated through W Wᵀ (large batches) select as the fresh products (one sample at a time)"
    sae, x = perturbed('matching_pursuit'), xs()
    r = x - sae.b_dec
    I, V, _ = sae._select(r.detach())                 # (T − 1)·bs = 256 > L = 96: the Gram path
    one = [sae._select(r[i:i + 1].detach()) for i in range(len(x))]   # 4 < 96: a product per step
    assert torch.equal(I, torch.cat([o[0] for o in one]))
    torch.testing.assert_close(V, torch.cat([o[1] for o in one]))
    I2, V2 = sae.pursue(x)                            # with autograd: the steps replayed on the gathered atoms
    assert torch.equal(I2, I) and torch.equal(V2.detach(), V) and V2.requires_grad

def test_row_norms_backward_matches_autograd():
    "`RowNorms` (a one-pass backward) gives autograd's gradient of ‖W_i‖.clamp_min(eps), zero rows included"
    W = torch.randn(40, 24, generator=make_generator(2), dtype=torch.float64)
    W[3] = 0.
    g = torch.randn(40, generator=make_generator(3), dtype=torch.float64)
    ours = torch.autograd.grad((RowNorms.apply(W.requires_grad_(), 1e-8) * g).sum(), W)[0]
    ref = torch.autograd.grad((W.norm(dim=-1).clamp_min(1e-8) * g).sum(), W)[0]
    assert torch.equal(ours[3], torch.zeros(24, dtype=torch.float64))
    torch.testing.assert_close(ours, ref, rtol=8 * torch.finfo(torch.float64).eps, atol=0)  # a few roundings apart

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
    assert torch.equal(sae.topk_threshold, 0.01 * kept_min)             # 0.99·0 + 0.01·v: the same float64 product
    sae.eval(); sae(x); assert torch.equal(sae.topk_threshold, 0.01 * kept_min)
    sae.topk_threshold.fill_(0.5)
    pre = sae.rescaled_pre(x)
    assert torch.equal(sae.encode(x, mode='threshold'), F.relu(pre) * (pre > 0.5))
    with pytest.raises(ValueError, match="mode must be one of"): sae.encode(x, mode='dense')
    assert sae.to(torch.float32).topk_threshold.dtype == torch.float64

@pytest.mark.parametrize('arch', list(KW))
def test_fold_W_dec_norm_keeps_outputs(arch):
    sae = perturbed(arch); sae.eval(); x = xs()
    if sae.tied:
        with pytest.raises(ValueError, match='Matching Pursuit'): sae.fold_W_dec_norm_()
        return
    with torch.no_grad(): sae.W_dec[5] = 0.
    unfolded = copy.deepcopy(sae)
    before = {m: (sae.encode(x, mode=m), sae.decode(sae.encode(x, mode=m))) for m in modes(sae)}
    sae.fold_W_dec_norm_()
    assert torch.isfinite(torch.cat([p.flatten() for p in sae.parameters()])).all()
    # a row divided by its norm has norm 1 within (d + 4)·eps: two d-term sums of squares, roots, the division
    torch.testing.assert_close(sae.W_dec.norm(dim=-1)[torch.arange(96) != 5], torch.ones(95), **sum_tol(24 + 4))
    for m, (z, xh) in before.items():
        assert_recon_close(sae.decode(sae.encode(x, mode=m)), xh, unfolded, x, z)
        if isinstance(sae, TopKSAE): assert_latents_close(sae.encode(x, mode=m), z, unfolded, x)

@pytest.mark.parametrize('arch', list(KW))
def test_fold_input_scale(arch):
    sae = perturbed(arch); sae.eval(); x, s = xs(), 3.7
    unfolded = copy.deepcopy(sae)
    trained = {m: (sae.encode(s * x, mode=m), sae.decode(sae.encode(s * x, mode=m))) for m in modes(sae)}
    sae.fold_input_scale_(s)
    for m, (z, xh) in trained.items():   # bounds on the trained SAE's s·x, divided by s (+2 roundings for the scale)
        assert_recon_close(s * sae.decode(sae.encode(x, mode=m)), xh, unfolded, s * x, z)

@pytest.mark.parametrize('arch', list(KW))
def test_save_load_round_trip(arch, tmp_path):
    sae = perturbed(arch); sae.eval(); x = xs()
    loaded = load_sae(sae.save(tmp_path/arch))
    saved, _ = sae.inference_state()
    assert set(saved) <= set(loaded.state_dict())
    for k, v in saved.items(): assert torch.equal(loaded.state_dict()[k].reshape(v.shape), v), k   # the file, bit for bit
    mode = 'threshold' if isinstance(sae, BatchTopKSAE) else None
    z = sae.encode(x, mode=mode)
    if isinstance(sae, TopKSAE):   # saved with the decoder norms folded in: another float order of the same SAE
        assert_latents_close(loaded.encode(x), z, sae, x)
        assert_recon_close(loaded.decode(loaded.encode(x)), sae.decode(z), sae, x, z)
    else:                          # the same parameters through the same code
        assert torch.equal(loaded.encode(x), z) and torch.equal(loaded.decode(loaded.encode(x)), sae.decode(z))
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
        sae = load_sae(REF/folder)   # io was computed by the reference library: another float order
        assert_latents_close(sae.encode(io['x'], mode=mode), io['z'], sae, io['x'])
        assert_linear_close(sae.decode(io['z']), io['x_hat'], io['z'], decoder_atoms(sae), sae.b_dec,
                            extra_terms=sae.cfg.d_in + 4)

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
    # a W − res in two orders (5 products and the subtraction), then squared and summed
    torch.testing.assert_close(topk_aux_loss(pre, dead, res, W), ((a @ W - res)**2).sum(-1).mean(),
                               atol=sq_err_tol(5 + 2, linear_magnitude(a, W) + res.abs()), rtol=0)
    assert topk_aux_loss(pre, torch.zeros(5, dtype=torch.bool), res, W).item() == 0.

def test_topk_aux_no_b_dec_and_zero_without_dead():
    sae = perturbed('topk'); x = xs()
    assert sae(x, dead_mask=torch.zeros(96, dtype=torch.bool)).losses['auxiliary_reconstruction_loss'].item() == 0.
    assert sae(x).losses['auxiliary_reconstruction_loss'].item() == 0.
    dead = torch.arange(96) >= 90; o = sae(x, dead_mask=dead)
    pre = sae.rescaled_pre(x); top = torch.where(dead, pre, -torch.inf).topk(6, dim=-1)
    a = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    expected = 6 / 12 * ((a @ unit_rows(sae.W_dec) - (x - o.x_hat))**2).sum(-1).mean()   # D = 24: k_aux = 12
    M = linear_magnitude(a, unit_rows(sae.W_dec)) + (x - o.x_hat).abs()                    # 12 products and the residual
    torch.testing.assert_close(o.losses['auxiliary_reconstruction_loss'], expected,
                               atol=6 / 12 * sq_err_tol(12 + 3, M), rtol=0)

def test_matryoshka_loss_is_batchtopk_plus_inner_mses():
    x = xs()
    mat = make_sae('matryoshka_batchtopk', 24, 96, k=6, matryoshka_widths=[8, 32], seed=3)
    btk = make_sae('batchtopk', 24, 96, k=6, seed=3)
    dead = torch.arange(96) % 7 == 0
    om, ob = mat(x, dead_mask=dead), btk(x, dead_mask=dead)
    Wu = unit_rows(mat.W_dec)
    inner = sum(((om.z[:, :w] @ Wu[:w] + mat.b_dec - x)**2).sum(-1).mean() for w in (8, 32))
    # four squared errors (full, aux, two prefixes), each of entries of at most L + 3 (levels) + 2 terms in two orders
    M = linear_magnitude(om.z, Wu, mat.b_dec) + x.abs()
    M_aux = linear_magnitude(mat.rescaled_pre(x).abs() * dead, Wu) + M
    atol = 3 * sq_err_tol(96 + 5, M) + sq_err_tol(96 + 5, M_aux)
    torch.testing.assert_close(om.loss, ob.loss + inner, atol=atol, rtol=0)
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
    # t1: 2 products against the prefix residual x − x8 (8 latents and b_dec, in two orders); t3: 12 products
    M1 = linear_magnitude(pre[:, [0, 3]], Wu[[0, 3]]) + x.abs() + linear_magnitude(o.z[:, :8], Wu[:8], sae.b_dec)
    M3 = linear_magnitude(a, Wu[40:60]) + (x - o.x_hat).abs()
    torch.testing.assert_close(o.losses['auxiliary_reconstruction_loss'], t1 + t3,
                               atol=2 / 12 * sq_err_tol(2 + 8 + 4, M1) + sq_err_tol(12 + 3, M3), rtol=0)

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
    n_in = int(K.sum(0).max()) + 3   # batch sums of the terms inside the window (the others are exact zeros), 3 products
    assert_sums_close(th.grad, (-(theta / bw) * K * g).sum(0), n_in, ((theta / bw) * K * g).abs().sum(0))
    assert torch.equal(hh.grad, g * (h > theta))
    th2 = theta.clone().requires_grad_()
    (StepFn.apply(h, th2, bw) * g).sum().backward()
    assert_sums_close(th2.grad, (-(1 / bw) * K * g).sum(0), n_in, ((1 / bw) * K * g).abs().sum(0))
    log_sae = make_sae('jumprelu', 24, 96, jumprelu_threshold_param='log', jumprelu_init_threshold=0.3)
    raw_sae = make_sae('jumprelu', 24, 96, jumprelu_init_threshold=0.3)
    theta_log = log_sae.get_threshold().detach()
    with torch.no_grad(): raw_sae.threshold.copy_(theta_log)   # exp(log 0.3) may be 0.3 ± 1 ulp: use the same θ
    x = xs()
    log_sae(x).loss.backward(); raw_sae(x).loss.backward()
    assert torch.equal(log_sae.log_threshold.grad, raw_sae.threshold.grad * theta_log)   # chain rule through exp

def test_jumprelu_threshold_stays_fp32():
    sae = make_sae('jumprelu', 24, 96, dtype='bfloat16')
    assert sae.W_enc.dtype == torch.bfloat16 and sae.threshold.dtype == torch.float32
    assert sae.to(torch.float16).threshold.dtype == torch.float32

def test_mp_orthogonal_dictionary_and_memory_path():
    sae = make_sae('matching_pursuit', 24, 24, max_iterations=3, residual_threshold=0., stop_on_duplicate_support=False)
    # a float64 QR rounded to float32: rows orthonormal within eps, so the exact coefficients come back within the
    # pursuit's bound (3 steps of a 24-term dot product and a projection) plus that eps, relative to ‖coef‖
    Q = torch.linalg.qr(torch.randn(24, 24, generator=make_generator(0), dtype=torch.float64))[0].float()
    with torch.no_grad(): sae.W_dec.copy_(Q)
    g = make_generator(1)
    coef = torch.zeros(50, 24)
    for i in range(50): coef[i, torch.randperm(24, generator=g)[:3]] = torch.tensor([4., 2., 1.])
    assert_sums_close(sae.encode(coef @ Q), coef, 3 * (24 + 3) + 2 + 3, coef.norm(dim=-1, keepdim=True))

def test_config_errors():
    with pytest.raises(ValueError, match="arch must be one of \\['standard', 'topk', 'batchtopk', 'jumprelu', 'matryoshka_batchtopk', 'matching_pursuit'\\]"): make_sae('gated', 4, 8)
    with pytest.raises(ValueError, match='k must satisfy 1 <= k <= 8, got 9'): make_sae('topk', 4, 8, k=9)
    with pytest.raises(ValueError, match='k must satisfy 0 < k <= 8'): make_sae('batchtopk', 4, 8, k=8.5)
    with pytest.raises(ValueError, match='k must be an int'): make_sae('topk', 4, 8, k=2.5)
    with pytest.raises(ValueError, match='jumprelu_threshold_param must be one of'): make_sae('jumprelu', 4, 8, jumprelu_threshold_param='exp')
    with pytest.warns(UserWarning, match='forced to 1.0'): sae = make_sae('matching_pursuit', 4, 8, decoder_init_norm=0.1)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(8), **sum_tol(4 + 4))   # unit rows: (d + 4)·eps

def test_init_seeded_and_default_norm():
    a, b = make_sae('standard', 24, 96, seed=5), make_sae('standard', 24, 96, seed=5)
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, a.W_dec.T) and a.b_dec.abs().sum() == 0
    torch.testing.assert_close(a.W_dec.norm(dim=-1), torch.full((96,), 0.1), **sum_tol(24 + 5, 0.1))   # unit rows × 0.1

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
        # the same positive entries; when fewer than K are positive, the kept rest (ranked before the ReLU) is 0
        assert len(flat) == K and torch.equal(flat[vals > 0], plain[acts[plain] > 0]), shift
        assert torch.equal(vals.sort().values, acts[plain].sort().values), shift
        if fast is not None: assert torch.equal(fast.sort().values, plain), shift
    for n_lat, k in ((512, 10), (4096, 25)):   # the cpu and paper widths at batch 1,024: default strides 61 and 127
        acts = torch.relu(torch.randn(1024 * n_lat, generator=g))
        fast = sae._prefiltered_topk(acts, 1024 * k)
        assert fast is not None and torch.equal(fast, acts.topk(1024 * k).indices.sort().values), n_lat


def test_sparse_grad_default_is_per_device():
    "None (the default): the sparse backward on the CPU only; True and False choose it everywhere"
    sae = make_sae('batchtopk', d_in=8, d_sae=32, k=2, seed=0)
    assert sae.sparse_grad is None and sae.uses_sparse_grad('cpu') and not sae.uses_sparse_grad('cuda')
    sae.sparse_grad = True
    assert sae.uses_sparse_grad('cuda')
    sae.sparse_grad = False
    assert not sae.uses_sparse_grad('cpu')
    x = torch.randn(4, 8)
    assert sae.pre_acts(x).r.requires_grad   # the dense path: the pre-activations carry autograd themselves
    sae.sparse_grad = None
    assert not sae.pre_acts(x).r.requires_grad   # the sparse path ranks on values without autograd


def _sparse_standard(p:float, quantile:float):
    "A Standard SAE (float64) whose biases leave ≈ 1 − `quantile` of a batch's entries active, and the batch"
    sae = make_sae('standard', 16, 256, seed=0, lp_norm=p).double()
    x = torch.randn(32, 16, generator=make_generator(1), dtype=torch.float64)
    with torch.no_grad(): sae.b_enc.sub_(sae.hidden_pre(x).quantile(quantile))
    return sae, x


@pytest.mark.parametrize('p,quantile', [(1., 0.96), (2., 0.96), (1., 0.5)])
def test_standard_sparse_step_matches_the_dense_step(p, quantile):
    """Through the active entries only (4% of the batch), or the dense step on values computed once (50% active): the
    dense oracle's latents and loss, its gradients up to summation order"""
    sae, x = _sparse_standard(p, quantile)
    res = {}
    for sparse in (True, False):
        sae.sparse_grad = sparse
        sae.zero_grad()
        out = sae(x, step=3, multiplier=1.5)
        out.loss.backward()
        res[sparse] = out, {n: q.grad.clone() for n, q in sae.named_parameters()}
    (o_s, g_s), (o_d, g_d) = res[True], res[False]
    assert isinstance(o_s._z, SparseLatents) == (quantile > 0.9) and not isinstance(o_d._z, SparseLatents)
    assert torch.equal(o_s.z, o_d.z)
    # the losses and gradients are sums of at most 256 terms (latents) or 32 (samples) of magnitude ≤ the loss's
    assert_sums_close(o_s.loss.detach(), o_d.loss.detach(), terms=256, magnitude=o_d.loss.detach().abs())
    for name, g in g_d.items():
        assert_sums_close(g_s[name], g, terms=256, magnitude=float(g.abs().max()))


def test_standard_sparse_step_falls_back_to_dense():
    "Above 1/16 of the entries active the dense step runs; without autograd it always does"
    sae, x = _sparse_standard(1., 0.5)
    assert not isinstance(sae(x)._z, SparseLatents)
    sae, x = _sparse_standard(1., 0.96)
    with torch.no_grad(): assert not isinstance(sae(x)._z, SparseLatents)
    assert isinstance(sae(x)._z, SparseLatents)
