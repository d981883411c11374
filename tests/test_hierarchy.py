"Hierarchy: index layout, flags, validation, compensation against the tree formula, modifier against a naive loop"
import json, math, random, warnings
import pytest
import torch
from synthsae.hierarchy import *

BENCH = HierarchyConfig(total_root_nodes=128, branching_factor=4, max_depth=3, mutually_exclusive_portion=1.,
                        compensate_probabilities=True, scale_children_by_parent=True)
STARTS = [0, 128, 640, 2688, 10_880]
N = 16_384

@pytest.fixture(scope='module')
def bench_roots(): return generate_hierarchy(BENCH, N, seed=45)

@pytest.fixture(scope='module')
def bench_flat(bench_roots): return flatten_hierarchy(bench_roots, N)

def zipf(n=N, a=0.5, p_max=0.4, p_min=5e-4):
    q = torch.arange(1, n + 1, dtype=torch.float64) ** -a
    return (p_min + (p_max - p_min) * (q - q[-1]) / (q[0] - q[-1])).float()

def nodes(roots): return list(walk_forest(roots))

# ---------------------------------------------------------------- structure
def test_bfs_layout(bench_roots):
    for d in range(4):
        got = sorted(n.feature_index for n, dd, _ in nodes(bench_roots) if dd == d)
        assert got == list(range(STARTS[d], STARTS[d + 1]))
    assert [r.feature_index for r in bench_roots] == list(range(128))

def test_closed_form_parent(bench_flat):
    for d in range(1, 4):
        i = torch.arange(STARTS[d], STARTS[d + 1])
        assert torch.equal(bench_flat.parent[i], STARTS[d - 1] + (i - STARTS[d]) // 4)
        assert (bench_flat.level[i] == d).all()
    assert (bench_flat.parent[:128] == -1).all() and (bench_flat.parent[10_880:] == -1).all()
    assert bench_flat.in_hierarchy.sum() == 10_880 and not bench_flat.in_hierarchy[10_880:].any()

def test_me_and_rescale_flags_on_all_parents(bench_roots, bench_flat):
    ns = nodes(bench_roots)
    parents = [n for n, _, _ in ns if n.children]
    assert len(parents) == 2688
    assert all(n.mutually_exclusive_children and n.scale_children_by_parent for n in parents)
    assert not any(n.mutually_exclusive_children or n.scale_children_by_parent for n, _, _ in ns if not n.children)
    assert bench_flat.group_members.shape == (2688, 4)
    assert torch.equal(bench_flat.rescale, bench_flat.parent >= 0)

def test_no_rescale_flag_when_off():
    r = generate_hierarchy(HierarchyConfig(3, 3, 2), 100, seed=0)
    assert not any(n.scale_children_by_parent or n.mutually_exclusive_children for n, _, _ in nodes(r))

@pytest.mark.parametrize('lo,hi,depths', [(1, 1, [1]), (0, 0, [0]), (2, None, [2]), (1, None, [1, 2])])
def test_me_depth_filters(lo, hi, depths):
    cfg = HierarchyConfig(3, 2, 3, mutually_exclusive_portion=1., mutually_exclusive_min_depth=lo,
                          mutually_exclusive_max_depth=hi)
    r = generate_hierarchy(cfg, 100, seed=0)
    me = [d for n, d, _ in nodes(r) if n.mutually_exclusive_children]
    assert sorted(set(me)) == depths and len(me) == sum(3 * 2**d for d in depths)

def test_me_portion_floor_and_uniform():
    cfg = HierarchyConfig(10, 3, 1, mutually_exclusive_portion=0.35)
    counts = torch.zeros(10)
    for s in range(400):
        r = generate_hierarchy(cfg, 40, seed=s)
        flags = torch.tensor([n.mutually_exclusive_children for n in r], dtype=torch.float)
        assert flags.sum() == 3  # floor(0.35 * 10)
        counts += flags
    # each root flagged with probability 0.3: 400 draws, sigma = sqrt(400*0.3*0.7) ≈ 9.2; 5 sigma = 46
    assert ((counts - 120).abs() < 46).all()

def test_truncation():
    cfg = HierarchyConfig(2, 3, 2, mutually_exclusive_portion=1., scale_children_by_parent=True)
    with pytest.raises(ValueError, match=r'needs 26 features \(2 trees of 13 nodes\) but num_features=20'):
        generate_hierarchy(cfg, 20, seed=0)
    r = generate_hierarchy(cfg, 20, seed=0, allow_truncation=True)
    assert sorted(n.feature_index for n, _, _ in nodes(r)) == list(range(20))
    assert [len(c.children) for c in r[0].children] == [3, 3, 3] and [len(c.children) for c in r[1].children] == [3, 0, 0]
    assert all(len(n.children) >= 2 for n, _, _ in nodes(r) if n.mutually_exclusive_children)
    # fewer features than roots
    assert [n.feature_index for n, _, _ in nodes(generate_hierarchy(cfg, 1, seed=0, allow_truncation=True))] == [0]

def test_benchmark_error_message():
    with pytest.raises(ValueError, match=r'needs 10880 features \(128 trees of 85 nodes\) but num_features=8000'):
        generate_hierarchy(BENCH, 8000, seed=0)

def test_ranged_branching_deterministic_and_in_range():
    cfg = HierarchyConfig(5, (2, 5), 3, mutually_exclusive_portion=0.5)
    a, b = generate_hierarchy(cfg, 10_000, seed=3), generate_hierarchy(cfg, 10_000, seed=3)
    assert a == b and a != generate_hierarchy(cfg, 10_000, seed=4)
    assert all(2 <= len(n.children) <= 5 for n, d, _ in nodes(a) if d < 3)
    with pytest.raises(ValueError, match='needs at least 75 features'):
        generate_hierarchy(cfg, 70, seed=0)

def test_config_validation_and_dict():
    for kw, msg in [(dict(branching_factor=1), '2 <= branching_factor'), (dict(branching_factor=(3, 2)), '2 <= lo <= hi'),
                    (dict(total_root_nodes=0), 'total_root_nodes'), (dict(max_depth=0), 'max_depth'),
                    (dict(mutually_exclusive_portion=1.5), 'mutually_exclusive_portion'),
                    (dict(mutually_exclusive_min_depth=-1), 'mutually_exclusive_min_depth'),
                    (dict(mutually_exclusive_min_depth=2, mutually_exclusive_max_depth=1), 'mutually_exclusive_max_depth'),
                    (dict(branching_factor=2.5), 'branching_factor must be an int')]:
        with pytest.raises(ValueError, match=msg): HierarchyConfig(**kw)
    d = HierarchyConfig(branching_factor=(2, 4)).to_dict()
    assert d['branching_factor'] == [2, 4]
    assert HierarchyConfig.from_dict(json.loads(json.dumps(d)) | {'unknown': 1}) == HierarchyConfig(branching_factor=(2, 4))
    assert BENCH.min_features_needed() == 10_880 and HierarchyConfig(2, (2, 5), 2).min_features_needed() == 14

# ---------------------------------------------------------------- validation and files
def test_validation_errors():
    a, b = HierarchyNode(1), HierarchyNode(2)
    a.children.append(b); b.children.append(a)
    with pytest.raises(ValueError, match='cycle'): validate_hierarchy([a])
    s = HierarchyNode(5)
    with pytest.raises(ValueError, match='two parents'): validate_hierarchy([HierarchyNode(0, [s]), HierarchyNode(1, [s])])
    with pytest.raises(ValueError, match='in trees 0 and 1'): validate_hierarchy([HierarchyNode(0, [HierarchyNode(3)]), HierarchyNode(3)])
    with pytest.raises(ValueError, match='twice in tree 0'): validate_hierarchy([HierarchyNode(0, [HierarchyNode(0)])])
    with pytest.raises(ValueError, match='at least 2'):
        validate_hierarchy([HierarchyNode(0, [HierarchyNode(1)], mutually_exclusive_children=True)])
    with pytest.raises(ValueError, match='num_features=4'): flatten_hierarchy([HierarchyNode(0, [HierarchyNode(4)])], 4)
    with pytest.raises(ValueError, match='feature_index must'): validate_hierarchy([HierarchyNode(-1)])

def test_json_round_trip_and_id_key(tmp_path, bench_roots):
    hierarchy_to_json(bench_roots, tmp_path / 'hierarchy.json')
    d = json.loads((tmp_path / 'hierarchy.json').read_text())
    assert set(d['roots'][0]) == {'feature_index', 'mutually_exclusive_children', 'scale_children_by_parent', 'feature_id', 'children'}
    assert hierarchy_from_json(tmp_path / 'hierarchy.json', N) == bench_roots
    ref = {'roots': [{'feature_index': 0, 'id': 'animal', 'mutually_exclusive_children': True, 'label': 'x',
                      'children': [{'feature_index': 1}, {'feature_index': 2, 'id': 'cat'}]}]}
    (tmp_path / 'ref.json').write_text(json.dumps(ref))
    r = hierarchy_from_json(tmp_path / 'ref.json')
    assert r[0].feature_id == 'animal' and r[0].children[1].feature_id == 'cat'
    assert not r[0].scale_children_by_parent and r[0].mutually_exclusive_children
    bad = {'roots': [{'feature_index': 0, 'mutually_exclusive_children': True, 'children': [{'feature_index': 1}]}]}
    (tmp_path / 'bad.json').write_text(json.dumps(bad))
    with pytest.raises(ValueError, match='at least 2'): hierarchy_from_json(tmp_path / 'bad.json')

# ---------------------------------------------------------------- random forests with organisational nodes
def random_forest(seed, n_feat=60, p_org=0.2, p_me=0.5, p_scale=0.5):
    "Random forest over a random subset of features, with organisational nodes and random flags"
    rng = random.Random(seed)
    idx = rng.sample(range(n_feat), n_feat * 2 // 3)
    def make(depth):
        f = None if rng.random() < p_org else (idx.pop() if idx else None)
        node = HierarchyNode(f, scale_children_by_parent=rng.random() < p_scale)
        if depth < 3:
            for _ in range(rng.randint(0, 3)): node.children.append(make(depth + 1))
        node.mutually_exclusive_children = len(node.children) >= 2 and rng.random() < p_me
        return node
    return [make(0) for _ in range(4)]

def naive_compensation(roots, p0):
    "SPEC §1.9, written as the recursive traversal"
    c = [1.] * len(p0)
    def visit(node, P):
        if node.feature_index is not None:
            if P > 0: c[node.feature_index] = 1 / P
            node_p = float(p0[node.feature_index])
        else: node_p = P
        for ch in node.children: visit(ch, node_p)
        kids = [ch.feature_index for ch in node.children if ch.feature_index is not None]
        if node.mutually_exclusive_children and len(kids) >= 2 and node_p > 0:
            T = sum(float(p0[k]) for k in kids)
            for k in kids: c[k] *= 1 + max(0., T - float(p0[k])) / node_p
    for r in roots: visit(r, 1.)
    return (p0.double() * torch.tensor(c, dtype=torch.float64)).clamp_max(1)

@pytest.mark.parametrize('seed', range(20))
def test_compensation_matches_tree_traversal(seed):
    roots = random_forest(seed)
    p0 = torch.rand(60, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.5 + 0.01
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.testing.assert_close(compensate_probabilities(roots, p0), naive_compensation(roots, p0))

def test_compensation_closed_forms():
    p0 = torch.tensor([0.5, 0.2, 0.1, 0.05, 0.3])
    chain = HierarchyNode(0, [HierarchyNode(1, [HierarchyNode(2)])])
    torch.testing.assert_close(compensate_probabilities([chain], p0), torch.tensor([0.5, 0.4, 0.5, 0.05, 0.3]))
    pair = HierarchyNode(0, [HierarchyNode(1), HierarchyNode(2)], mutually_exclusive_children=True)
    torch.testing.assert_close(compensate_probabilities([pair], p0)[1:3], torch.tensor([0.4 * 1.2, 0.2 * 1.4]))
    trio = HierarchyNode(0, [HierarchyNode(1), HierarchyNode(2), HierarchyNode(3)], mutually_exclusive_children=True)
    torch.testing.assert_close(compensate_probabilities([trio], p0)[1:4],
                               torch.tensor([0.4 * 1.3, 0.2 * 1.5, 0.1 * 1.6]))
    org = HierarchyNode(0, [HierarchyNode(None, [HierarchyNode(1), HierarchyNode(2)], mutually_exclusive_children=True)])
    torch.testing.assert_close(compensate_probabilities([org], p0), compensate_probabilities([pair], p0))
    p64 = compensate_probabilities([chain], p0.double())
    assert p64.dtype == torch.float64 and compensate_probabilities([chain], p0.half()).dtype == torch.float16

def test_compensation_clamp_warning():
    with pytest.warns(UserWarning, match=r'clamped 1 firing probabilities to 1 \(largest before clamping: 5'):
        p = compensate_probabilities([HierarchyNode(0, [HierarchyNode(1)])], torch.tensor([0.1, 0.5]))
    assert p.tolist() == [pytest.approx(0.1), 1.]

def test_benchmark_compensation(bench_roots):
    p0 = zipf()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # nothing is clamped
        p = compensate_probabilities(bench_roots, p0)
    assert p.dtype == torch.float32
    assert p.double().sum().item() == pytest.approx(7166.5, rel=1e-3)
    rng = lambda d: (round(p[STARTS[d]:STARTS[d + 1]].min().item(), 2), round(p[STARTS[d]:STARTS[d + 1]].max().item(), 2))
    assert [rng(1), rng(2), rng(3)] == [(0.10, 0.89), (0.83, 0.92), (0.41, 0.83)]
    assert torch.equal(p[:128], p0[:128]) and torch.equal(p[10_880:], p0[10_880:])

# ---------------------------------------------------------------- modifier
def naive_modifier(roots, acts, mu):
    "Per-sample recursive modifier for inputs without ME conflicts (so the result is deterministic)"
    out = acts.clone()
    def visit(node, par_val, par_mu, scaled, on):  # on: effective parent active (or no parent)
        f = node.feature_index
        if f is not None:
            for b in range(len(out)):
                if par_val is None: continue
                pv = out[b, par_val]
                out[b, f] = 0. if pv <= 0 else (out[b, f] * pv / mu[par_val] if scaled else out[b, f])
            new_par = f
        else: new_par = par_val
        for ch in node.children: visit(ch, new_par, None, node.scale_children_by_parent, on)
    for r in roots: visit(r, None, None, False, True)
    return out.relu()

def no_conflict_acts(roots, n_feat, bs, seed):
    "Random activations with at most one active member per ME group"
    g = torch.Generator().manual_seed(seed)
    acts = torch.rand(bs, n_feat, generator=g) * 3 * (torch.rand(bs, n_feat, generator=g) < 0.6)
    flat = flatten_hierarchy(roots, n_feat)
    for m in flat.group_members:
        m = m[m >= 0]
        keep = m[torch.randint(len(m), (bs,), generator=g)]
        mask = torch.zeros(bs, n_feat, dtype=torch.bool)
        mask[:, m] = True
        mask[torch.arange(bs), keep] = False
        acts[mask] = 0.
    return acts

@pytest.mark.parametrize('seed', range(10))
def test_modifier_matches_naive_without_conflicts(seed):
    roots = random_forest(seed)
    mu = torch.rand(60, generator=torch.Generator().manual_seed(seed)) + 0.5
    acts = no_conflict_acts(roots, 60, 16, seed)
    torch.testing.assert_close(hierarchy_modifier(roots, 60, mu)(acts), naive_modifier(roots, acts, mu))

@pytest.mark.parametrize('seed', range(10))
def test_modifier_invariants_random_forests(seed):
    roots = random_forest(seed)
    mu = torch.rand(60, generator=torch.Generator().manual_seed(seed)) + 0.5
    acts = torch.rand(256, 60, generator=torch.Generator().manual_seed(seed)) * 3
    before = acts.clone()
    flat = flatten_hierarchy(roots, 60)
    y = hierarchy_modifier(roots, 60, mu)(acts, generator=torch.Generator().manual_seed(0))
    assert torch.equal(acts, before)
    has = flat.parent >= 0
    assert not ((y[:, has] > 0) & (y[:, flat.parent[has]] <= 0)).any()       # never without the parent
    if len(flat.group_members):
        on = (y[:, flat.group_members.clamp_min(0)] > 0) & (flat.group_members >= 0)
        par_on = (flat.group_parent < 0) | (y[:, flat.group_parent.clamp_min(0)] > 0)
        assert torch.equal(on.sum(-1) == 1, par_on)                           # all raw > 0: exactly one survives
    assert (y >= 0).all()

def test_cascade_and_mu_checks():
    casc = HierarchyNode(0, [HierarchyNode(1, [HierarchyNode(2)], scale_children_by_parent=True)], scale_children_by_parent=True)
    m = hierarchy_modifier([casc], 3, torch.tensor([1.5, 2., 1.]))
    assert m(torch.tensor([[4.5, 4., 1.]])).tolist() == [[4.5, 12., 6.]]
    with pytest.raises(ValueError, match=r'features \[1\] have μ <= 0'): hierarchy_modifier([casc], 3, torch.tensor([1., 0., 1.]))
    with pytest.raises(ValueError, match='mean_magnitudes is required'): hierarchy_modifier([casc], 3)
    hierarchy_modifier([casc], 3, torch.tensor([1., 1., 0.]))  # a leaf's μ is never divided by

def test_winner_uniform():
    quad = HierarchyNode(0, [HierarchyNode(i) for i in range(1, 5)], mutually_exclusive_children=True)
    y = hierarchy_modifier([quad], 5)(torch.ones(4000, 5) * torch.tensor([1., 1., 2., 3., 9.]), generator=torch.Generator().manual_seed(5))
    on = y[:, 1:] > 0
    assert (on.sum(1) == 1).all()
    # Binomial(4000, 1/4): sigma ≈ 27.4; 5 sigma, independent of magnitude
    assert ((on.sum(0) - 1000).abs() < 5 * 27.4).all()
    z = hierarchy_modifier([quad], 5)(torch.ones(100, 5) * torch.tensor([0., 1., 1., 1., 1.]))
    assert (z[:, 1:] == 0).all()  # inactive parent: all gated off

def test_exclusive_survivors_only_considered_groups():
    vals = torch.ones(50, 2, 3)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    considered = torch.tensor([True, False]).expand(50, 2)
    keep = exclusive_survivors(vals, valid, considered, torch.Generator().manual_seed(0))
    assert (keep[:, 0].sum(-1) == 1).all() and keep[:, 1].all()

def test_me_loser_removes_subtree():
    deep = HierarchyNode(0, [HierarchyNode(1, [HierarchyNode(3)]), HierarchyNode(2, [HierarchyNode(4)])], mutually_exclusive_children=True)
    y = hierarchy_modifier([deep], 5)(torch.ones(500, 5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(y[:, 3], y[:, 1]) and torch.equal(y[:, 4], y[:, 2]) and torch.equal(y[:, 1] + y[:, 2], torch.ones(500))

def test_flat_csr_and_groups(bench_flat):
    f = bench_flat
    for p in [0, 5, 127, 128, 2687]:
        kids = f.child_idx[f.child_ptr[p]:f.child_ptr[p + 1]]
        assert torch.equal(kids, (f.parent == p).nonzero().squeeze(1))
    assert f.child_ptr[-1] == len(f.child_idx) == 10_880 - 128
    g = f.group[128:10_880]
    assert (g >= 0).all() and torch.equal(f.group_parent[g], f.parent[128:10_880])
    assert f.max_level == 3 and f.num_features == N

def test_benchmark_modifier(bench_flat):
    p = compensate_probabilities([], zipf())  # empty forest: unchanged
    assert torch.equal(p, zipf())
    mu = torch.linspace(5., 4., N)
    m = HierarchyModifier(bench_flat, mu)
    acts = (torch.rand(256, N, generator=torch.Generator().manual_seed(0)) < 0.5) * mu
    y = m(acts, generator=torch.Generator().manual_seed(1))
    has = bench_flat.parent >= 0
    assert not ((y[:, has] > 0) & (y[:, bench_flat.parent[has]] == 0)).any()
    assert ((y[:, bench_flat.group_members] > 0).sum(-1) <= 1).all()
    # rescaling: an active depth-1 child equals its draw × parent / μ_parent
    b, j = (y[:, 128:640] > 0).nonzero(as_tuple=True)
    j = j + 128
    torch.testing.assert_close(y[b, j], acts[b, j] * y[b, bench_flat.parent[j]] / mu[bench_flat.parent[j]])

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_modifier_on_cuda(bench_flat):
    mu = torch.linspace(5., 4., N)
    m = HierarchyModifier(bench_flat, mu).to('cuda')
    acts = (torch.rand(64, N, generator=torch.Generator().manual_seed(0)) < 0.5) * mu
    y = m(acts.cuda(), generator=torch.Generator('cuda').manual_seed(0)).cpu()
    has = bench_flat.parent >= 0
    assert not ((y[:, has] > 0) & (y[:, bench_flat.parent[has]] == 0)).any()
    assert ((y[:, bench_flat.group_members] > 0).sum(-1) <= 1).all()
