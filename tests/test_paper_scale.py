"The paper scale resolves without training at it: every item's settings, references and SAEs at paper size"
import math
import pytest, torch
from synthsae.model import preset
from synthsae.paper import (NOTEBOOKS, PAPER_ARCHS, PAPER_L0S, F2_METRICS, T3_METRICS, F8_ABLATIONS, scale_settings,
                            select_notebooks, sweep_configs, sweep_runs, sweep_l0s, paper_l0, reference_value,
                            f2_reference, scaled_samples, throughput_config, ablation_configs)
from synthsae.runs import RunConfig, build_sae

@pytest.fixture(scope='module')
def paper(): return scale_settings('paper')

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py

def test_every_item_resolves_to_a_notebook():
    for item in {i for its in NOTEBOOKS.values() for i in its}: assert select_notebooks(item)

def test_paper_protocol(paper):
    # the paper's world, width, protocol and evaluation
    assert (paper.model, paper.d_sae, paper.training_samples, paper.batch_size, paper.lr, paper.eval_samples) == \
        ('synthsaebench-16k', 4096, 200_000_000, 1024, 3e-4, 1_000_000)
    w = preset(paper.model)
    assert (w.num_features, w.hidden_dim) == (16_384, 768)
    assert paper.seeds == (0, 1, 2, 3, 4) and set(PAPER_L0S) <= set(sweep_l0s(paper))

def test_l0_sweep_and_t3_configs(paper):
    cfgs = sweep_configs(paper, sweep_runs(paper))
    assert len(cfgs) == len(PAPER_ARCHS) * len(sweep_l0s(paper)) * len(paper.seeds)
    for c in cfgs:
        assert c.train.training_samples == 200_000_000 and c.eval.num_samples == 1_000_000
        assert RunConfig.from_dict(c.to_dict()) == c
    # every sweep point has the paper's numbers beside it, and T3's rows have theirs
    for l0 in sweep_l0s(paper): assert paper_l0(l0, paper.l0_ref) == l0
    assert len(f2_reference(paper, list(paper.l0s))) == len(PAPER_ARCHS) * len(PAPER_L0S)
    for a in PAPER_ARCHS:
        for l0 in paper.t3_l0s:
            for m in T3_METRICS: assert reference_value('T3', m, a, l0) is not None, (m, a, l0)
        for m in F2_METRICS: assert reference_value('F2', m, a, 25) is not None, (m, a)

def test_the_issue_command_overrides(paper):
    # `synthsae reproduce --scale paper --only T3 --architectures batchtopk --seeds 0 --l0s 25 --training_samples 1000000`
    s = scale_settings('paper', seeds=[0], l0s=[25], architectures=['batchtopk'], training_samples=1_000_000)
    assert select_notebooks('T3') == ['72_l0_sweep']
    runs = sweep_runs(s)
    assert runs == [('batchtopk', 20, 0), ('batchtopk', 25, 0)]  # T3's two L0s join the sweep
    c = sweep_configs(s, runs)[1]
    assert (c.model, c.sae['d_sae'], c.sae['k'], c.train.training_samples, c.train.lr) == \
        ('synthsaebench-16k', 4096, 25, 1_000_000, 3e-4)

def test_other_items_resolve(paper):
    d0 = preset(paper.model).hidden_dim
    for d in paper.superposition_dims:                      # F4: samples follow (D/D0)^0.6
        assert scaled_samples(paper.training_samples, d, d0) == round(2e8 * (d / d0) ** 0.6)
        assert sweep_configs(paper, [('batchtopk', 25, 0)], model='x', hidden_dim=d)[0].sae['d_in'] == d
    for n in paper.throughput_sizes: assert throughput_config(n).num_features == n   # F6
    with_, without = ablation_configs(paper, list(F8_ABLATIONS), list(paper.ablation_l0s), 0)   # F8
    assert len(with_) == len(without) == len(F8_ABLATIONS) * len(paper.ablation_l0s)
    assert all(w.sae != wo.sae for w, wo in zip(with_, without))

@pytest.mark.parametrize('arch', PAPER_ARCHS)
def test_every_architecture_builds_at_paper_size(paper, arch):
    # one BatchTopK-family / JumpReLU / Standard / MP SAE of 4,096 latents on 768 inputs, forward on a small batch
    c = sweep_configs(paper, [(arch, 25, 0)])[0]
    sae = build_sae(c.sae, 768)
    assert tuple(sae.W_dec.shape) == (4096, 768)
    x = torch.randn(8, 768, generator=torch.Generator().manual_seed(0))
    out = sae(x, step=0)
    assert out.x_hat.shape == x.shape and math.isfinite(float(out.loss.detach()))
    if arch in F8_ABLATIONS:
        ablated = ablation_configs(paper, [arch], [25], 0)[1][0]
        assert tuple(build_sae(ablated.sae, 768).W_dec.shape) == (4096, 768)
