"Synthetic model: save/load round trips, reference-format interop, atomic writes, sampler vs oracle, ME uniformity"
import json, math, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest, torch
import synthsae
from synthsae.core import make_generator
from synthsae.model import SyntheticModel, SyntheticModelConfig, preset, CONFIG_FILE, WEIGHTS_FILE
from synthsae.sampler import FeatureSampler, hierarchy_violations
from synthsae.hierarchy import HierarchyNode, flatten_hierarchy

REF_PY = os.environ.get('SYNTHSAE_REFERENCE_PYTHON', '')  # a Python with sae_lens (e.g. `make reference-venv`: .ref-venv/bin/python)

def _has_reference():
    if not REF_PY or not Path(REF_PY).exists(): return False
    r = subprocess.run([REF_PY, '-c', 'import sae_lens.synthetic'], capture_output=True)
    return r.returncode == 0

needs_reference = pytest.mark.skipif(not _has_reference(), reason='set SYNTHSAE_REFERENCE_PYTHON to a Python with sae_lens')

def test_save_load_round_trip_is_exact(tiny, tmp_path):
    tiny.save(tmp_path/'w')
    back = SyntheticModel.load(tmp_path/'w')
    assert back.cfg == tiny.cfg
    for name, t in tiny.state_dict().items(): assert torch.equal(back.state_dict()[name], t), name
    assert torch.equal(back.sample(300, make_generator(5)), tiny.sample(300, make_generator(5)))

def test_save_is_atomic(tiny, tmp_path, monkeypatch):
    import synthsae.model as sm
    def boom(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(sm, 'save_file', boom)
    with pytest.raises(OSError): tiny.save(tmp_path/'w')
    assert not (tmp_path/'w').exists()
    assert [p for p in tmp_path.iterdir()] == []  # no temporary folder left behind either

def test_load_errors_name_path_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='no synthetic model folder at'): SyntheticModel.load(tmp_path/'missing')
    (tmp_path/'half').mkdir(); (tmp_path/'half'/CONFIG_FILE).write_text(json.dumps(preset('tiny').to_dict()))
    with pytest.raises(Exception, match=WEIGHTS_FILE): SyntheticModel.load(tmp_path/'half')

def test_seed_determines_the_world():
    a, b = SyntheticModel(preset('tiny')), SyntheticModel(preset('tiny'))
    for name, t in a.state_dict().items(): assert torch.equal(b.state_dict()[name], t), name
    c = SyntheticModel(replace(preset('tiny'), seed=1))
    assert not torch.equal(a.feature_vectors, c.feature_vectors)

def test_replayable_stream(tiny):
    first = list(tiny.batches(32, start=0, stop=4))
    assert torch.equal(next(tiny.batches(32, start=3)), first[3])
    assert torch.equal(tiny.sample(16, make_generator(1)), tiny.sample(16, make_generator(1)))

def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match='num_features'): SyntheticModelConfig(num_features=0, hidden_dim=8)
    with pytest.raises(ValueError, match='min_prob'): synthsae.ZipfianFiringProbabilityConfig(max_prob=0.1, min_prob=0.2)
    with pytest.raises(ValueError, match='branching_factor'): synthsae.HierarchyConfig(branching_factor=1)
    with pytest.raises(ValueError, match='rank'): synthsae.LowRankCorrelationConfig(rank=0)
    with pytest.raises(ValueError, match='needs at least 10880 features'): replace(preset('synthsaebench-16k'), num_features=10_000)

def test_custom_modifiers_are_applied():
    double = synthsae.ActivationGenerator(6, 0.5, modify_activations=[lambda a: 2 * a, lambda a: a + 1])
    vals = set(double.sample(200, make_generator(0)).unique().tolist())
    assert vals == {1., 3.}

def test_sparse_sampler_matches_dense_oracle_on_cpu_preset():
    "Per-feature realised rates and mean L0 of the top-down sampler and the literal dense oracle, 10,000 samples each"
    model = SyntheticModel.from_preset('cpu')
    s, n = model.activation_generator.sampler, 10_000
    rate_s, rate_d = torch.zeros(model.num_features), torch.zeros(model.num_features)
    l0_s, l0_d = [], []
    g_s, g_d = make_generator(1), make_generator(2)
    for _ in range(n // 2000):
        sf, dense = s.sparse_features(2000, g_s), s.dense_features(2000, g_d) > 0
        rate_s += torch.bincount(sf.cols, minlength=model.num_features); l0_s.append(sf.l0().double())
        rate_d += dense.sum(0); l0_d.append(dense.sum(1).double())
    rate_s, rate_d = rate_s / n, rate_d / n
    # the difference of two rates p̂ has σ = sqrt(2p(1−p)/n) ≤ 0.0071 at n = 10,000; 6σ per feature
    sigma = (2 * rate_d.clamp(1e-4) * (1 - rate_d) / n).sqrt()
    assert ((rate_s - rate_d).abs() <= 6 * sigma + 1e-3).all()
    # mean L0: the copula makes per-sample L0 overdispersed (sd ≈ 10 here), so the standard error of the
    # difference of the two means is measured from the samples (≈ 0.10); 5 standard errors
    l0_s, l0_d = torch.cat(l0_s), torch.cat(l0_d)
    se = float((l0_s.var() / n + l0_d.var() / n).sqrt())
    assert abs(float(l0_s.mean() - l0_d.mean())) < 5 * se, (float(l0_s.mean()), float(l0_d.mean()), se)
    assert 5 * se < 0.05 * float(l0_d.mean())  # and the test can still see a 5% bias

def test_me_winner_is_uniform():
    "One always-on parent with 4 mutually exclusive children of equal p = 0.5: each child wins with (1 − 0.5⁴)/4"
    kids = [HierarchyNode(feature_index=i) for i in range(1, 5)]
    root = HierarchyNode(feature_index=0, children=kids, mutually_exclusive_children=True)
    flat = flatten_hierarchy([root], 5)
    fs = FeatureSampler(torch.tensor([1., .5, .5, .5, .5]), torch.ones(5), torch.zeros(5), hierarchy=flat)
    n = 40_000
    acts = fs.sparse_features(n, make_generator(4)).to_dense()
    assert hierarchy_violations(acts, flat) == dict(orphans=0, me_conflicts=0)
    rate = (acts[:, 1:] > 0).float().mean(0)
    expected, sigma = (1 - 0.5**4) / 4, math.sqrt(0.234 * 0.766 / n)
    assert ((rate - expected).abs() < 5 * sigma).all(), rate

@needs_reference
def test_reference_loads_our_folder_and_we_load_its(tiny, tmp_path):
    tiny.save(tmp_path/'ours')
    script = f'''
import torch, warnings; warnings.simplefilter("ignore")
from sae_lens.synthetic import SyntheticModel
m = SyntheticModel.load_from_disk({str(tmp_path/'ours')!r})
torch.save(dict(W=m.feature_dict.feature_vectors.detach(), b=m.feature_dict.bias.detach(),
                p=m.activation_generator.firing_probabilities), {str(tmp_path/'seen.pt')!r})
m.save({str(tmp_path/'theirs')!r})
print(m.sample(8).shape)
'''
    r = subprocess.run([REF_PY, '-c', script], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    seen = torch.load(tmp_path/'seen.pt')
    assert torch.equal(seen['W'], tiny.feature_vectors) and torch.equal(seen['b'], tiny.bias)
    assert torch.allclose(seen['p'], tiny.firing_probabilities)
    theirs = SyntheticModel.load(tmp_path/'theirs')
    assert torch.equal(theirs.feature_vectors, tiny.feature_vectors)
    assert torch.allclose(theirs.firing_probabilities, tiny.firing_probabilities)
    assert torch.equal(theirs.sample(64, make_generator(0)), tiny.sample(64, make_generator(0)))  # same hierarchy, μ, σ

def test_atomic_files_get_the_usual_permissions(tmp_path):
    "Atomic writes (mkstemp underneath) end with the permissions a plain open() would give, not 0600"
    from synthsae.core import write_json
    write_json(tmp_path/'a.json', {'x': 1}); (tmp_path/'b.txt').write_text('x')
    assert (tmp_path/'a.json').stat().st_mode & 0o777 == (tmp_path/'b.txt').stat().st_mode & 0o777
