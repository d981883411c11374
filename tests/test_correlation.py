"Low-rank and dense Gaussian copula (SPEC §1.7, §1.14)"
import json, math, warnings
import pytest, torch
from scipy.stats import norm, multivariate_normal
from synthsae.core import make_generator
from synthsae.correlation import *
from synthsae.testing import assert_sums_close, sum_tol

def _gen(n, r, s, seed):
    "Generate with warnings turned into errors (for settings that must not cap)"
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        return generate_random_low_rank_correlation_matrix(n, r, s, seed=seed)

# --- factor construction --------------------------------------------------------------------------------

@pytest.mark.parametrize('n,r,s', [(100, 4, 0.3), (1000, 25, 0.1), (300, 25, 0.3)])
def test_implied_diagonal_is_one_and_delta_positive(n, r, s):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        F, delta = generate_random_low_rank_correlation_matrix(n, r, s, seed=0)
    assert F.shape == (n, r) and delta.shape == (n,) and F.dtype == torch.float32
    # δ = 1 − q from the same q = Σ F² (the same sum here): q + δ is 1 within two roundings
    torch.testing.assert_close(F.pow(2).sum(1) + delta, torch.ones(n), **sum_tol(2))
    # a capped row: F·√(0.99/q) squared and summed again, r + 3 roundings of 0.99
    assert bool((delta > 0).all()) and delta.min().item() >= 0.01 - sum_tol(r + 4, 0.99)['atol']

def test_zero_scale_is_identity():
    F, delta = _gen(50, 8, 0., 0)
    assert torch.equal(F, torch.zeros(50, 8)) and torch.equal(delta, torch.ones(50))

def test_capping_warns_once_with_count():
    raw = torch.randn(400, 25, generator=make_generator(1)) * 0.25
    expected = int((raw.pow(2).sum(1) > 0.99).sum())
    assert 0 < expected < 400
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        F, delta = generate_random_low_rank_correlation_matrix(400, 25, 0.25, seed=1)
    assert len(caught) == 1 and f"{expected} of 400 rows" in str(caught[0].message)
    assert 'rank' in str(caught[0].message) and 'correlation_scale' in str(caught[0].message)
    capped = raw.pow(2).sum(1) > 0.99
    torch.testing.assert_close(F[capped].pow(2).sum(1), torch.full((expected,), 0.99), **sum_tol(25 + 4, 0.99))
    assert torch.equal(F[~capped], raw[~capped])  # uncapped rows untouched

def test_no_warning_without_capping():
    _gen(2000, 25, 0.1, 3)

def test_benchmark_parameters():
    F, delta = _gen(16_384, 25, 0.1, 46)  # no warning: 0 capped rows
    q = F.pow(2).sum(1)
    # E q = r s^2 = 0.25; sd of the mean s^2 sqrt(2r)/sqrt(N) = 0.00055; 0.003 > 5 sigma
    assert abs(q.mean().item() - 0.25) < 0.003 and abs(delta.mean().item() - 0.75) < 0.003
    st = low_rank_correlation_stats(F, delta)
    # over 8 seeds: sd of st.std 1.1e-4 (0.001 > 9σ), sd of st.mean 2.9e-6; rms − std = mean²/(rms + std) < 1e-5
    assert abs(st.std - 0.05) < 0.001 and abs(st.mean) < 1e-3 and st.rms == pytest.approx(st.std, abs=1e-4)

def test_seeded_and_config():
    a, b = _gen(200, 5, 0.2, 7), _gen(200, 5, 0.2, 7)
    assert torch.equal(a.correlation_factor, b.correlation_factor)
    assert not torch.equal(a.correlation_factor, _gen(200, 5, 0.2, 8).correlation_factor)
    assert not torch.equal(generate_random_low_rank_correlation_matrix(20, 2, 0.1).correlation_factor,
                           generate_random_low_rank_correlation_matrix(20, 2, 0.1).correlation_factor)
    cfg = LowRankCorrelationConfig(rank=5, correlation_scale=0.2)
    assert torch.equal(cfg.generate(200, seed=7).correlation_factor, a.correlation_factor)
    assert torch.equal(LowRankCorrelationConfig(5, 0.2, seed=7).generate(200, seed=99).correlation_factor, a.correlation_factor)

def test_config_json_and_validation():
    cfg = LowRankCorrelationConfig(25, 0.1, seed=4)
    assert cfg.to_dict() == {'rank': 25, 'correlation_scale': 0.1, 'seed': 4}
    assert LowRankCorrelationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert LowRankCorrelationConfig.from_dict({'rank': 3, 'label': 'x'}) == LowRankCorrelationConfig(3)
    assert LowRankCorrelationConfig() == LowRankCorrelationConfig(32, 0.1, None)
    with pytest.raises(ValueError, match='rank must be > 0'): LowRankCorrelationConfig(rank=0)
    with pytest.raises(ValueError, match='correlation_scale must satisfy 0 <= correlation_scale, got -0.5'): LowRankCorrelationConfig(correlation_scale=-0.5)
    with pytest.raises(ValueError, match='rank must be > 0'): generate_random_low_rank_correlation_matrix(5, rank=-1)

def test_validate_low_rank_correlation():
    validate_low_rank_correlation(torch.zeros(4, 2), torch.ones(4), 4)
    with pytest.raises(ValueError, match=r'shape \(num_features=4, rank\), got \(4,\)'): validate_low_rank_correlation(torch.zeros(4), torch.ones(4), 4)
    with pytest.raises(ValueError, match=r'got \(3, 2\)'): validate_low_rank_correlation(torch.zeros(3, 2), torch.ones(4), 4)
    with pytest.raises(ValueError, match=r'correlation_diag must have shape \(4,\), got \(4, 1\)'): validate_low_rank_correlation(torch.zeros(4, 2), torch.ones(4, 1), 4)
    with pytest.raises(ValueError, match='must be > 0'): validate_low_rank_correlation(torch.zeros(4, 2), torch.tensor([1., 1., 0., 1.]), 4)

# --- statistics -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('offset', [0., 0.15])
def test_stats_match_dense(offset):
    g = make_generator(5)
    F = torch.randn(150, 4, generator=g, dtype=torch.float64) * 0.15 + offset  # offset gives a non-zero mean
    delta = 1 - F.pow(2).sum(1)
    C = F @ F.T + torch.diag(delta)
    off = C[~torch.eye(150, dtype=torch.bool)]
    st = low_rank_correlation_stats(F, delta)
    # float64 through the r×r Gram matrix against the 150² entries: ≤ 150²·eps64 ≈ 5e-12 relative (std: 1e-8 as
    # var = E C² − mean² cancels by up to 100× at this offset)
    assert st.rms == pytest.approx(off.pow(2).mean().sqrt().item(), rel=1e-10)
    assert st.mean == pytest.approx(off.mean().item(), rel=1e-10, abs=1e-14)
    assert st.std == pytest.approx(off.std(unbiased=False).item(), rel=1e-8)

# --- thresholds and sampling ----------------------------------------------------------------------------

def test_thresholds_match_normal_quantile():
    p = torch.tensor([1e-6, 5e-4, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
    tau = firing_thresholds(p)
    assert tau.dtype == torch.float32
    # both in float64 (within 2e-16 of each other) rounded to float32: at most one ulp apart
    ref = torch.tensor(norm.isf(p.double().numpy()), dtype=torch.float32)
    assert_sums_close(tau, ref, 1, ref.abs())
    edges = firing_thresholds(torch.tensor([0., 1.]))
    assert edges[0].item() == math.inf and edges[1].item() == -math.inf

def test_copula_firing_edges():
    z = torch.randn(100, 3, generator=make_generator(0))
    f = copula_firing(z, firing_thresholds(torch.tensor([0., 1., 0.5])))
    assert f.dtype == torch.bool and not f[:, 0].any() and f[:, 1].all()

def test_marginals_preserved_at_b5000():
    # p <= 0.05: sd of a rate at B = 5000 is <= 0.0031, so 0.02 is > 6 sigma per feature
    F, delta = _gen(64, 8, 0.2, 1)
    p = torch.linspace(0.05, 0.005, 64)
    fires = copula_firing(sample_low_rank_gaussians(5000, F, delta, make_generator(2)), firing_thresholds(p))
    assert bool(((fires.float().mean(0) - p).abs() < 0.02).all())

def test_marginals_preserved_large_rates():
    # p up to 0.4 at B = 20,000: sd <= 0.0035, tolerance 0.02 > 5.7 sigma
    F, delta = _gen(32, 4, 0.3, 2)
    p = torch.linspace(0.4, 0.05, 32)
    fires = copula_firing(sample_low_rank_gaussians(20_000, F, delta, make_generator(4)), firing_thresholds(p))
    assert bool(((fires.float().mean(0) - p).abs() < 0.02).all())

def test_low_rank_sample_correlation():
    # sample correlation sd ~ (1 - rho^2)/sqrt(B) <= 0.0045 at B = 50,000; 0.025 > 5 sigma
    F, delta = _gen(6, 2, 0.5, 1)
    z = sample_low_rank_gaussians(50_000, F, delta, make_generator(7))
    torch.testing.assert_close(torch.corrcoef(z.T), F @ F.T + torch.diag(delta), atol=0.025, rtol=0)
    torch.testing.assert_close(z.var(0), torch.ones(6), atol=0.03, rtol=0)

def test_sampling_is_seeded_by_generator():
    F, delta = _gen(10, 3, 0.2, 0)
    a = sample_low_rank_gaussians(7, F, delta, make_generator(1))
    assert torch.equal(a, sample_low_rank_gaussians(7, F, delta, make_generator(1)))
    assert a.shape == (7, 10)

def test_dense_and_low_rank_cofiring_agree():
    # co-firing rate <= 0.3: sd <= sqrt(0.21/40000) = 0.0023 per path; 0.02 > 6 sigma for the difference
    F, delta = _gen(8, 3, 0.45, 2)
    C = F @ F.T + torch.diag(delta)
    tau = firing_thresholds(torch.full((8,), 0.3))
    def co(f): return (f.float().T @ f.float()) / f.shape[0]
    low = co(copula_firing(sample_low_rank_gaussians(40_000, F, delta, make_generator(5)), tau))
    dense = co(copula_firing(sample_dense_gaussians(40_000, dense_correlation_factor(C), make_generator(6)), tau))
    t = tau[0].item()
    exact = torch.tensor([[0.3 if i == j else multivariate_normal.cdf([-t, -t], cov=[[1, C[i, j].item()], [C[i, j].item(), 1]])
                           for j in range(8)] for i in range(8)], dtype=torch.float32)
    torch.testing.assert_close(low, dense, atol=0.02, rtol=0)
    torch.testing.assert_close(low, exact, atol=0.02, rtol=0)
    torch.testing.assert_close(dense, exact, atol=0.02, rtol=0)
    assert (C - torch.eye(8)).abs().max() > 0.3  # strong enough correlations for the test to mean something

# --- dense matrices -------------------------------------------------------------------------------------

@pytest.mark.parametrize('n,seed', [(2, 0), (10, 1), (40, 2)])
def test_random_dense_matrix_is_a_correlation_matrix(n, seed):
    C = generate_random_correlation_matrix(n, seed=seed)
    assert C.dtype == torch.float32 and C.shape == (n, n)
    assert torch.equal(C, C.T) and torch.equal(C.diagonal(), torch.ones(n))
    # the float64 matrix is kept when its smallest eigenvalue is ≥ −1e-6 (else repaired to ≥ 1e-6); rounding its
    # entries (|C_ij| ≤ 1) to float32 moves the eigenvalues by ≤ ‖ΔC‖_F ≤ n·eps/2
    assert torch.linalg.eigvalsh(C.double()).min().item() > -1e-6 - sum_tol(n)['atol']
    assert torch.equal(C, generate_random_correlation_matrix(n, seed=seed))

def test_random_dense_matrix_unrepaired_when_pd():
    # with N = 2 the matrix [[1, c], [c, 1]] is PD for |c| < 1, so the pair value is returned as drawn
    g = make_generator(3)
    u1, u2, u3 = torch.rand(3, 1, generator=g, dtype=torch.float64)
    c = (0.2 + 0.5 * u3.item()) * (1 if u2.item() < 0.6 else -1) if u1.item() >= 0.1 else 0.
    C = generate_random_correlation_matrix(2, 0.6, 0.1, 0.2, 0.7, seed=3)
    assert C[0, 1].item() == pytest.approx(c, abs=sum_tol(1, abs(c))['atol'])   # c rounded to float32

def test_random_dense_validation():
    with pytest.raises(ValueError, match='positive_ratio must satisfy 0 <= positive_ratio <= 1'): generate_random_correlation_matrix(4, positive_ratio=1.2)
    with pytest.raises(ValueError, match='uncorrelated_ratio must satisfy'): generate_random_correlation_matrix(4, uncorrelated_ratio=-0.1)
    with pytest.raises(ValueError, match='max_correlation_strength must satisfy max_correlation_strength <= 1'):
        generate_random_correlation_matrix(4, min_correlation_strength=0.1, max_correlation_strength=1.5)
    with pytest.raises(ValueError, match='min_correlation_strength must satisfy 0 <= min_correlation_strength <= 0.5'):
        generate_random_correlation_matrix(4, min_correlation_strength=0.6, max_correlation_strength=0.5)

def test_dense_factor_errors():
    with pytest.raises(ValueError, match=r'must be square, got shape \(2, 3\)'): dense_correlation_factor(torch.zeros(2, 3))
    with pytest.raises(ValueError, match='unit diagonal'): dense_correlation_factor(torch.diag(torch.tensor([1., 2.])))
    with pytest.raises(ValueError, match='symmetric'): dense_correlation_factor(torch.tensor([[1., 0.5], [0.2, 1.]]))
    with pytest.raises(ValueError, match='not positive definite'): dense_correlation_factor(torch.ones(3, 3))

def test_dense_factor_reconstructs_and_samples():
    C = generate_random_correlation_matrix(12, seed=4)
    L = dense_correlation_factor(C)
    assert torch.equal(L, L.tril())
    # the float64 factor rounded to float32 (rows of norm 1): L Lᵀ moves by ≤ eps·‖L_i‖‖L_j‖ = eps, plus float64 error
    torch.testing.assert_close(L.double() @ L.double().T, C.double(), **sum_tol(2))
    z = sample_dense_gaussians(50_000, L, make_generator(0))
    torch.testing.assert_close(torch.corrcoef(z.T), C, atol=0.03, rtol=0)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_sampling_and_thresholds():
    F, delta = _gen(16, 4, 0.2, 0)
    Fc, dc = F.cuda(), delta.cuda()
    z = sample_low_rank_gaussians(8, Fc, dc, torch.Generator(device='cuda').manual_seed(0))
    assert z.device.type == 'cuda'
    tau = firing_thresholds(torch.full((16,), 0.1, device='cuda'))
    assert copula_firing(z, tau).device.type == 'cuda'
    assert low_rank_correlation_stats(Fc, dc) == pytest.approx(low_rank_correlation_stats(F, delta))
