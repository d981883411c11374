"Benchmark card and SAE formats: round trips with the libraries' own files, detection, bad input, card files"
import json
from dataclasses import replace
import pytest
import torch
from synthsae.model import SyntheticModel, preset
from synthsae.core import config_hash
from synthsae.saes import make_sae, BatchTopKSAE, JumpReLUSAE
from synthsae.evaluation import evaluate
from synthsae.formats import (read_sae, detect_format, save_sparsify, save_dictionary_learning, SAE_FORMATS,
                              DICTIONARY_LEARNING_KEYS)
from synthsae.card import benchmark_card, load_baseline, paper_baseline, baseline_dir
from synthsae.cli import main

ARCH_KW = {'standard': {}, 'topk': dict(k=4), 'batchtopk': dict(k=4), 'matryoshka_batchtopk': dict(k=4), 'jumprelu': {}}


def randomised(sae, seed=0):
    "Random weights, biases and thresholds, so that every tensor matters"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if isinstance(sae, JumpReLUSAE): sae.threshold.abs_()
        if isinstance(sae, BatchTopKSAE): sae.topk_threshold.fill_(0.2)
    return sae




@pytest.fixture(scope='module')
def x(): return torch.randn(64, 12, generator=torch.Generator().manual_seed(1))


def same_function(a, b, x, modes=(None,)):
    for m in modes:
        torch.testing.assert_close(a.encode(x, mode=m), b.encode(x, mode=m), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.decode(a.encode(x, mode=m)), b.decode(b.encode(x, mode=m)), atol=1e-5, rtol=1e-5)


# ---- formats: files as the libraries write them

@pytest.mark.parametrize('arch', list(ARCH_KW))
def test_dictionary_learning_round_trip(tmp_path, x, arch):
    sae = randomised(make_sae(arch, 12, 32, seed=0, **ARCH_KW[arch]))
    save_dictionary_learning(sae, tmp_path/'dl')
    sd = torch.load(tmp_path/'dl'/'ae.pt')
    cls = json.loads((tmp_path/'dl'/'config.json').read_text())['trainer']['dict_class']
    assert set(DICTIONARY_LEARNING_KEYS[cls]) <= set(sd)
    assert detect_format(tmp_path/'dl') == 'dictionary_learning'
    back = read_sae(tmp_path/'dl')
    assert type(back) is type(sae)
    same_function(back, sae, x, sae.eval_modes if isinstance(sae, BatchTopKSAE) else (None,))


def test_dictionary_learning_by_tensor_names(tmp_path, x):
    "Without config.json the class comes from the tensor names (AutoEncoder: `bias`, `encoder.*`, `decoder.weight`)"
    sae = randomised(make_sae('standard', 12, 32, seed=0))
    save_dictionary_learning(sae, tmp_path/'dl'); (tmp_path/'dl'/'config.json').unlink()
    same_function(read_sae(tmp_path/'dl'), sae, x)
    save_dictionary_learning(randomised(make_sae('batchtopk', 12, 32, k=4, seed=0)), tmp_path/'bt')
    (tmp_path/'bt'/'config.json').unlink()
    with pytest.raises(FileNotFoundError, match='config.json'): read_sae(tmp_path/'bt')


def test_sparsify_and_saelens_round_trip(tmp_path, x):
    sae = randomised(make_sae('topk', 12, 32, k=4, seed=0))
    save_sparsify(sae, tmp_path/'sp'); sae.save(tmp_path/'sl')
    assert [detect_format(tmp_path/n) for n in ('sp', 'sl')] == ['sparsify', 'saelens']
    same_function(read_sae(tmp_path/'sp'), sae, x)
    same_function(read_sae(tmp_path/'sl'), sae, x)


def test_real_sparsify_round_trip(tmp_path, x):
    "A SparseCoder saved by sparsify itself reads back to the same latents and reconstructions, and ours loads there"
    sparsify = pytest.importorskip('sparsify')
    sc = sparsify.SparseCoder(12, sparsify.SparseCoderConfig(k=4, num_latents=32))
    with torch.no_grad():
        for p in sc.parameters(): p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    sc.save_to_disk(tmp_path/'sc')
    ours = read_sae(tmp_path/'sc')
    enc = sc.encode(x)
    z = torch.zeros(len(x), 32).scatter(-1, enc.top_indices, enc.top_acts)
    torch.testing.assert_close(ours.encode(x), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.decode(ours.encode(x)), sc.decode(enc.top_acts, enc.top_indices),
                               atol=1e-5, rtol=1e-5)
    mine = randomised(make_sae('topk', 12, 32, k=4, seed=0))
    save_sparsify(mine, tmp_path/'mine')
    there = sparsify.SparseCoder.load_from_disk(tmp_path/'mine')
    e2 = there.encode(x)
    torch.testing.assert_close(there.decode(e2.top_acts, e2.top_indices), mine.decode(mine.encode(x)),
                               atol=1e-5, rtol=1e-5)


# ---- detection and bad input

def test_detection_errors(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='unknown SAE format') as e: detect_format(tmp_path/'empty')
    assert all(k in str(e.value) for k in SAE_FORMATS)
    save_sparsify(randomised(make_sae('topk', 12, 32, k=4, seed=0)), tmp_path/'both')
    make_sae('topk', 12, 32, k=4, seed=0).save(tmp_path/'sl')
    (tmp_path/'both'/'sae_weights.safetensors').write_bytes((tmp_path/'sl'/'sae_weights.safetensors').read_bytes())
    with pytest.raises(ValueError, match='ambiguous'): detect_format(tmp_path/'both')
    assert type(read_sae(tmp_path/'both', format='sparsify')).__name__ == 'TopKSAE'
    (tmp_path/'sl'/'sae_weights.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='sae_weights.safetensors'): detect_format(tmp_path/'sl')
    with pytest.raises(FileNotFoundError, match=r'missing weights file .*sae\.safetensors'):
        read_sae(tmp_path/'sl', format='sparsify')


def test_bad_input_leaves_no_card(tmp_path, tiny):
    good = make_sae('topk', 48, 64, k=4, seed=0)
    wide = make_sae('topk', 32, 64, k=4, seed=0)
    nan = make_sae('topk', 48, 64, k=4, seed=0)
    with torch.no_grad(): nan.W_dec[0, 0] = float('nan')
    for bad, msg in ((wide, "size 32 .* hidden_dim is 48"), (nan, "'W_dec'")):
        with pytest.raises(ValueError, match=msg): benchmark_card([good, bad], tiny, out=tmp_path/'card')
        assert not (tmp_path/'card').exists() and list(tmp_path.iterdir()) == []
    save_dictionary_learning(nan, tmp_path/'nan_dl')
    assert main(['card', '--sae', str(tmp_path/'nan_dl'), '--model', 'tiny', '--out', str(tmp_path/'card')]) == 2
    assert not (tmp_path/'card').exists()


# ---- the card

def test_card_files_and_numbers(tmp_path, tiny):
    a = make_sae('batchtopk', 48, 64, k=4, seed=0)
    b = make_sae('jumprelu', 48, 64, seed=1)
    save_dictionary_learning(b, tmp_path/'b_dl')
    card = benchmark_card([a, tmp_path/'b_dl'], tiny, out=tmp_path/'card', num_samples=1024, batch_size=256,
                          probe_steps=5)
    files = ['card.csv', 'card.html', 'card.json', 'card.png', 'card.svg']
    assert sorted(p.name for p in (tmp_path/'card').iterdir()) == files
    js = json.loads((tmp_path/'card'/'card.json').read_text())
    assert js['protocol']['num_samples'] == 1024 and js['world']['name'] == 'tiny'
    assert js['saes'][0]['evals']['batch'] == evaluate(a, tiny, num_samples=1024, batch_size=256).to_dict()
    assert js['saes'][1]['name'] == 'b_dl' and 'dictionary_learning' in js['saes'][1]['source']
    b_back = read_sae(tmp_path/'b_dl')
    assert js['saes'][1]['evals']['default'] == evaluate(b_back, tiny, num_samples=1024, batch_size=256).to_dict()
    assert js['baseline']['file']['world'] == 'tiny' and js['saes'][0]['probe']['matched'] > 0
    page = (tmp_path/'card'/'card.html').read_text()
    assert 'data:image/png;base64,' in page and 'http' not in page and 'b_dl' in page
    assert card.entries[0].breakdown['depth']['groups'][0] == 'depth 0'


def test_cli_compares_several(tmp_path):
    for i in range(2): make_sae('topk', 48, 64, k=4, seed=i).save(tmp_path/f's{i}')
    assert main(['card', '--sae', str(tmp_path/'s0'), '--sae', str(tmp_path/'s1'), '--model', 'tiny',
                 '--out', str(tmp_path/'c'), '--num-samples', '512', '--probe-steps', '0', '--breakdown', 'False']) == 0
    js = json.loads((tmp_path/'c'/'card.json').read_text())
    assert [s['name'] for s in js['saes']] == ['s0', 's1'] and js['probe'] is None


# ---- baselines are generated, never typed

def paper_numbers():
    from synthsae.paper import F2_REFERENCE, T3_REFERENCE, SCALES
    return F2_REFERENCE, T3_REFERENCE, dict(num_steps=SCALES['paper'].probe_steps, lr=SCALES['paper'].probe_lr)


def test_shipped_baselines():
    f2, t3, probe = paper_numbers()
    assert load_baseline('synthsaebench-16k') == json.loads(json.dumps(paper_baseline(f2, t3, probe=probe)))
    tiny = load_baseline('tiny')
    assert tiny['world_config_hash'] == config_hash(preset('tiny'))
    assert all(p['source'].startswith('synthsae tiny-scale reproduction') for p in tiny['points'])
    paper_archs = {'batchtopk', 'jumprelu', 'matching_pursuit', 'matryoshka_batchtopk', 'standard'}
    assert {p['arch'] for p in tiny['points']} == paper_archs
    assert sorted(f.name for f in baseline_dir().glob('*.json')) >= ['synthsaebench-16k.json', 'tiny.json']


def test_any_object_with_encode_decode_and_W_dec(tmp_path, tiny):
    "A plain object (no nn.Module, no cfg) is scored and placed like a library SAE"
    sae = make_sae('topk', 48, 64, k=4, seed=0)

    class Plain:
        W_dec = sae.W_dec.detach()
        def encode(self, x): return sae.encode(x)
        def decode(self, z): return sae.decode(z)

    card = benchmark_card(Plain(), tiny, out=tmp_path/'c', num_samples=512, batch_size=256, probe_steps=0)
    assert card.entries[0].name == 'Plain'
    ours = evaluate(sae, tiny, num_samples=512, batch_size=256)
    assert card.entries[0].headline == replace(ours, eval_mode=None)  # a plain object has no eval modes
