"Figures: files written with their data, CSVs that hold the plotted numbers, input errors, the latent browser's static view"
import matplotlib
matplotlib.use('Agg')
import numpy as np, pandas as pd, pytest, torch
from synthsae.evaluation import ClassificationCounts
from synthsae.figures import (L0_SWEEP_METRICS, absorption_data, absorption_plot, l0_sweep, latent_browser, latent_card,
    latent_table, precision_recall, results_table, save_figure, similarity_data, similarity_heatmap, superposition_sweep,
    sweep_summary, top_features, widget_frontend)
from synthsae.probes import AbsorptionResult
from synthsae.testing import sum_tol

SUMMARY_COLUMNS = ['metric', 'arch', 'x', 'mean', 'sd', 'min', 'max', 'n', 'lo', 'hi']


def record(arch, seed, l0, value):
    "A result record shaped like {arch, seed, l0, **EvalResult.to_dict()} with metrics derived from `value`"
    return dict(arch=arch, seed=seed, l0=l0, true_l0=25., sae_l0=l0 + 0.1 * seed, dead_latents=seed,
                shrinkage=0.9, explained_variance=value, mcc=value / 2, uniqueness=1 - value / 10,
                classification=dict(precision=value / 3, recall=1 - value / 3, f1_score=value / 4, accuracy=0.99),
                synthsae=dict(eval_mode='batch', eval_batch_size=1024, eval_samples=2048, d_sae=64))


@pytest.fixture
def sweep_rows():
    return [record(a, s, l0, (0.5 if a == 'batchtopk' else 0.3) + 0.01 * l0 + 0.02 * s)
            for a in ('batchtopk', 'matching_pursuit') for l0 in (15, 25, 35) for s in (0, 1, 2)]


def files_of(tmp_path, name):
    return {ext: tmp_path/f'{name}.{ext}' for ext in ('png', 'svg', 'csv')}


def assert_written(tmp_path, name):
    paths = files_of(tmp_path, name)
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert paths['png'].read_bytes()[:4] == b'\x89PNG' and b'<svg' in paths['svg'].read_bytes()[:2000]
    assert not list(tmp_path.glob('.*.tmp')), "temporary files left behind"
    return pd.read_csv(paths['csv'])


def line_data(ax):
    "{label: (x, y)} of the lines on an axis"
    return {l.get_label(): (np.asarray(l.get_xdata(), float), np.asarray(l.get_ydata(), float)) for l in ax.lines
            if not l.get_label().startswith('_')}


def test_save_figure_round_trips_columns_and_returns_paths(tmp_path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(); ax.plot([1, 2, 3], [0.5, 0.25, 0.125]); plt.close(fig)
    paths = save_figure(fig, dict(x=torch.tensor([1, 2, 3]), y=[0.5, 0.25, 0.125]), tmp_path/'sub', 'curve')
    assert paths == files_of(tmp_path/'sub', 'curve')
    back = assert_written(tmp_path/'sub', 'curve')
    assert back.x.tolist() == [1, 2, 3] and back.y.tolist() == [0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match='lengths'): save_figure(fig, dict(x=[1, 2], y=[1]), tmp_path, 'bad')
    with pytest.raises(ValueError, match='name'): save_figure(fig, dict(x=[1]), tmp_path, 'a/b')


def test_results_table_flattens_records_and_names_missing_columns(sweep_rows):
    t = results_table(sweep_rows)
    assert {'f1', 'precision', 'recall', 'eval_mode', 'mcc'} <= set(t.columns) and 'f1_score' not in t.columns
    assert t.f1[0] == sweep_rows[0]['classification']['f1_score']
    with pytest.raises(ValueError, match=r"\['rho_mm'\]"): results_table(sweep_rows, required=['rho_mm'])
    with pytest.raises(ValueError, match='empty'): results_table([])


def test_sweep_summary_bands_are_hand_computed(sweep_rows):
    s = sweep_summary(sweep_rows, ['explained_variance'], band='range')
    r = s[(s.arch == 'batchtopk') & (s.l0 == 25)].iloc[0]
    vals = [0.5 + 0.25 + 0.02 * k for k in range(3)]
    assert r['mean'] == pytest.approx(np.mean(vals)) and r.lo == pytest.approx(min(vals)) and r.hi == pytest.approx(max(vals))
    assert r.x == pytest.approx(25.1) and r.n == 3
    r = sweep_summary(sweep_rows, ['explained_variance'], band='sd').query("arch == 'batchtopk' and l0 == 25").iloc[0]
    assert r.hi - r['mean'] == pytest.approx(np.std(vals, ddof=1))


def test_l0_sweep_writes_files_and_csv_holds_plotted_lines(tmp_path, sweep_rows):
    fig = l0_sweep(sweep_rows, out_dir=tmp_path, title='test')
    csv = assert_written(tmp_path, 'F2_l0_sweep')
    assert set(SUMMARY_COLUMNS + ['l0']) <= set(csv.columns)
    assert list(dict.fromkeys(csv.metric)) == [*L0_SWEEP_METRICS, 'sae_l0']
    assert len(fig.axes) == 6
    for ax, m in zip(fig.axes, [*L0_SWEEP_METRICS, 'sae_l0']):
        lines = line_data(ax)
        assert set(lines) == {'BatchTopK', 'Matching Pursuit'}
        for arch, label in (('batchtopk', 'BatchTopK'), ('matching_pursuit', 'Matching Pursuit')):
            d = csv[(csv.metric == m) & (csv.arch == arch)].sort_values('x')
            np.testing.assert_allclose(lines[label][0], d.x); np.testing.assert_allclose(lines[label][1], d['mean'])
    t = results_table(sweep_rows)
    assert csv.query("metric == 'f1' and arch == 'matching_pursuit' and l0 == 35")['max'].item() == pytest.approx(
        t.query("arch == 'matching_pursuit' and l0 == 35").f1.max())


def test_l0_sweep_missing_metric_is_named(sweep_rows):
    rows = [{k: v for k, v in r.items() if k != 'uniqueness'} for r in sweep_rows]
    with pytest.raises(ValueError, match='uniqueness'): l0_sweep(rows)
    with pytest.raises(ValueError, match='band'): l0_sweep(sweep_rows, band='iqr')


def test_precision_recall_and_superposition_sweep_files(tmp_path, sweep_rows):
    fig = precision_recall(sweep_rows, out_dir=tmp_path)
    csv = assert_written(tmp_path, 'F3_precision_recall')
    assert set(csv.metric) == {'precision', 'recall'} and len(fig.axes) == 2
    np.testing.assert_allclose(line_data(fig.axes[1])['BatchTopK'][1],
                               csv.query("metric == 'recall' and arch == 'batchtopk'").sort_values('x')['mean'])
    rows = [dict(r, hidden_dim=d, rho_mm=0.3 - d / 10_000) for d in (256, 768) for r in sweep_rows if r['l0'] == 25]
    fig = superposition_sweep(rows, x='rho_mm', out_dir=tmp_path)
    csv = assert_written(tmp_path, 'F4_superposition')
    assert {'hidden_dim', 'x'} <= set(csv.columns) and set(csv.metric) == {'explained_variance', 'mcc', 'f1'}
    assert sorted(csv.x.unique()) == pytest.approx([0.3 - 0.0768, 0.3 - 0.0256])
    with pytest.raises(ValueError, match='rho_mm'): superposition_sweep(sweep_rows)


def oracle(n_feat=12, d=16, seed=0):
    "Orthonormal true features W (a float64 QR rounded to float32) and a decoder whose row j is W[perm[j]]"
    g = torch.Generator().manual_seed(seed)
    W = torch.linalg.qr(torch.randn(d, n_feat, generator=g).double())[0].T.float().contiguous()
    perm = torch.randperm(n_feat, generator=g)
    return W, W[perm], perm


def cos_tol(d):
    "atol of a |cos| of oracle rows against 0 or 1: orthonormal within eps, normalised (d/2 + 2 roundings), d-term dot"
    return sum_tol(d + 3)['atol']


def test_similarity_heatmap_orders_by_matching(tmp_path):
    W, W_dec, perm = oracle()
    similarity_heatmap(W_dec, W, num_latents=6, out_dir=tmp_path)
    csv = assert_written(tmp_path, 'similarity_heatmap')
    assert list(csv.columns) == ['row', 'col', 'latent', 'feature', 'abs_cos', 'matched'] and len(csv) == 36
    diag = csv[csv.matched]
    assert diag.feature.tolist() == list(range(6)) and diag.latent.tolist() == perm.argsort()[:6].tolist()
    np.testing.assert_allclose(diag.abs_cos, 1, atol=cos_tol(16))
    np.testing.assert_allclose(csv[~csv.matched].abs_cos, 0, atol=cos_tol(16))
    with pytest.raises(ValueError, match=r'\(12, 16\).*\(12, 15\)'): similarity_data(W_dec, W[:, :15])


def test_similarity_data_handles_wider_and_narrower_dictionaries():
    W, W_dec, perm = oracle()
    wide = similarity_data(torch.cat([W_dec, W_dec[:3] * -2]), W, num_latents=12)  # L > N: extra latents unmatched
    assert wide[wide.matched].abs_cos.min() == pytest.approx(1, abs=cos_tol(16) + sum_tol(1)['atol'])   # + the ×(−2)
    narrow = similarity_data(W_dec[:5], W)  # L < N: every latent matched
    assert sorted(narrow[narrow.matched].feature) == sorted(perm[:5].tolist())


def absorption_result(gaps, eligible):
    gap, ok = torch.tensor(gaps), torch.tensor(eligible)
    e = len(gap)
    return AbsorptionResult(torch.zeros(e, dtype=torch.int64), torch.arange(1, e + 1), torch.zeros(e, dtype=torch.int64),
                            torch.full((e,), 0.9), torch.where(ok, gap, torch.nan), ok, gap[ok].mean().item(),
                            gap[ok].max().item(), ok.float().mean().item())


def test_absorption_plot_files_and_table(tmp_path):
    res = {'a': absorption_result([0.5, 0.1, 0.], [True, True, False]), 'b': absorption_result([0.2], [True])}
    absorption_plot(res, out_dir=tmp_path)
    csv = assert_written(tmp_path, 'absorption')
    assert list(csv.columns) == ['sae', 'parent', 'child', 'latent', 'match_cos', 'gap', 'eligible']
    assert csv.sae.tolist() == ['a', 'a', 'a', 'b'] and csv.eligible.tolist() == [True, True, False, True]
    assert csv[csv.eligible].groupby('sae').gap.mean().tolist() == pytest.approx([0.3, 0.2])
    assert np.isnan(csv.gap[2])
    with pytest.raises(ValueError, match='lacks'): absorption_data({'x': dict(gap=torch.zeros(2))})
    bad = res['b']._replace(child=torch.arange(3))
    with pytest.raises(ValueError, match="'child': 3"): absorption_data(bad)


def test_latent_browser_static_view_finds_oracle_features():
    W, W_dec, perm = oracle()
    assert widget_frontend() is False
    t = latent_browser(W_dec, W, k=3)
    assert isinstance(t, pd.DataFrame) and t.latent.tolist() == list(range(12))
    assert t.feature.tolist() == perm.tolist()
    np.testing.assert_allclose(t.cos, 1, atol=cos_tol(16))
    top = top_features(W_dec * -1, W, latent=4, k=2)
    assert top.feature[0] == perm[4] and top.cos[0] == pytest.approx(-1, abs=cos_tol(16)) and top.abs_cos[1] < cos_tol(16)


def test_latent_table_counts_and_errors():
    W, W_dec, perm = oracle(n_feat=4, d=4)
    c = ClassificationCounts(perm)
    z = torch.tensor([[1., 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    f = torch.zeros(3, 4); f[0, perm[0]] = f[1, perm[0]] = f[2, perm[1]] = 1.
    c.update(z, f)
    t = latent_table(W_dec, W, c.per_latent(), latents=[0, 1])
    assert t.fires.tolist() == [2, 1] and t.precision.tolist() == [1., 0.] and t.recall.tolist() == [1., 0.]
    with pytest.raises(ValueError, match=r'\(4,\)'): latent_table(W_dec, W, {k: v[:2] for k, v in c.per_latent().items()})
    with pytest.raises(ValueError, match='latent'): top_features(W_dec, W, latent=4)
    assert 'precision 1.000' in latent_card(W_dec, W, 0, c.per_latent()).axes[0].get_title()


def test_latent_card_files(tmp_path):
    W, W_dec, perm = oracle(n_feat=4, d=4)
    c = ClassificationCounts(perm)
    c.update(torch.tensor([[1., 0, 0, 0]]), torch.eye(4)[perm[:1]])
    fig = latent_card(W_dec, W, 0, c.per_latent(), k=3, out_dir=tmp_path)
    csv = assert_written(tmp_path, 'latent_0')
    assert list(csv.columns) == ['rank', 'feature', 'cos', 'abs_cos', 'latent', 'fires', 'precision', 'recall', 'f1']
    assert csv.feature[0] == perm[0] and csv.cos[0] == pytest.approx(1, abs=cos_tol(4)) and csv.precision[0] == 1.
    np.testing.assert_allclose([p.get_height() for p in fig.axes[0].patches], csv.cos)


def test_latent_browser_widget_carries_static_fallback():
    pytest.importorskip('ipywidgets')
    W, W_dec, perm = oracle()
    w = latent_browser(W_dec, W, k=2, interactive=True)
    bundle = w._repr_mimebundle_()
    assert 'application/vnd.jupyter.widget-view+json' in bundle and '<table' in bundle['text/html']


def test_reference_points_are_drawn_dashed_and_saved(tmp_path, sweep_rows):
    ref = [dict(arch='batchtopk', l0=l0, mcc=v, f1=v / 2) for l0, v in ((15, 0.675), (25, 0.758))]
    fig = l0_sweep(sweep_rows, reference=ref, out_dir=tmp_path)
    csv = assert_written(tmp_path, 'F2_l0_sweep')
    r = csv[csv.source == 'reference']
    assert set(r.metric) == {'mcc', 'f1'} and r.query("metric == 'mcc'")['mean'].tolist() == [0.675, 0.758]
    dashed = [l for l in fig.axes[1].lines if l.get_linestyle() == '--' and len(l.get_xdata())]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [15, 25] and list(dashed[0].get_ydata()) == [0.675, 0.758]
    with pytest.raises(ValueError, match='none of the metrics'): l0_sweep(sweep_rows, reference=[dict(arch='topk', l0=15, ve=1.)])


def test_mixed_eval_modes_are_not_averaged(sweep_rows):
    rows = [dict(r, synthsae=dict(r['synthsae'], eval_mode='threshold' if r['seed'] == 2 else 'batch')) for r in sweep_rows]
    with pytest.raises(ValueError, match="eval modes for arch \\['batchtopk', 'matching_pursuit'\\]"): l0_sweep(rows)
    renamed = [dict(r, arch=r['arch'] + '/threshold') if r['seed'] == 2 else r for r in rows]
    assert set(sweep_summary(renamed, ['mcc']).arch) == {'batchtopk', 'batchtopk/threshold', 'matching_pursuit', 'matching_pursuit/threshold'}
