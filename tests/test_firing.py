"Firing probabilities and magnitudes (SPEC §1.5, §1.6, §1.14, §6.2)"
import json, math
from dataclasses import dataclass
from typing import ClassVar
import pytest, torch
from synthsae.firing import *
from synthsae.testing import assert_sums_close

# --- Zipf -----------------------------------------------------------------------------------------------

T2_INDICES = [0, 1, 127, 128, 639, 2687, 4095, 10879, 16383]
T2_VALUES = [0.4, 0.28207, 0.03294, 0.03281, 0.01327, 0.00512, 0.00365, 0.00121, 0.0005]

def test_zipf_benchmark_matches_table_t2():
    p = zipfian_firing_probabilities(16_384, exponent=0.5, max_prob=0.4, min_prob=5e-4)
    assert p.dtype == torch.float32 and p.shape == (16_384,)
    # T2 gives 5 significant digits: half a unit in the last place is 5e-6
    torch.testing.assert_close(p[T2_INDICES], torch.tensor(T2_VALUES), atol=6e-6, rtol=0)
    # T2's sums have 4 significant digits; summed in float64 (a float32 sum of 16,384 terms could be off by
    # n·eps·Σp ≈ 0.1 in the worst case)
    assert abs(p.double().sum().item() - 59.14) < 0.005
    assert abs(p[:4096].double().sum().item() - 40.12) < 0.005

@pytest.mark.parametrize('n,a,hi,lo', [(2, 1., 0.3, 0.01), (100, 0.5, 0.4, 5e-4), (5000, 2., 1., 1e-4)])
def test_zipf_endpoints_exact_and_strictly_decreasing(n, a, hi, lo):
    p = zipfian_firing_probabilities(n, a, hi, lo)
    assert p[0].item() == torch.tensor(hi).item() and p[-1].item() == torch.tensor(lo).item()
    assert bool((p.diff() < 0).all())

def test_zipf_larger_exponent_is_steeper():
    ps = [zipfian_firing_probabilities(1000, a) for a in (0.5, 1., 2.)]
    for flat, steep in zip(ps, ps[1:]): assert bool((steep[1:-1] < flat[1:-1]).all())

def test_zipf_single_feature_and_formula():
    assert zipfian_firing_probabilities(1, 1., 0.4, 0.1).tolist() == [pytest.approx(0.4)]
    q = torch.arange(1, 11, dtype=torch.float64) ** -1.5
    expect = (0.01 + 0.29 * (q - q[-1]) / (q[0] - q[-1])).float()
    assert_sums_close(zipfian_firing_probabilities(10, 1.5, 0.3, 0.01), expect, 1, expect.abs())   # float64, rounded once

@pytest.mark.parametrize('kw,msg', [
    (dict(min_prob=0.5, max_prob=0.3), '0 < min_prob < max_prob <= 1'),
    (dict(min_prob=0.3, max_prob=0.3), '0 < min_prob < max_prob <= 1'),
    (dict(min_prob=0., max_prob=0.3), 'min_prob=0.0'),
    (dict(max_prob=1.5), 'max_prob must satisfy 0 < max_prob <= 1, got 1.5'),
    (dict(exponent=-1.), 'exponent must satisfy 0 < exponent, got -1.0'),
])
def test_zipf_errors_name_field_and_range(kw, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')): zipfian_firing_probabilities(10, **kw)
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')): ZipfianFiringProbabilityConfig(**kw)

def test_num_features_validated():
    with pytest.raises(ValueError, match='num_features must satisfy 1 <= num_features, got 0'): zipfian_firing_probabilities(0)
    with pytest.raises(TypeError, match='num_features must be an int'): linear_firing_probabilities(3.)

# --- linear, random, constant ---------------------------------------------------------------------------

def test_linear_probabilities():
    expect = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1])
    assert_sums_close(linear_firing_probabilities(5, 0.5, 0.1), expect, 1, expect)   # float64, rounded once: one ulp
    assert linear_firing_probabilities(4, 0.2, 0.2).tolist() == [pytest.approx(0.2)] * 4  # min == max allowed
    with pytest.raises(ValueError, match=r'0 < min_prob <= max_prob <= 1'): LinearFiringProbabilityConfig(0.1, 0.2)

def test_random_probabilities_seeded_range_and_mean():
    a, b = random_firing_probabilities(20_000, 0.5, 0.1, seed=0), random_firing_probabilities(20_000, 0.5, 0.1, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, random_firing_probabilities(20_000, 0.5, 0.1, seed=1))
    assert bool(((a >= 0.1) & (a < 0.5)).all())
    # uniform mean 0.3, sd 0.4/sqrt(12)/sqrt(20000) = 0.0008: 0.005 is > 5 sigma
    assert abs(a.mean().item() - 0.3) < 0.005

def test_random_seed_none_is_fresh_entropy():
    assert not torch.equal(random_firing_probabilities(100), random_firing_probabilities(100))
    assert not torch.equal(RandomFiringProbabilityConfig().generate(100), RandomFiringProbabilityConfig().generate(100))

def test_constant_probability():
    assert ConstantFiringProbabilityConfig(0.25).generate(3).tolist() == [0.25] * 3
    with pytest.raises(ValueError, match='probability must satisfy 0 <= probability <= 1, got -0.1'): ConstantFiringProbabilityConfig(-0.1)

def test_configs_generate_like_functions():
    assert torch.equal(ZipfianFiringProbabilityConfig(0.5, 0.4, 5e-4).generate(100, seed=9), zipfian_firing_probabilities(100, 0.5, 0.4, 5e-4))
    assert torch.equal(LinearFiringProbabilityConfig().generate(7), linear_firing_probabilities(7))
    assert torch.equal(RandomFiringProbabilityConfig(0.4, 0.2).generate(50, seed=3), random_firing_probabilities(50, 0.4, 0.2, seed=3))

# --- JSON and registry ----------------------------------------------------------------------------------

# keys as written by the reference library (verified against sae_lens 6.54.12)
REFERENCE_PROB_JSON = [
    {"exponent": 0.5, "max_prob": 0.4, "min_prob": 0.0005, "generator_name": "zipfian"},
    {"max_prob": 0.4, "min_prob": 0.1, "generator_name": "linear"},
    {"max_prob": 0.4, "min_prob": 0.1, "generator_name": "random"},
    {"probability": 0.2, "generator_name": "constant"},
]
REFERENCE_MAG_JSON = [
    {"value": 2.0, "generator_name": "constant"},
    {"start": 5.0, "end": 4.0, "generator_name": "linear"},
    {"start": 1.0, "end": 8.0, "generator_name": "exponential"},
    {"mean": 0.5, "std": 0.5, "min_value": None, "max_value": None, "generator_name": "folded_normal"},
]

@pytest.mark.parametrize('d', REFERENCE_PROB_JSON)
def test_probability_json_round_trip_matches_reference_keys(d):
    cfg = firing_probability_config_from_dict(d)
    assert cfg.generator_name == d['generator_name']
    assert cfg.to_dict() == d and json.loads(json.dumps(cfg.to_dict())) == d

@pytest.mark.parametrize('d', REFERENCE_MAG_JSON)
def test_magnitude_json_round_trip_matches_reference_keys(d):
    cfg = magnitude_config_from_dict(d)
    assert magnitude_spec_to_json(cfg) == d and magnitude_config_from_dict(json.loads(json.dumps(d))) == cfg

def test_from_dict_errors_list_available_names():
    with pytest.raises(ValueError, match="needs 'generator_name'"): firing_probability_config_from_dict({'exponent': 1.})
    with pytest.raises(ValueError, match=r"available: \['constant', 'linear', 'random', 'zipfian'\]"):
        firing_probability_config_from_dict({'generator_name': 'lognormal'})
    with pytest.raises(ValueError, match=r"available: \['constant', 'exponential', 'folded_normal', 'linear'\]"):
        magnitude_config_from_dict({'generator_name': 'gamma'})

def test_from_dict_ignores_unknown_keys_and_fills_defaults():
    assert firing_probability_config_from_dict({'generator_name': 'zipfian', 'label': 'x'}) == ZipfianFiringProbabilityConfig()
    assert magnitude_config_from_dict({'generator_name': 'folded_normal', 'seed': 3}) == FoldedNormalMagnitudeConfig()

def test_magnitude_spec_numbers_and_configs():
    assert magnitude_config_from_dict(1) == 1.0 and isinstance(magnitude_config_from_dict(1), float)
    assert magnitude_spec_to_json(0.5) == 0.5
    cfg = LinearMagnitudeConfig(5., 4.)
    assert magnitude_config_from_dict(cfg) is cfg
    with pytest.raises(TypeError, match='magnitude spec'): magnitude_config_from_dict('5')
    with pytest.raises(TypeError, match='magnitude spec'): magnitude_config_from_dict(True)

def test_registry_rejects_duplicates_and_accepts_new_generators():
    with pytest.raises(ValueError, match=r"'zipfian' is already registered; registered names: \['constant', 'linear', 'random', 'zipfian'\]"):
        register_firing_probability_config(ZipfianFiringProbabilityConfig)

    @dataclass(frozen=True)
    class StepFiringProbabilityConfig(FiringProbabilityConfig):
        generator_name: ClassVar[str] = 'step_test'
        high: float = 0.3
        def generate(self, num_features, seed=None):
            return torch.where(torch.arange(num_features) < num_features // 2, self.high, 0.01).float()

    try:
        assert register_firing_probability_config(StepFiringProbabilityConfig) is StepFiringProbabilityConfig
        cfg = firing_probability_config_from_dict({'generator_name': 'step_test', 'high': 0.2})
        assert cfg == StepFiringProbabilityConfig(0.2) and cfg.to_dict() == {'high': 0.2, 'generator_name': 'step_test'}
    finally:
        FIRING_PROBABILITY_CONFIGS.pop('step_test', None)

    with pytest.raises(ValueError, match="'constant' is already registered"): register_magnitude_config(ConstantMagnitudeConfig)

# --- magnitudes -----------------------------------------------------------------------------------------

def test_linear_and_exponential_magnitude_endpoints():
    mu = LinearMagnitudeConfig(5., 4.).generate(16_384)
    assert mu[0].item() == 5. and mu[-1].item() == 4. and bool((mu.diff() < 0).all())
    assert torch.equal(LinearMagnitudeConfig(1., 3.).generate(3), torch.tensor([1., 2., 3.]))   # exact in any order
    e = ExponentialMagnitudeConfig(0.5, 50.).generate(1001)
    assert e[0].item() == 0.5 and e[-1].item() == 50.
    # float64 values rounded to float32, a float32 division and the rounded ratio: 4u = 2 eps relative (+1 margin)
    ratio = torch.full((1000,), 100 ** 0.001)
    assert_sums_close(e[1:] / e[:-1], ratio, 3, ratio)
    assert LinearMagnitudeConfig(2., 3.).generate(1).tolist() == [2.]
    assert ExponentialMagnitudeConfig(2., 3.).generate(1).tolist() == [2.]

@pytest.mark.parametrize('cls', [LinearMagnitudeConfig, ExponentialMagnitudeConfig])
def test_interpolating_magnitudes_need_positive_bounds(cls):
    with pytest.raises(ValueError, match='start must satisfy 0 < start, got 0.0'): cls(0., 1.)
    with pytest.raises(ValueError, match='end must satisfy 0 < end, got -1.0'): cls(1., -1.)

def test_folded_normal_nonnegative_with_negative_mean():
    v = FoldedNormalMagnitudeConfig(mean=-3., std=1.).generate(50_000, seed=0)
    assert bool((v >= 0).all())
    # |N(-3, 1)| is almost N(3, 1): mean 3 + tiny, sd of the sample mean 1/sqrt(50000) = 0.0045
    assert abs(v.mean().item() - 3.) < 0.025

def test_half_normal_mean():
    # mean = 0: half-normal with mean std*sqrt(2/pi) and sd std*sqrt(1-2/pi);
    # at N = 200,000 the sample mean has sd 0.5*0.603/447 = 0.00067, tolerance 0.0035 > 5 sigma
    v = FoldedNormalMagnitudeConfig(mean=0., std=0.5).generate(200_000, seed=1)
    assert abs(v.mean().item() - 0.5 * math.sqrt(2 / math.pi)) < 0.0035

def test_folded_normal_clamps_and_seed():
    c = FoldedNormalMagnitudeConfig(mean=0.5, std=0.5, min_value=0.3, max_value=0.6)
    v = c.generate(10_000, seed=2)
    assert v.min().item() == pytest.approx(0.3) and v.max().item() == pytest.approx(0.6)
    assert torch.equal(v, c.generate(10_000, seed=2)) and not torch.equal(v, c.generate(10_000, seed=3))
    unclamped = FoldedNormalMagnitudeConfig(0.5, 0.5).generate(10_000, seed=2)
    assert torch.equal(v, unclamped.clamp(0.3, 0.6))

@pytest.mark.parametrize('kw,msg', [
    (dict(std=0.), 'std must satisfy 0 < std, got 0.0'),
    (dict(min_value=-0.1), 'min_value must satisfy 0 <= min_value, got -0.1'),
    (dict(max_value=0.), 'max_value must satisfy 0 < max_value, got 0.0'),
    (dict(min_value=2., max_value=1.), 'min_value must satisfy min_value <= max_value'),
])
def test_folded_normal_validation(kw, msg):
    with pytest.raises(ValueError, match=msg): FoldedNormalMagnitudeConfig(**kw)

def test_resolve_magnitudes():
    assert resolve_magnitudes(0., 4, None).tolist() == [0.] * 4
    assert resolve_magnitudes(ConstantMagnitudeConfig(2.), 3, None).tolist() == [2.] * 3
    spec = FoldedNormalMagnitudeConfig(0.5, 0.5)
    assert torch.equal(resolve_magnitudes(spec, 100, 43), resolve_magnitudes(spec.to_dict(), 100, 43))
    out = resolve_magnitudes(LinearMagnitudeConfig(5., 4.), 10, 44)
    assert out.dtype == torch.float32 and out.shape == (10,)
