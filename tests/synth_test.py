"""lattice.synth: policies, dedup, diversity metrics, verifiers, sampling, toy collapse."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import sources
from lattice.decode import sampling
from lattice.nn import transformer
from lattice.synth import generate, metrics, quality, recursive, tasks, toy, transforms

from conftest import tiny_config

REAL = recursive.tag([{'text': f'real {i}'} for i in range(40)], 'real')
SYN = [[{'text': f'g{g} {i}'} for i in range(20)] for g in range(3)]


def _synthetic(k):
  return [recursive.tag(ds, f'gen{g}') for g, ds in enumerate(SYN[:k])]


@pytest.mark.parametrize('k', [1, 2, 3])
def test_policies_sizes_and_provenance(k):
  syn = _synthetic(k)
  rep = recursive.compose(recursive.Policy('replace'), REAL, syn)
  assert recursive.provenance(rep) == {f'gen{k - 1}': 20}
  acc = recursive.compose(recursive.Policy('accumulate'), REAL, syn)
  assert recursive.provenance(acc) == {'real': 40, **{f'gen{g}': 20 for g in range(k)}}
  mix = recursive.compose(recursive.Policy('mix', 0.1), REAL, syn)
  assert len(mix) == 20 and recursive.provenance(mix) == {'real': 2, f'gen{k - 1}': 18}
  assert len({r['text'] for r in mix}) == 20  # sampled without replacement
  # Generation 0 trains on real data under every policy.
  assert recursive.compose(recursive.Policy('replace'), REAL, []) == REAL


def test_policy_errors_and_loop_rows():
  with pytest.raises(config_lib.ConfigError, match='policy.kind'):
    recursive.Policy('keep')
  with pytest.raises(config_lib.ConfigError, match='real_fraction'):
    recursive.Policy('mix', 0.0)
  seen = []
  rows = recursive.run_generations(
      recursive.Policy('accumulate'), REAL[:4], 3,
      train=lambda data, g: seen.append(len(data)) or g,
      evaluate=lambda model, g: {'loss': float(g)},
      synthesize=lambda model, g: [{'text': f'{g}-{i}'} for i in range(2)],
      describe=lambda recs: {'n': len(recs)})
  assert seen == [4, 6, 8]
  assert [r['provenance'] for r in rows][-1] == {'gen0': 2, 'gen1': 2, 'real': 4}
  assert rows[2]['loss'] == 2.0 and rows[2]['samples_n'] == 2


def test_dedup_removes_planted_duplicates_keeps_distinct():
  rng = np.random.default_rng(0)
  letters = np.array(list('abcdefghijklmnopqrstuvwxyz    '))
  base = [''.join(rng.choice(letters, 120)) for _ in range(20)]
  near = [b[:-1] + 'X' for b in base[:5]]  # one byte changed: near-duplicate
  texts = base + near + [base[7], ' '.join(base[3].split())]
  keep = quality.minhash_dedup(texts, threshold=0.7)
  assert keep == list(range(20))
  assert quality.exact_dedup(texts) == list(range(25))
  assert quality.jaccard(base[0], near[0]) > 0.8 > quality.jaccard(base[0], base[1])


def test_diversity_metrics_on_known_distributions():
  uniform = [bytes(range(256))]
  assert metrics.unigram_entropy(uniform) == pytest.approx(8.0)
  assert metrics.unigram_entropy(['aaaa']) == 0.0
  assert metrics.bigram_entropy(['abab' * 50]) == pytest.approx(1.0, abs=0.01)
  assert metrics.distinct_n(['abcd'], 2) == 1.0
  assert metrics.distinct_n(['aaaaa'], 2) == 0.25
  real = ['a' * 90 + 'b' * 8 + 'c' * 2]
  rare = metrics.rare_tokens(real, tail_mass=0.1)
  assert rare == frozenset({b'b', b'c'})
  assert metrics.rare_token_mass(real, rare) == pytest.approx(0.1)
  assert metrics.rare_token_mass(['aaaa'], rare) == 0.0
  assert metrics.kl_to_real(real, real) == pytest.approx(0.0, abs=1e-12)
  assert metrics.kl_to_real(['a' * 100], real) > metrics.kl_to_real(['a' * 89 + 'b' * 11], real)


def test_verifiers_accept_correct_and_reject_wrong():
  pairs = tasks.generate(50, 0, 'train')
  wrong = [(q, str((int(a) + 1) % 7)) for q, a in pairs]
  exact = quality.exact(tasks.check)
  assert all(exact(q, a) for q, a in pairs)
  assert not any(exact(q, a) for q, a in wrong)
  noisy = quality.NoisyVerifier(exact, false_reject=0.3, false_accept=0.3, seed=1)
  assert [noisy(q, a) for q, a in pairs] == [noisy(q, a) for q, a in pairs]
  big = tasks.generate(2000, 1, 'train')
  acc_right = np.mean([noisy(q, a) for q, a in big])
  acc_wrong = np.mean([noisy(q, str((int(a) + 1) % 7)) for q, a in big])
  assert 0.6 < acc_right < 0.8 and 0.2 < acc_wrong < 0.4
  kept, stats = quality.rejection_sample(
      lambda r: pairs[:10] + wrong[:10], exact, n_target=25, max_rounds=5)
  assert len(kept) == 25 and stats.proposed == 60 and all(exact(q, a) for q, a in kept)
  for q in transforms.augment_arithmetic([q for q, _ in pairs], 20, 0):
    assert any(tasks.check(q, str(v)) for v in range(7))  # a well-formed question


def test_self_revise_and_instruction_reversal():
  pairs = dict(tasks.generate(30, 2, 'train'))
  answers, rates = transforms.self_revise(
      list(pairs), lambda qs, r: [pairs[q] if (r >= 1 and i % 2) else 'x'
                                  for i, q in enumerate(qs)],
      quality.exact(tasks.check), rounds=2)
  assert rates[0] == 0.0 and rates[1] == pytest.approx(0.5, abs=0.05) and rates[2] > rates[1]
  fns = transforms.extract_functions('def f(a, b):\n  """Adds."""\n  return a + b\n\n'
                                     'def g(x):\n  return x\n')
  assert [f.name for f in fns] == ['f', 'g'] and fns[0].doc == 'Adds.'
  res = transforms.instruction_reversal(
      fns, lambda fs: ['doc'] * len(fs), lambda docs: ['def f(a, b):\n  pass', 'def h():'])
  assert res.tried == 2 and res.keep_rate == 0.5 and res.kept[0][1].name == 'f'


@pytest.fixture(scope='module')
def tiny_model():
  cfg = config_lib.build(tiny_config(model={'vocab_size': 384})).model
  variables = nn.unbox(jax.jit(transformer.Transformer(cfg).init)(
      jax.random.key(0), np.zeros((1, 4), np.int32)))
  return cfg, variables


def test_generation_is_deterministic_for_a_key(tiny_model):
  cfg, variables = tiny_model
  prompts = ['def f', 'import os', 'x = 1', 'def g', 'for i', 'a']
  kw = dict(max_new_tokens=8, sampling_cfg=sampling.SamplingConfig(1.0, top_p=0.9),
            batch_size=4, max_prompt_len=6)
  a = generate.sample(variables, cfg, prompts, jax.random.key(3), **kw)
  b = generate.sample(variables, cfg, prompts, jax.random.key(3), **kw)
  c = generate.sample(variables, cfg, prompts, jax.random.key(4), **kw)
  assert a == b and a != c and len(a) == len(prompts)
  assert all(isinstance(x, bytes) and len(x) <= 8 for x in a)
  # Left truncation keeps the last max_prompt_len tokens.
  assert list(generate.encode_prompt('abcdefgh', generate.tokenizer_lib.ByteTokenizer(), 3)) \
      == [ord('f'), ord('g'), ord('h')]


def test_written_records_feed_the_data_sources(tmp_path):
  recs = recursive.tag([{'text': f'sample {i}'} for i in range(10)], 'gen0')
  path = generate.write_jsonl(tmp_path / 'g0.jsonl', recs)
  assert generate.read_jsonl(path) == recs
  over = generate.data_overrides([path], val_fraction=0.0)
  cfg = config_lib.replace(config_lib.build(tiny_config()), **over)
  docs = sources.get_source(cfg.data, 'train')
  assert sorted(docs[i] for i in range(len(docs))) == sorted(
      r['text'].encode() for r in recs)
  ar = generate.write_arrayrecord(tmp_path / 'g0.array_record', recs)
  cfg = config_lib.replace(cfg, **generate.data_overrides([ar], val_fraction=0.0))
  docs = sources.get_source(cfg.data, 'train')
  assert json.loads(json.dumps(docs[3].decode())) == 'sample 3'


def test_gaussian_refit_variance_shrinks_in_expectation():
  n, gens = 20, 30
  rep = toy.gaussian_refit(n, gens, chains=4000, seed=0)
  want = toy.expected_var_replace(n, gens)
  np.testing.assert_allclose(rep['mean_var'][[0, 5, 15, 29]], want[[0, 5, 15, 29]], rtol=0.12)
  assert rep['median_var'][-1] < 0.4 and rep['median_tail_mass'][-1] < rep['median_tail_mass'][0]
  acc = toy.gaussian_refit(n, gens, chains=4000, seed=0, policy='accumulate')
  assert acc['mean_var'][-1] > 0.85
  lin = toy.linreg_collapse(d=5, T=20, sigma=1.0, generations=6, trials=400, seed=0)
  exp = toy.linreg_expected(5, 20, 1.0, 6)
  np.testing.assert_allclose(lin['replace'], exp['replace'], rtol=0.2)
  assert np.all(lin['accumulate'] <= 1.1 * exp['accumulate_bound'])


def test_held_out_split_never_shares_a_question_with_train():
  train = {q for q, _ in tasks.held_out_generate(3000, 0, 'train')}
  test = [(q, a) for q, a in tasks.held_out_generate(300, 0, 'test')]
  assert train and test and not train & {q for q, _ in test}
  assert all(tasks.is_test(q) for q, _ in test) and not any(map(tasks.is_test, train))
  assert all(tasks.held_out_check(q, a) for q, a in test)
  assert not tasks.held_out_check(test[0][0], str(int(test[0][1]) + 1))


def test_late_slope_fits_the_later_half():
  # 6 generations: the later half is the last 3 (flat), the first 3 climb.
  assert recursive.late_slope([1.0, 2.0, 3.0, 3.0, 3.0, 3.0]) == pytest.approx(0.0, abs=1e-12)
  assert recursive.late_slope([0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
  assert recursive.late_slope([5.0, 1.0, 2.0], n_last=2) == pytest.approx(1.0)
  with pytest.raises(ValueError, match='late_slope'):
    recursive.late_slope([1.0])
