"Feature geometry: the Gram-identity loss and gradient against the naive pairwise versions, superposition statistics against numpy"
import math
import numpy as np
import pytest
import torch
from torch.testing import assert_close
from synthsae.core import make_generator, unit_rows
from synthsae.testing import assert_linear_close, assert_sums_close, sum_tol
from synthsae.geometry import (FeatureDictionary, OrthogonalizationConfig, expected_rho_mm, orthogonal_initializer,
                               orthogonality_grad, orthogonality_loss, orthogonalize, random_feature_vectors,
                               superposition_stats)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def naive_loss(E):
    "Σ_{i≠j}(e_i·e_j)² + N Σ(‖e_i‖²−1)² through the full N×N product"
    P = E @ E.T
    off = P - torch.diag(P.diag())
    return off.pow(2).sum() + E.shape[0] * (P.diag() - 1).pow(2).sum()


def naive_stats(W, percentiles):
    "Row-by-row numpy version of SPEC §1.4"
    E = W.double().numpy()
    E = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-8)
    C = np.abs(E @ E.T)
    n = len(C)
    others = np.stack([np.delete(C[i], i) for i in range(n)])
    pct = np.percentile(others, percentiles, axis=1).T if percentiles else np.zeros((n, 0))
    return others.max(1), C[np.triu_indices(n, 1)].mean(), pct


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=make_generator(seed), dtype=dtype)


# Float tolerances (synthsae.testing: n·eps·M for two orders of a sum of n products of absolute sum M). A row
# normalised in float32 carries d/2 + 2 roundings, so a norm of it is 1 within (d + 4)·eps and a |cos| of two such
# rows, a d-term dot product of unit vectors (M ≤ 1), is exact within (d + 2)·eps.
def unit_tol(d): return sum_tol(d + 4)['atol']
def cos_tol(d): return sum_tol(d + 2)['atol']


# --- orthogonality loss and gradient --------------------------------------------------------------------------

@pytest.mark.parametrize('n,d,chunk', [(1, 3, 1024), (2, 5, 1), (37, 8, 5), (64, 128, 1024), (200, 16, 64)])
def test_loss_gram_identity_equals_pairwise(n, d, chunk):
    E = randn(n, d, seed=n) * 0.7   # rows away from unit norm, so both terms matter
    expected = naive_loss(E).item()
    # float64, both sums of products of four entries of E: through the d×d or the n×n Gram matrix (n + d terms,
    # squared), less or plus the diagonal terms, which cancel; M: the same sums on |E|
    Ea = E.abs(); sq = Ea.pow(2).sum(1)
    M = (Ea @ Ea.T).pow(2).sum() + sq.pow(2).sum() + n * (sq + 1).pow(2).sum()
    tol = sum_tol(2 * (n + d) + 8, M, torch.float64)['atol']
    assert orthogonality_loss(E, chunk_size=chunk) == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize('n,d', [(2, 3), (17, 4), (40, 64)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_closed_form_grad_equals_autograd(n, d, dtype):
    E = randn(n, d, seed=d, dtype=dtype) / math.sqrt(d)   # norms near 1, as during orthogonalisation
    leaf = E.clone().requires_grad_()
    naive_loss(leaf).backward()
    # 4(E EᵀE − ‖e_i‖² e_i + n(‖e_i‖² − 1) e_i) through the d×d Gram matrix or the n×n one: sums over n and d,
    # in another order; M: the same expression on |E| with the differences taken as sums
    Ea = E.abs(); sq = Ea.pow(2).sum(1, keepdim=True)
    M = 4 * (Ea @ (Ea.T @ Ea) + sq * Ea + n * (sq + 1) * Ea)
    assert_sums_close(orthogonality_grad(E), leaf.grad, 2 * (n + d) + 8, M)


def test_orthogonalize_equals_adam_on_naive_loss():
    # the reference's algorithm: Adam on the autograd loss, one step per pass, then unit rows. Adam divides by √v̂,
    # so a gradient's rounding moves an update by ≈ lr·δg/|g|: no n·eps bound exists for entries with g ≈ 0. 1e-5
    # (1e-3 of lr, 100× the rows' rounding) passes on native, AVX2 and non-vectorised kernels; a wrong step is ~lr
    W = randn(30, 12, seed=4, dtype=torch.float32)
    E = unit_rows(W).clone().requires_grad_()
    opt = torch.optim.Adam([E], lr=0.01)
    for _ in range(15):
        opt.zero_grad(); naive_loss(E).backward(); opt.step()
    assert_close(orthogonalize(W, OrthogonalizationConfig(num_steps=15, lr=0.01)), unit_rows(E.detach()),
                 rtol=1e-5, atol=1e-5)


def test_orthogonalize_reduces_loss_and_keeps_unit_rows():
    W = random_feature_vectors(64, 128, seed=1)[0]
    before = orthogonality_loss(W)
    W_orth = orthogonalize(W)
    assert_close(W_orth.norm(dim=1), torch.ones(64), atol=unit_tol(128), rtol=0)
    assert orthogonality_loss(W_orth) < 1e-3 * before
    assert superposition_stats(W_orth, percentiles=()).rho_mm < 0.02
    assert not W.equal(W_orth)  # input untouched, new tensor returned
    assert_close(W.norm(dim=1), torch.ones(64), atol=unit_tol(128), rtol=0)


def test_progress_bar_does_not_change_result():
    W = random_feature_vectors(50, 8, seed=6)[0]
    cfg = OrthogonalizationConfig(num_steps=12, chunk_size=7)
    assert orthogonalize(W, cfg, progress=True).equal(orthogonalize(W, cfg))


def test_orthogonalize_zero_steps_is_normalisation():
    W = randn(9, 4, seed=2) * 3
    # cast to float32 and normalised twice there (2·(d/2 + 2) + 1 roundings), against the float64 rows rounded once
    expected = unit_rows(W).float()
    assert_sums_close(orthogonalize(W, OrthogonalizationConfig(num_steps=0)), expected, 4 + 6, expected.abs())


def test_orthogonal_initializer_matches_config():
    W = random_feature_vectors(20, 8, seed=3)[0]
    assert orthogonal_initializer(7, 3e-3)(W).equal(orthogonalize(W, OrthogonalizationConfig(7, 3e-3)))


def test_orthogonalization_config_validation_and_round_trip():
    cfg = OrthogonalizationConfig(num_steps=100, lr=3e-4, chunk_size=512)
    assert OrthogonalizationConfig.from_dict({**cfg.to_dict(), 'unknown': 3}) == cfg
    assert cfg.to_dict() == {'num_steps': 100, 'lr': 3e-4, 'chunk_size': 512}
    with pytest.raises(ValueError, match='num_steps must satisfy 0 <= num_steps, got -1'): OrthogonalizationConfig(num_steps=-1)
    with pytest.raises(ValueError, match='lr must satisfy 0 < lr'): OrthogonalizationConfig(lr=-1e-3)
    with pytest.raises(ValueError, match='chunk_size must satisfy 1 <= chunk_size, got 0'): OrthogonalizationConfig(chunk_size=0)


# --- random directions and the dictionary ---------------------------------------------------------------------

def test_random_feature_vectors_draw_order():
    # W = randn(N, D) normalised, then bias = randn(D) from the same generator, normalised, times β
    g = make_generator(11)
    W_ref = torch.randn(50, 6, generator=g)
    b_ref = torch.randn(6, generator=g)
    W, b = random_feature_vectors(50, 6, bias=0.5, seed=11)
    assert torch.equal(W, W_ref / W_ref.norm(dim=1, keepdim=True))   # the same norm and division
    b_expected = 0.5 * b_ref / b_ref.norm()   # a norm of a vector, not of rows: may round otherwise
    assert_sums_close(b, b_expected, 6 + 4, b_expected.abs())
    assert W.dtype == b.dtype == torch.float32
    assert random_feature_vectors(50, 6, bias=True, seed=11)[1].norm().item() == pytest.approx(1, abs=unit_tol(6))
    assert random_feature_vectors(50, 6, bias=False, seed=11)[1].eq(0).all()
    with pytest.raises(ValueError, match='hidden_dim'): random_feature_vectors(3, 0)
    with pytest.raises(ValueError, match='bias'): random_feature_vectors(3, 2, bias=-0.1)


def test_mean_abs_cos_of_random_unit_vectors():
    # pairs are pairwise independent, so sd of the pair mean = sqrt((1-2/pi)/(D M)); tolerance 6 sd
    n, d = 2000, 768
    W = random_feature_vectors(n, d, seed=123)[0]
    m = n * (n - 1) / 2
    sd = math.sqrt((1 - 2 / math.pi) / (d * m))
    assert superposition_stats(W, percentiles=()).mean_abs_cos == pytest.approx(math.sqrt(2 / (math.pi * d)), abs=6 * sd)


def test_rho_mm_random_4096_768():
    # SPEC §1.4 [D]: 0.1366; the seed-to-seed sd is 1.3e-4 (8 seeds; sd of a row max / √N: 1.7e-4), so 0.002 is > 10σ
    st = superposition_stats(random_feature_vectors(4096, 768, seed=7)[0], percentiles=())
    assert st.rho_mm == pytest.approx(0.1366, abs=0.002)
    assert expected_rho_mm(4096, 768) == pytest.approx(0.1366, abs=1e-4)   # a quadrature against a 4-digit value


@pytest.mark.parametrize('layout', ['coo', 'csr'])
def test_feature_dictionary_forward_dense_and_sparse(layout):
    fd = FeatureDictionary(40, 12, bias=0.3, seed=5)
    acts = torch.rand(6, 40, generator=make_generator(0)) * (torch.rand(6, 40, generator=make_generator(1)) < 0.2)
    x = fd(acts)
    assert torch.equal(x, acts @ fd.feature_vectors + fd.bias)   # the dense path is this product
    sparse = acts.to_sparse() if layout == 'coo' else acts.to_sparse_csr()
    assert_linear_close(fd(sparse), x, acts, fd.feature_vectors, fd.bias)   # another order of the same sums
    assert set(fd.state_dict()) == {'feature_vectors', 'bias'}
    assert (fd.num_features, fd.hidden_dim) == (40, 12)


def test_feature_dictionary_initializers():
    W_rand = FeatureDictionary(16, 8, seed=2).feature_vectors
    assert torch.equal(W_rand, random_feature_vectors(16, 8, seed=2)[0])
    cfg = OrthogonalizationConfig(num_steps=5)
    W_cfg = FeatureDictionary(16, 8, initializer=cfg, seed=2).feature_vectors
    assert W_cfg.equal(orthogonalize(W_rand, cfg))
    assert W_cfg.equal(FeatureDictionary(16, 8, initializer=orthogonal_initializer(5), seed=2).feature_vectors)
    assert FeatureDictionary(16, 8, initializer=lambda W: -W, seed=2).feature_vectors.equal(-W_rand)


# --- superposition statistics ---------------------------------------------------------------------------------

@pytest.mark.parametrize('n,d,chunk', [(2, 3, 1), (3, 2, 1024), (50, 4, 7), (300, 32, 64), (513, 64, 128)])
@pytest.mark.parametrize('percentiles', [(95, 99), (0, 37.5, 50, 100), ()])
def test_stats_match_numpy(n, d, chunk, percentiles):
    W = randn(n, d, seed=n, dtype=torch.float32) * 2
    mx, mean, pct = naive_stats(W, list(percentiles))
    st = superposition_stats(W, chunk_size=chunk, percentiles=percentiles)
    # float32 |cos| against float64: cos_tol(d) per value (an order statistic moves no more than the values do;
    # the percentile interpolation adds 3 roundings); means over n values add n roundings of the mean
    tol = cos_tol(d) + sum_tol(3)['atol']
    assert_close(st.max_abs_cos, torch.from_numpy(mx).float(), rtol=0, atol=tol)
    assert st.rho_mm == pytest.approx(mx.mean(), abs=tol + sum_tol(n, mx.mean())['atol'])
    assert st.mean_abs_cos == pytest.approx(mean, abs=tol + sum_tol(n, mean)['atol'])
    assert st.row_percentiles.shape == (n, len(percentiles))
    assert_close(st.row_percentiles, torch.from_numpy(pct).float(), rtol=0, atol=tol)
    assert list(st.mean_percentiles) == list(percentiles)
    for c, q in enumerate(percentiles):
        assert st.mean_percentiles[q] == pytest.approx(pct[:, c].mean(), abs=tol + sum_tol(n, pct[:, c].mean())['atol'])


def test_stats_independent_of_chunk_size():
    W = random_feature_vectors(700, 48, seed=9)[0]
    ref = superposition_stats(W, chunk_size=700)
    # other chunks, other product shapes: |cos| of the same unit rows in another order (48 terms, M ≤ 1), and the
    # mean of 700·699 of them summed in other groups (700 + 48 roundings relative to the mean)
    for chunk in (1, 3, 100, 699, 4096):
        for pc in ((95, 99), ()):
            st = superposition_stats(W, chunk_size=chunk, percentiles=pc)
            assert_close(st.max_abs_cos, ref.max_abs_cos, **sum_tol(48))
            assert st.mean_abs_cos == pytest.approx(ref.mean_abs_cos, abs=sum_tol(700 + 48, ref.mean_abs_cos)['atol'])
            if pc: assert_close(st.row_percentiles, ref.row_percentiles, atol=sum_tol(48 + 3)['atol'], rtol=0)


def test_stats_orthogonal_parallel_antiparallel():
    assert superposition_stats(torch.eye(6) * 5).rho_mm == 0
    W = torch.tensor([[1., 1, 0, 0], [2, 2, 0, 0], [0, 0, 1, 0], [0, 0, -3, 0]])
    st = superposition_stats(W, percentiles=(50,))
    assert_close(st.max_abs_cos, torch.ones(4), atol=cos_tol(4), rtol=0)   # 1/√2 rounds: not exact
    assert st.rho_mm == pytest.approx(1, abs=cos_tol(4) + sum_tol(4)['atol'])
    assert st.mean_abs_cos == pytest.approx(2 / 6, abs=cos_tol(4) + sum_tol(12)['atol'])
    # duplicates of a row count; only the row itself is excluded (unit rows of 0 and 1: exact)
    st3 = superposition_stats(torch.tensor([[1., 0], [1., 0], [0, 1.]]), percentiles=())
    assert torch.equal(st3.max_abs_cos, torch.tensor([1., 1., 0.]))


def test_stats_zero_row_and_errors():
    st = superposition_stats(torch.tensor([[0., 0], [1, 0], [0, 1]]), percentiles=())
    assert torch.equal(st.max_abs_cos, torch.tensor([0., 0., 0.]))
    with pytest.raises(ValueError, match='num_features >= 2'): superposition_stats(torch.ones(1, 4))
    with pytest.raises(ValueError, match='percentile'): superposition_stats(torch.eye(3), percentiles=(-1,))


# --- devices --------------------------------------------------------------------------------------------------

@cuda
def test_cuda_matches_cpu():
    W = random_feature_vectors(512, 64, seed=0)[0]
    cfg = OrthogonalizationConfig(num_steps=20, lr=3e-4)
    W_gpu = orthogonalize(W.cuda(), cfg)
    assert W_gpu.device.type == 'cuda'
    assert_close(W_gpu.cpu(), orthogonalize(W, cfg), rtol=1e-4, atol=1e-4)
    st_gpu, st_cpu = superposition_stats(W_gpu), superposition_stats(W_gpu.cpu())
    assert st_gpu.rho_mm == pytest.approx(st_cpu.rho_mm, abs=1e-5)
    assert_close(st_gpu.row_percentiles.cpu(), st_cpu.row_percentiles, rtol=0, atol=1e-5)
    fd = FeatureDictionary(32, 8, bias=1., seed=0).cuda()
    acts = torch.rand(4, 32, device='cuda')
    assert_close(fd(acts.to_sparse()), fd(acts))
