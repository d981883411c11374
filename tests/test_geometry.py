"Feature geometry: the Gram-identity loss and gradient against the naive pairwise versions, superposition statistics against numpy"
import math
import numpy as np
import pytest
import torch
from torch.testing import assert_close
from synthsae.core import make_generator, unit_rows
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


# --- orthogonality loss and gradient --------------------------------------------------------------------------

@pytest.mark.parametrize('n,d,chunk', [(1, 3, 1024), (2, 5, 1), (37, 8, 5), (64, 128, 1024), (200, 16, 64)])
def test_loss_gram_identity_equals_pairwise(n, d, chunk):
    E = randn(n, d, seed=n) * 0.7   # rows away from unit norm, so both terms matter
    expected = naive_loss(E).item()
    assert orthogonality_loss(E, chunk_size=chunk) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize('n,d', [(2, 3), (17, 4), (40, 64)])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_closed_form_grad_equals_autograd(n, d, dtype):
    E = randn(n, d, seed=d, dtype=dtype) / math.sqrt(d)   # norms near 1, as during orthogonalisation
    leaf = E.clone().requires_grad_()
    naive_loss(leaf).backward()
    tol = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-4)  # fp32: entries O(10), summed in another order
    assert_close(orthogonality_grad(E), leaf.grad, **tol)


def test_orthogonalize_equals_adam_on_naive_loss():
    # the reference's algorithm: Adam on the autograd loss, one step per pass, then unit rows
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
    assert_close(W_orth.norm(dim=1), torch.ones(64))
    assert orthogonality_loss(W_orth) < 1e-3 * before
    assert superposition_stats(W_orth, percentiles=()).rho_mm < 0.02
    assert not W.equal(W_orth)  # input untouched, new tensor returned
    assert_close(W.norm(dim=1), torch.ones(64))


def test_progress_bar_does_not_change_result():
    W = random_feature_vectors(50, 8, seed=6)[0]
    cfg = OrthogonalizationConfig(num_steps=12, chunk_size=7)
    assert orthogonalize(W, cfg, progress=True).equal(orthogonalize(W, cfg))


def test_orthogonalize_zero_steps_is_normalisation():
    W = randn(9, 4, seed=2) * 3
    assert_close(orthogonalize(W, OrthogonalizationConfig(num_steps=0)), unit_rows(W).float())


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
    assert_close(W, W_ref / W_ref.norm(dim=1, keepdim=True))
    assert_close(b, 0.5 * b_ref / b_ref.norm())
    assert W.dtype == b.dtype == torch.float32
    assert random_feature_vectors(50, 6, bias=True, seed=11)[1].norm().item() == pytest.approx(1, abs=1e-6)
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
    # SPEC §1.4 [D]: 0.1366, seed-to-seed variation about ±0.001
    st = superposition_stats(random_feature_vectors(4096, 768, seed=7)[0], percentiles=())
    assert st.rho_mm == pytest.approx(0.1366, abs=0.002)
    assert expected_rho_mm(4096, 768) == pytest.approx(0.1366, abs=1e-4)


@pytest.mark.parametrize('layout', ['coo', 'csr'])
def test_feature_dictionary_forward_dense_and_sparse(layout):
    fd = FeatureDictionary(40, 12, bias=0.3, seed=5)
    acts = torch.rand(6, 40, generator=make_generator(0)) * (torch.rand(6, 40, generator=make_generator(1)) < 0.2)
    x = fd(acts)
    assert_close(x, acts @ fd.feature_vectors + fd.bias)
    sparse = acts.to_sparse() if layout == 'coo' else acts.to_sparse_csr()
    assert_close(fd(sparse), x)
    assert set(fd.state_dict()) == {'feature_vectors', 'bias'}
    assert (fd.num_features, fd.hidden_dim) == (40, 12)


def test_feature_dictionary_initializers():
    W_rand = FeatureDictionary(16, 8, seed=2).feature_vectors
    assert_close(W_rand, random_feature_vectors(16, 8, seed=2)[0])
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
    assert_close(st.max_abs_cos, torch.from_numpy(mx).float(), rtol=0, atol=1e-6)
    assert st.rho_mm == pytest.approx(mx.mean(), abs=1e-6)
    assert st.mean_abs_cos == pytest.approx(mean, abs=1e-6)
    assert st.row_percentiles.shape == (n, len(percentiles))
    assert_close(st.row_percentiles, torch.from_numpy(pct).float(), rtol=0, atol=1e-6)
    assert list(st.mean_percentiles) == list(percentiles)
    for c, q in enumerate(percentiles): assert st.mean_percentiles[q] == pytest.approx(pct[:, c].mean(), abs=1e-6)


def test_stats_independent_of_chunk_size():
    W = random_feature_vectors(700, 48, seed=9)[0]
    ref = superposition_stats(W, chunk_size=700)
    for chunk in (1, 3, 100, 699, 4096):
        for pc in ((95, 99), ()):
            st = superposition_stats(W, chunk_size=chunk, percentiles=pc)
            assert_close(st.max_abs_cos, ref.max_abs_cos)
            assert st.mean_abs_cos == pytest.approx(ref.mean_abs_cos, rel=1e-6)
            if pc: assert_close(st.row_percentiles, ref.row_percentiles)


def test_stats_orthogonal_parallel_antiparallel():
    assert superposition_stats(torch.eye(6) * 5).rho_mm == 0
    W = torch.tensor([[1., 1, 0, 0], [2, 2, 0, 0], [0, 0, 1, 0], [0, 0, -3, 0]])
    st = superposition_stats(W, percentiles=(50,))
    assert_close(st.max_abs_cos, torch.ones(4))
    assert st.rho_mm == pytest.approx(1)
    assert st.mean_abs_cos == pytest.approx(2 / 6)
    # duplicates of a row count; only the row itself is excluded
    st3 = superposition_stats(torch.tensor([[1., 0], [1., 0], [0, 1.]]), percentiles=())
    assert_close(st3.max_abs_cos, torch.tensor([1., 1., 0.]))


def test_stats_zero_row_and_errors():
    st = superposition_stats(torch.tensor([[0., 0], [1, 0], [0, 1]]), percentiles=())
    assert_close(st.max_abs_cos, torch.tensor([0., 0., 0.]))
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
