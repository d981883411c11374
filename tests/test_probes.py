"Probe ceiling, absorption and frequency-bucket extensions on tiny stand-in worlds"
import pytest, torch
from synthsae.evaluation import ClassificationCounts, evaluate
from synthsae.probes import (absorption, metrics_by_frequency, metrics_by_group, probe_ceiling, probe_f1, splitting,
    train_probe)
from synthsae.fixtures import ToyModel, OracleSAE


def toy_world():
    "8 orthonormal features in 12 dimensions, the frequent first; feature 0 is the parent of features 1 and 2"
    return ToyModel(n_feat=8, d=12, p=torch.linspace(0.4, 0.1, 8), children=(1, 2))


def test_probe_separable_world_is_near_perfect_and_matches_ceiling_sets():
    "Orthonormal features with magnitudes >= ~0.4 are linearly separable: the probe F1 is close to 1"
    m = toy_world()
    f1 = probe_f1(train_probe(m, num_steps=400, batch_size=256, lr=3e-2), m, num_samples=2048, batch_size=512)
    assert f1.min() > 0.95
    pc = probe_ceiling(f1, k=3, match=torch.tensor([0, 0, 5]))
    assert pc.first_k == pytest.approx(f1[:3].mean().item()) and pc.matched == pytest.approx(f1[[0, 0, 5]].mean().item())


def test_absorption_gap_exact_for_absorbed_child():
    m = toy_world()
    parents = torch.tensor([-1, 0, 0, -1, -1, -1, -1, -1])
    r = absorption(OracleSAE(m, absorb=True), m, parents, num_samples=4096, batch_size=1000)
    assert r.child.tolist() == [1, 2] and r.parent.tolist() == [0, 0] and r.latent.tolist() == [0, 0]
    assert r.gap[0].item() == 1. and r.eligible.all() and r.eligible_fraction == 1.
    assert absorption(OracleSAE(m), m, parents, num_samples=4096).max_gap == 0.


def test_frequency_buckets_partition_latents():
    c = ClassificationCounts(torch.tensor([0, 1, 2, 3]))
    c.tp, c.pos, c.lab, c.n = torch.tensor([1, 2, 0, 4]), torch.tensor([2, 2, 0, 4]), torch.tensor([1, 4, 3, 4]), 10
    r = metrics_by_frequency(c, torch.tensor([0.001, 0.02, 0.02, 1.0]), edges=[0., 0.01, 0.1, 1.])
    assert r['latents'].tolist() == [1, 2, 1]
    assert r['precision'].tolist() == [0.5, 0.5, 1.0] and r['recall'].tolist() == [1.0, 0.25, 1.0]


def test_metrics_by_group_hand_case():
    c = ClassificationCounts(torch.tensor([2, 0, 2]))
    c.tp, c.pos, c.lab, c.n = torch.tensor([1, 1, 3]), torch.tensor([1, 2, 3]), torch.tensor([2, 1, 6]), 8
    r = metrics_by_group(c, torch.tensor([0, 1, 1]))  # features 1 and 2 at depth 1: latents 0 and 2 in group 1
    assert r['latents'].tolist() == [1, 2] and r['recall'].tolist() == [1.0, 0.5]
    assert r['precision'].tolist() == [0.5, 1.0]


def test_splitting_counts_latents_per_feature():
    g = torch.Generator().manual_seed(0)
    W = torch.linalg.qr(torch.randn(16, 6, generator=g))[0].T  # 6 orthonormal rows in 16 dims
    D = torch.cat([W, W[[1, 1, 4]] + 0.1 * torch.randn(3, 16, generator=g), torch.zeros(2, 16)])
    s = splitting(D, W, threshold=0.5)
    assert s.latents_per_feature.tolist() == [1, 3, 1, 1, 2, 1] and s.split_features == 2
