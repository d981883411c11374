"Evaluation metrics: exact MCC against scipy's dense solver, hand-computed metric cases, streaming equivalences"
import math
import numpy as np, pytest, torch
from scipy.optimize import linear_sum_assignment
from synthsae.core import cos_sim, stream_generator, stream_id, unit_rows
from synthsae.testing import linear_magnitude, sum_tol
from synthsae.fixtures import ToyModel, OracleSAE
from synthsae.evaluation import (ClassificationCounts, ClassificationMetrics, MetricAccumulator, ReconstructionStats,
    SparsityStats, as_scorable, best_match, classification_metrics, evaluate, evaluate_modes, feature_uniqueness,
    mean_correlation_coefficient, optimal_matching, _dual_certificate, _sparse_assignment, _top_candidates)


def dense_mcc(A, B):
    "scipy's dense Hungarian solve on the full |cos| matrix: the oracle"
    S = cos_sim(A, B).abs().double().numpy()
    r, c = linear_sum_assignment(S, maximize=True)
    return S[r, c].mean()


def cos_tol(d):
    """atol between two float orders of |cos| of the same normalised rows: a d-term dot product of unit vectors
    (Σ|terms| ≤ 1). The optimal matching's mean |cos| moves by no more than its largest entry"""
    return sum_tol(d + 1)['atol']


def unit_cos_tol(d):
    "atol of |cos| = 1 for float32 rows equal up to a scale: each normalised (d/2 + 2 roundings), a d-term dot product"
    return sum_tol(d + 4)['atol']


class NoisySAE(torch.nn.Module):
    "A fixed random ReLU SAE with a (D, L) nn.Linear decoder, for non-trivial metric values"
    def __init__(self, d=32, n_lat=40, seed=1):
        super().__init__(); torch.manual_seed(seed)
        self.enc, self.decoder = torch.nn.Linear(d, n_lat), torch.nn.Linear(n_lat, d)
    def encode(self, x): return torch.relu(self.enc(x))
    def decode(self, z): return self.decoder(z)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(60, 240, 16), (240, 60, 16), (80, 80, 12), (120, 200, 24), (3, 500, 5)])
def test_mcc_equals_scipy_dense(seed, shape):
    na, nb, d = shape
    g = torch.Generator().manual_seed(seed)
    A, B = torch.randn(na, d, generator=g), torch.randn(nb, d, generator=g)
    # the certified path computes |cos| blockwise, with A and B in either role: another order of the same products
    assert mean_correlation_coefficient(A, B) == pytest.approx(dense_mcc(A, B), abs=cos_tol(d))
    assert mean_correlation_coefficient(B, A) == pytest.approx(dense_mcc(A, B), abs=cos_tol(d))


def test_mcc_sparse_path_is_certified_and_pairs_match_dense():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(300, 48, generator=g), torch.randn(1200, 48, generator=g)
    mt = optimal_matching(A, B)
    assert mt.method == 'sparse'
    S = cos_sim(A, B).abs().double().numpy()
    r, c = linear_sum_assignment(S, maximize=True)
    assert torch.equal(mt.rows, torch.as_tensor(r)) and torch.equal(mt.cols, torch.as_tensor(c))  # unique optimum


def test_certificate_duals_are_feasible_on_full_matrix():
    "The returned duals satisfy u_i + v_c >= S_ic for every pair of the full matrix, with zero duality gap"
    g = torch.Generator().manual_seed(5)
    A, B = torch.randn(100, 20, generator=g), torch.randn(400, 20, generator=g)
    vals, idx = _top_candidates(A, B, 4, 64)
    cols = _sparse_assignment(vals, idx, 4, 400)
    u, v = _dual_certificate(vals, idx, 4, cols, 400)
    S = cos_sim(A, B).abs().double().numpy()
    assert (u[:, None] + v[None, :] >= S - 1e-6).all() and (v >= -1e-9).all()
    assert u.sum() + v.sum() == pytest.approx(S[np.arange(100), cols].sum(), abs=1e-6)


def test_certificate_rejects_a_suboptimal_matching():
    g = torch.Generator().manual_seed(6)
    A, B = torch.randn(50, 10, generator=g), torch.randn(200, 10, generator=g)
    vals, idx = _top_candidates(A, B, 4, 64)
    cols = _sparse_assignment(vals, idx, 4, 200)
    swapped = cols.copy(); swapped[[0, 1]] = swapped[[1, 0]]
    assert _dual_certificate(vals, idx, 4, swapped, 200) is None
    i = 7  # move row i to another of its candidate columns that nobody uses: a valid but worse matching
    c = next(c for c in idx[i, :4] if c not in set(cols.tolist()))
    worse = cols.copy(); worse[i] = c
    assert _dual_certificate(vals, idx, 4, worse, 200) is None


def test_mcc_forced_dense_fallback_agrees():
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(70, 8, generator=g), torch.randn(70, 8, generator=g)
    mt = optimal_matching(A, B, top_m=2, max_top_m=2)
    assert mt.scores.mean().item() == pytest.approx(dense_mcc(A, B), abs=1e-9)


def test_mcc_invariant_to_permutation_scale_and_sign():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 16, generator=g)
    D = W[torch.randperm(64, generator=g)] * torch.randn(64, 1, generator=g)  # random scale and sign per row
    # + one rounding for the scaling; L < N: the matched latents only
    assert mean_correlation_coefficient(D, W) == pytest.approx(1., abs=unit_cos_tol(16) + sum_tol(1)['atol'])
    assert mean_correlation_coefficient(W[:10], W) == pytest.approx(1., abs=unit_cos_tol(16))


def test_mcc_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"A is \(3, 4\), B is \(5, 6\)"): mean_correlation_coefficient(torch.ones(3, 4), torch.ones(5, 6))


@pytest.mark.parametrize("n_dup", [1, 5, 20])
def test_uniqueness_drops_by_duplicated_fraction(n_dup):
    W = torch.randn(40, 16, generator=torch.Generator().manual_seed(n_dup))
    D = torch.cat([W, -3 * W[:n_dup]])
    assert feature_uniqueness(D, W) == 40 / (40 + n_dup)


def test_classification_hand_counts():
    "Latent 1 (matched to feature 1) fires on samples 0, 1; feature 1 on samples 1, 2: TP=FP=FN=TN=1"
    W = torch.eye(2)
    W_dec = torch.tensor([[2., 0.], [0.1, -1.], [0., 0.]])  # latent 2 dead, maps to feature 0
    acts = torch.tensor([[1., 0.], [0., 2.], [0., 1.], [0., 0.]])
    z = torch.tensor([[3., 1., 0.], [0., 1., 0.], [0., 0., 0.], [0., 0., 0.]])
    pl = ClassificationCounts(best_match(W_dec, W)[0]).update(z, acts).per_latent()
    assert pl['tp'].tolist() == [1, 1, 0] and pl['fp'].tolist() == [0, 1, 0]
    assert pl['fn'].tolist() == [0, 1, 1] and pl['tn'].tolist() == [3, 1, 3]
    m = classification_metrics(z, acts, W_dec, W)
    assert m == pytest.approx(ClassificationMetrics((1 + .5) / 3, (1 + .5) / 3, (1 + .5) / 3, (1 + .5 + .75) / 3))


def test_perfect_classifier_and_sparse_labels():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(30, 16, generator=g)
    f = torch.rand(200, 30, generator=g) * (torch.rand(200, 30, generator=g) < 0.2)
    perm = torch.randperm(30, generator=g)
    assert classification_metrics(f[:, perm], f, W[perm], W) == ClassificationMetrics(1., 1., 1., 1.)
    assert classification_metrics(f[:, perm], f.to_sparse(), W[perm], W) == ClassificationMetrics(1., 1., 1., 1.)


def test_classification_width_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(3, 8\)"):
        classification_metrics(torch.zeros(4, 5), torch.zeros(4, 2), torch.zeros(3, 8), torch.zeros(2, 8))


def test_explained_variance_perfect_zero_and_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 12, generator=g) * 2 + 5
    ev = lambda xh: ReconstructionStats(12).update(x, xh).explained_variance
    assert ev(x) == 1.
    xd = x.double()
    var = (xd.square().sum(1).mean() - xd.mean(0).square().sum()).item()
    # the float64 mean rounded to float32 (within eps·|mean| per entry) predicts every sample: 1 − EV = ‖m₃₂ − m‖² / var
    m = xd.mean(0)
    assert ev(m.float().expand_as(x)) == pytest.approx(0., abs=(sum_tol(1)['atol'] * m).square().sum().item() / var)
    assert ev(torch.zeros_like(x)) == pytest.approx(1 - xd.square().sum(1).mean().item() / var, rel=1e-9)


def test_explained_variance_guard_and_shrinkage():
    x = torch.ones(10, 3)  # zero variance
    assert ReconstructionStats(3).update(x, x).explained_variance == 1.
    assert ReconstructionStats(3).update(x, 0 * x).explained_variance == 0.
    x0 = torch.cat([torch.zeros(5, 3), torch.full((5, 3), 2.)])
    assert ReconstructionStats(3).update(x0, 0.25 * x0).shrinkage == pytest.approx(0.25)  # zero rows left out


def test_accumulators_batched_equal_one_batch():
    g = torch.Generator().manual_seed(3)
    W, D = torch.randn(50, 20, generator=g), torch.randn(30, 20, generator=g)
    f = torch.rand(700, 50, generator=g) * (torch.rand(700, 50, generator=g) < 0.1)
    x = f @ W + 0.5
    z = torch.relu(x @ D.T - 1)
    xh = z @ D
    match = best_match(D, W)[0]
    one = MetricAccumulator(match, 20).update(x, xh, z, f)
    many = MetricAccumulator(match, 20)
    for s in torch.tensor_split(torch.arange(700), 9): many.update(x[s], xh[s], z[s], f[s].to_sparse())
    for k in ('tp', 'pos', 'lab'): assert torch.equal(getattr(one.classification, k), getattr(many.classification, k))
    assert many.sparsity.sae_l0 == one.sparsity.sae_l0 and many.sparsity.true_l0 == one.sparsity.true_l0
    assert many.sparsity.dead_latents == one.sparsity.dead_latents
    # float64 sums of 700·20 non-negative terms grouped otherwise: each within 14,000·eps64 of its value; EV divides
    # them by the variance, which amplifies by (mean ‖x‖²) / var (×2 for the two sums)
    xd = x.double()
    var = (xd.square().sum(1).mean() - xd.mean(0).square().sum()).item()
    amp = 2 * xd.square().sum(1).mean().item() / var
    ev_tol = amp * sum_tol(x.numel(), 1., torch.float64)['atol']
    assert many.recon.explained_variance == pytest.approx(one.recon.explained_variance, abs=ev_tol)
    # a mean of 700 positive ratios of two 20-term float64 norms
    shrink_tol = sum_tol(700 + 2 * 20 + 2, 1., torch.float64)['atol']
    assert many.recon.shrinkage == pytest.approx(one.recon.shrinkage, rel=shrink_tol)


def test_evaluate_oracle_is_perfect():
    m = ToyModel()
    r = evaluate(OracleSAE(m), m, num_samples=3000, batch_size=256)
    for k in ('uniqueness', 'precision', 'recall', 'f1', 'accuracy'): assert getattr(r, k) == 1., k
    assert r.mcc == pytest.approx(1., abs=unit_cos_tol(32))   # W_dec is W
    # x̂ = ((x − b) Wᵀ) W + b: D + N + 3 roundings on magnitudes M = ((|x| + |b|) |Wᵀ|) |W| + |b|; replay the stream
    W, b, T = m.feature_vectors, m.bias, m.hidden_dim + m.num_features + 3
    gen = lambda t: stream_generator(0, stream_id('eval'), t)
    batches = range(math.ceil(3000 / 256))
    xs = torch.cat([m.sample_with_features(min(256, 3000 - 256 * t), generator=gen(t))[0] for t in batches]).double()
    M = linear_magnitude(linear_magnitude(xs.abs() + b.abs(), W.T), W, b)
    dev = sum_tol(T)['atol'] * M.norm(dim=1)   # bound on ‖x̂ − x‖ per sample
    assert r.shrinkage == pytest.approx(1., abs=(dev / xs.norm(dim=1)).mean().item())   # mean of ‖x̂‖/‖x‖
    var = (xs.square().sum(1).mean() - xs.mean(0).square().sum()).item()
    assert r.explained_variance == pytest.approx(1., abs=dev.square().mean().item() / var)
    assert r.sae_l0 == r.true_l0 and r.dead_latents == 0
    assert r.true_l0 == pytest.approx(24 * 0.15, abs=5 * (24 * 0.15 * 0.85 / 3000) ** 0.5)  # 5σ


def test_evaluate_same_samples_and_sparse_equals_dense():
    m = ToyModel()
    sae = NoisySAE()
    a = evaluate(sae, m, num_samples=1500, batch_size=200, seed=4)
    b = evaluate(sae, m, num_samples=1500, batch_size=200, seed=4, sparse=False)
    c = evaluate(sae, m, num_samples=1500, batch_size=200, seed=5)
    assert a == b and a != c
    assert all(np.isfinite(v) for v in a.to_log_dict().values())


def test_evaluate_matches_manual_loop():
    "evaluate() equals the accumulators fed by hand with the documented stream"
    from synthsae.core import stream_generator, stream_id
    m, sae = ToyModel(), NoisySAE()
    r = evaluate(sae, m, num_samples=500, batch_size=128, seed=2)
    W_dec = as_scorable(sae, 32).W_dec
    acc = MetricAccumulator(best_match(W_dec, m.feature_vectors)[0], 32)
    with torch.no_grad():
        for t, bs in enumerate([128, 128, 128, 116]):
            x, f = m.sample_with_features(bs, generator=stream_generator(2, stream_id('eval'), t))
            z = sae.encode(x); acc.update(x, sae.decode(z), z, f)
    assert r.sae_l0 == acc.sparsity.sae_l0 and r.dead_latents == acc.sparsity.dead_latents
    assert r.f1 == acc.classification.compute().f1                      # the same counts, the same sums
    assert r.explained_variance == acc.recon.explained_variance
    assert r.mcc == pytest.approx(dense_mcc(W_dec, m.feature_vectors), abs=cos_tol(32))


class ModeSAE(OracleSAE):
    eval_modes = ('batch', 'threshold')
    def encode(self, x, mode='batch'):
        pre = super().encode(x)
        if mode == 'threshold': return pre * (pre > 0.9)
        keep = pre.flatten().topk(2 * len(x)).indices
        return torch.zeros_like(pre).flatten().index_fill_(0, keep, 1.).view_as(pre) * pre


def test_eval_modes_labelled_and_one_pass_equals_single():
    m = ToyModel()
    res = evaluate_modes(ModeSAE(m), m, num_samples=1024, batch_size=256)
    assert set(res) == {'batch', 'threshold'} and res['batch'].sae_l0 == 2.
    assert res['threshold'] == evaluate(ModeSAE(m), m, num_samples=1024, batch_size=256, eval_mode='threshold')
    assert evaluate(ModeSAE(m), m, num_samples=1024, batch_size=256).eval_mode == 'batch'
    assert res['batch'].to_dict()['synthsae']['eval_mode'] == 'batch'
    assert set(evaluate_modes(OracleSAE(m), m, num_samples=64)) == {'default'}
    with pytest.raises(ValueError, match="has no eval_modes"): evaluate(OracleSAE(m), m, num_samples=8, eval_mode='batch')


def test_shape_errors_name_both_shapes():
    m = ToyModel()
    class Narrow(OracleSAE):
        def encode(self, x): return super().encode(x)[:, :5]
    with pytest.raises(ValueError, match=r"latents of shape \(8, 5\), but W_dec has shape \(24, 32\)"):
        evaluate(Narrow(m), m, num_samples=8)
    with pytest.raises(ValueError, match=r"shape \(12, 16\) has no axis of size hidden_dim=32"):
        evaluate(OracleSAE(ToyModel(n_feat=12, d=16)), m, num_samples=8)


def test_as_scorable_transposes_and_passes_through():
    sae = NoisySAE()
    s = as_scorable(sae, hidden_dim=32)
    assert torch.equal(s.W_dec, sae.decoder.weight.detach().T) and s.W_dec.shape == (40, 32)
    x = torch.randn(5, 32)
    assert torch.equal(s.decode(s.encode(x)), sae.decode(sae.encode(x)))
    class Cfg: d_in = 32
    sae.cfg = Cfg()
    assert as_scorable(sae).W_dec.shape == (40, 32)


def test_dead_and_empty_inputs_are_defined():
    W = torch.randn(10, 6)
    A = torch.cat([W[:4], torch.zeros(2, 6)])
    assert mean_correlation_coefficient(A, W) == pytest.approx(4 / 6, abs=unit_cos_tol(6))
    assert mean_correlation_coefficient(torch.zeros(0, 6), W) == 0. and feature_uniqueness(torch.zeros(0, 6), W) == 0.
    assert SparsityStats(4).dead_latents == 4 and ReconstructionStats(2).shrinkage == 0.
    r = evaluate(OracleSAE(ToyModel(p=0.)), ToyModel(p=0.), num_samples=50)  # nothing ever fires
    assert (r.sae_l0, r.true_l0, r.dead_latents, r.precision, r.f1) == (0., 0., 24, 0., 0.) and r.accuracy == 1.


def test_integration_with_synthetic_model_and_saes():
    "The real SyntheticModel and SAE classes satisfy the protocol; a decoder equal to W scores MCC 1"
    model_mod, saes = pytest.importorskip('synthsae.model'), pytest.importorskip('synthsae.saes')
    m = model_mod.SyntheticModel(model_mod.SyntheticModelConfig(num_features=64, hidden_dim=16, seed=0))
    sae = saes.make_sae('batchtopk', 16, 64, k=4, seed=0)
    with torch.no_grad(): sae.W_dec.copy_(m.feature_vectors)
    res = evaluate_modes(sae, m, num_samples=2048, batch_size=256)
    assert set(res) == {'batch', 'threshold'} and res['batch'].sae_l0 == 4.
    assert res['batch'].mcc == pytest.approx(1., abs=unit_cos_tol(16)) and res['batch'].uniqueness == 1.
    other = evaluate(saes.make_sae('standard', 16, 32, seed=1), m, num_samples=2048, batch_size=256)
    assert res['batch'].true_l0 == res['threshold'].true_l0 == other.true_l0  # the same evaluation samples


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    "SAE and sums on CUDA, data from a CPU model: the same metrics as on the CPU"
    m = ToyModel()
    sae = NoisySAE()
    cpu = evaluate(sae, m, num_samples=2000, batch_size=256)
    gpu = evaluate(sae.to('cuda'), m, num_samples=2000, batch_size=256)
    for k in ('explained_variance', 'mcc', 'uniqueness', 'precision', 'recall', 'f1', 'sae_l0', 'shrinkage'):
        assert getattr(gpu, k) == pytest.approx(getattr(cpu, k), rel=1e-4, abs=1e-5), k
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(300, 32, generator=g), torch.randn(900, 32, generator=g)
    assert mean_correlation_coefficient(A.cuda(), B.cuda()) == pytest.approx(dense_mcc(A, B), abs=1e-6)

def test_classification_counts_sparse_pairs_equal_dense_masks():
    "The pair-based update (sparse feature activations) gives exactly the dense-mask counts"
    from synthsae.evaluation import ClassificationCounts
    g = torch.Generator().manual_seed(0)
    L, N, bs = 37, 53, 200
    match = torch.randint(0, N, (L,), generator=g)
    dense, pairs = ClassificationCounts(match), ClassificationCounts(match)
    for _ in range(3):
        z = torch.relu(torch.randn(bs, L, generator=g) - 1.)
        acts = torch.relu(torch.randn(bs, N, generator=g) - 1.2)
        dense.update(z, acts); pairs.update(z, acts.to_sparse())
    for f in ('tp', 'pos', 'lab', 'n'): assert torch.equal(torch.as_tensor(getattr(dense, f)), torch.as_tensor(getattr(pairs, f))), f
    empty = ClassificationCounts(match).update(torch.zeros(4, L), torch.zeros(4, N).to_sparse())
    assert int(empty.tp.sum()) == 0 and int(empty.lab.sum()) == 0 and empty.n == 4
