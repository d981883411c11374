"""Where the authors' code and the reference decide, we follow them: JumpReLU's TopK auxiliary loss, the later
JumpReLU preset, folding the input scale into a BatchTopK threshold, θ ≥ 0 after every step, bf16 training data,
Matryoshka's default nesting. Each test fails on the code before these were aligned."""
import json
import pytest, torch
from synthsae.core import make_generator
from synthsae.model import SyntheticModel
from synthsae.saes import (make_sae, jumprelu_paper_v1, jumprelu_later, paper_sae_config, BatchTopKSAE, JumpReLUSAE,
                           topk_aux_loss, default_matryoshka_widths)
from synthsae.training import train_sae, TrainConfig, _Member, sae_step
from synthsae.runs import RunConfig

EPS32 = torch.finfo(torch.float32).eps

def perturb_(sae, seed=1, amount=0.3):
    "Move every parameter off its initial value (unequal decoder norms, non-zero b_dec)"
    g = make_generator(seed)
    with torch.no_grad():
        for p in sae.parameters(): p.add_(amount * torch.randn(p.shape, generator=g))
    return sae

def authors_jumprelu_aux(sae, x, x_hat, dead):
    """The authors' JumpReLU AuxK, written densely: the top-⌊D/2⌋ dead latents by raw pre-activation (not ReLU'd)
    decoded through the full decoder with b_dec, against the detached residual; scaled by min(n_dead/⌊D/2⌋, 1)"""
    h = sae.hidden_pre(x)
    k_aux = x.shape[-1] // 2
    n_dead = int(dead.sum())
    top = torch.where(dead[None], h, -torch.inf).topk(min(k_aux, n_dead), dim=-1)
    acts = torch.zeros_like(h).scatter(-1, top.indices, top.values)
    recons = acts @ sae.W_dec + sae.b_dec
    return min(n_dead / k_aux, 1.) * (recons - (x - x_hat).detach()).pow(2).sum(-1).mean()

@pytest.mark.parametrize('n_dead', [3, 30])
def test_jumprelu_paper_aux_loss_is_the_authors(n_dead):
    d, n_lat = 16, 48
    sae = perturb_(JumpReLUSAE(jumprelu_paper_v1(d, n_lat, target_l0=4., seed=0)))
    x = torch.randn(64, d, generator=make_generator(2))
    dead = torch.arange(n_lat) >= n_lat - n_dead
    out = sae(x, dead_mask=dead)
    want = authors_jumprelu_aux(sae, x, out.x_hat, dead)
    got = out.losses['auxiliary_reconstruction_loss']
    # the same sums in two orders (sparse vs dense decode): a squared error of D terms, each a sum of ≤ D/2 + 1
    # products; relative error bounded by a few times (D/2 + D)·eps
    rtol = 4 * (d // 2 + d) * EPS32
    torch.testing.assert_close(got, want, rtol=rtol, atol=0)
    # our former definition (rank by h·‖d‖, unit atoms, no b_dec) gives another number here, far outside rtol
    norms = sae.W_dec_norm()
    ours = topk_aux_loss(sae.hidden_pre(x) * norms, dead, x - out.x_hat, sae.W_dec / norms[:, None])
    assert (ours - want).abs() > 100 * rtol * want

def test_jumprelu_later_keeps_decoder_init_norm_half():
    cfg = jumprelu_later(16, 48, target_l0=4.)
    assert cfg.decoder_init_norm == 0.5
    norms = JumpReLUSAE(cfg).W_dec.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full((48,), 0.5), rtol=4 * 16 * EPS32, atol=0)

def test_fold_input_scale_without_rescaling_keeps_the_batchtopk_threshold():
    sae = perturb_(make_sae('batchtopk', 16, 48, k=4, rescale_acts_by_decoder_norm=False)).eval()
    sae.topk_threshold.fill_(0.4)
    x, s = torch.randn(64, 16, generator=make_generator(3)), 3.7
    z_scaled = sae.encode(s * x, mode='threshold')
    want = sae.decode(z_scaled) / s
    sae.fold_input_scale_(s)
    assert sae.topk_threshold.item() == 0.4
    assert torch.equal(sae.encode(x, mode='threshold') != 0, z_scaled != 0)       # the same latents fire
    # decode: a sum of ≤ 48 products of magnitude ≲ max|z|·max|W_dec|, then divided by s
    mag = (z_scaled.abs() @ sae.W_dec.abs() * s).max().item() / s + sae.b_dec.abs().max().item()
    torch.testing.assert_close(sae.decode(sae.encode(x, mode='threshold')), want, rtol=0, atol=4 * 50 * EPS32 * mag)

def test_raw_theta_stays_non_negative_after_a_training_step():
    tiny = SyntheticModel.from_preset('tiny')
    sae = make_sae('jumprelu', tiny.hidden_dim, 32, seed=0)
    with torch.no_grad(): sae.threshold[:5] = -0.5
    m = _Member(sae, 1e-6, None, 1., torch.device('cpu'))
    sae_step(m, tiny.sample(64, tiny.batch_generator(0, 'train', 0)), step=0, lr=1e-6)
    assert sae.threshold.min().item() >= 0.
    assert torch.equal(sae.threshold[:5], torch.zeros(5))

def test_training_data_under_bf16_autocast_is_an_option_and_recorded(tmp_path):
    tiny = SyntheticModel.from_preset('tiny')
    kw = dict(batch_size=64, lr=1e-3, progress=False, checkpoint_dir=tmp_path, checkpoint_every=4)
    plain = train_sae(make_sae('topk', tiny.hidden_dim, 32, k=2, seed=0), tiny, 4 * 64, **kw)
    meta_plain = json.loads(next(tmp_path.glob('*/meta.json')).read_text())
    bf16 = train_sae(make_sae('topk', tiny.hidden_dim, 32, k=2, seed=0), tiny, 4 * 64, autocast_data=True,
                     **{**kw, 'checkpoint_dir': tmp_path/'bf16'})
    meta_bf16 = json.loads(next((tmp_path/'bf16').glob('*/meta.json')).read_text())
    assert not torch.equal(plain.W_dec, bf16.W_dec)                                # other batches
    assert meta_plain['signature']['autocast_data'] is False                        # off on the CPU by default
    assert meta_bf16['signature']['autocast_data'] is True
    rc = RunConfig(train=TrainConfig(training_samples=64, autocast_data=True))
    assert RunConfig.from_dict(json.loads(json.dumps(rc.to_dict()))).train.autocast_data is True

@pytest.mark.parametrize('d_sae,want', [(4096, (128, 512, 2048, 4096)), (512, (16, 64, 256, 512)),
                                         (100, (3, 12, 50, 100)), (4, (2, 4))])
def test_matryoshka_default_nesting(d_sae, want):
    assert default_matryoshka_widths(d_sae) == want
    assert make_sae('matryoshka_batchtopk', 8, d_sae, k=1).cfg.matryoshka_widths == want
    assert paper_sae_config('matryoshka_batchtopk', 8, d_sae, 1).matryoshka_widths == want
