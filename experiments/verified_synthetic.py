r"""Verified synthetic data: filtering a teacher's samples with a checker.

Papers: Abdin et al. 2024, "Phi-4 Technical Report" (arXiv 2412.08905), and Feng et
al. 2024, "Beyond Model Collapse: Scaling Up with Synthesized Data Requires
Verification" (arXiv 2406.07515).

Setup: a teacher LM on the checkable modular-arithmetic task (lattice.data.tasks,
e.g. '3+5*2-4 mod 7 = 2'; quick uses one operation, '3*5 mod 7 = 1': with up to
four, a 400-step 64-wide teacher stayed at chance, 14-18% accuracy). Questions are seeds from the task's train split plus
Phi-4-style templated rewrites of them (a number replaced, an identity '+0'/'*1'
appended). The teacher answers by sampling (temperature 1). Each arm keeps N
(question, answer) documents of equal count: all samples ('unfiltered'), those an
exact checker accepts (rejection sampling with self-revision: failed questions are
re-asked), or those a noisy verifier accepts (false reject 20%, false accept 30%).
Students of the teacher's size train on each set from scratch through the shared
train loop; each student is then the teacher of its arm's next generation.
Accuracy is exact-match of greedy answers on held-out test questions.

Commands:
  python -m lattice.main --config=experiments/verified_synthetic.py:smoke --workdir=runs/verified_smoke
  python -m lattice.main --config=experiments/verified_synthetic.py:quick --workdir=runs/verified
  python -m lattice.main --config=experiments/verified_synthetic.py:full  --workdir=runs/verified_full

Expected: exact- and noisy-filtered students above the unfiltered one; filtered
arms hold their accuracy over generations while unfiltered drifts down.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from lattice import config as config_lib
from lattice import experiment
from lattice.decode import sampling
from lattice.synth import generate, lm, quality, recursive, tasks, transforms
from lattice.train import flops

NAME = 'verified_synthetic'
PAPER = {'title': 'Beyond Model Collapse: Scaling Up with Synthesized Data Requires '
                  'Verification (Feng et al.); Phi-4 Technical Report',
         'arxiv': '2406.07515'}
CLAIM = ('a student trained on verifier-selected synthetic data beats one trained on '
         'the same amount of unselected data, and selection, even with a noisy '
         "verifier, prevents collapse when students become the next generation's "
         'teachers.')
EXACT = quality.exact(tasks.check)
# Prompts are right-aligned in a fixed width (the longest question, 4 operations
# plus an appended identity, is 20 bytes): sampling.generate takes equal-length
# prompts, so one width means one compilation per sampling setting.
WIDTH = 24
VERIFIERS = {'unfiltered': None, 'noisy': quality.NoisyVerifier(EXACT, 0.2, 0.3, seed=0),
             'exact': EXACT}


def _config(d_model, teacher_steps, steps, n_docs, gens, n_test, batch=16, seq=64,
            max_ops=1):
  c = experiment.lm_config(d_model, 2 if d_model > 32 else 1, max(d_model // 32, 1), seq,
                           batch, steps, 3e-3)
  c.data.eval_batches = 4
  c.train.progress, c.checkpoint.enabled = False, False
  c.verified = dict(teacher_steps=teacher_steps, n_docs=n_docs, generations=gens,
                    n_test=n_test, augment_fraction=0.5, temperature=1.0, max_ops=max_ops,
                    revise_rounds=1 if gens == 1 else 2, max_rounds=2 if gens == 1 else 6)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, teacher_steps=8, steps=6, n_docs=64, gens=1,
                               n_test=32, batch=8, seq=32),
      'quick': lambda: _config(d_model=64, teacher_steps=400, steps=300, n_docs=3072,
                               gens=2, n_test=512),
      'full': lambda: _config(d_model=256, teacher_steps=5000, steps=3000,
                              n_docs=100_000, gens=5, n_test=4096, batch=64, seq=128,
                              max_ops=4),
  })


def _prompt(question: str) -> str:
  return tasks.prompt_of(question).rjust(WIDTH)


def _doc(question: str, answer: str) -> dict[str, str]:
  return {'text': _prompt(question) + answer}


def _answers(out, questions, key, temperature, batch):
  prompts = [_prompt(q) for q in questions]
  new = lm.continue_texts(out, prompts, key, max_new_tokens=4, batch_size=batch,
                          sampling_cfg=sampling.SamplingConfig(temperature))
  return [a.strip() for a in new]


def accuracy(out, questions, batch) -> float:
  answers = _answers(out, questions, jax.random.key(0), 0.0, batch)
  return float(np.mean([tasks.check(q, a) for q, a in zip(questions, answers)]))


def _questions(v, rnd, seed):
  """Seeds from the task's train split plus templated rewrites of them."""
  n = v.n_docs
  seeds = [q for q, _ in tasks.generate(n, seed * 1000 + rnd, 'train', max_ops=v.max_ops)]
  n_aug = int(v.augment_fraction * n)
  augmented = transforms.augment_arithmetic(seeds, n_aug, seed * 1000 + rnd)
  return seeds[:n - n_aug] + [q for q in augmented if len(_prompt(q)) == WIDTH]


def synthesize(out, verifier, v, gen, batch):
  """N documents from `out`'s samples kept by `verifier` (None: all kept)."""
  stats = {}

  def propose(rnd):
    qs = _questions(v, rnd, gen)
    key = jax.random.fold_in(jax.random.key(gen), rnd)
    if verifier is EXACT:  # self-revision: failed questions are asked again
      ans, rates = transforms.self_revise(
          qs, lambda q, r: _answers(out, q, jax.random.fold_in(key, r), v.temperature,
                                    batch), verifier, v.revise_rounds)
      stats.setdefault('revision_pass_rates', rates)
    else:
      ans = _answers(out, qs, key, v.temperature, batch)
    return list(zip(qs, ans))

  kept, rs = quality.rejection_sample(propose, verifier, v.n_docs, v.max_rounds)
  correct = float(np.mean([tasks.check(q, a) for q, a in kept])) if kept else 0.0
  return ([_doc(q, a) for q, a in kept],
          {**stats, 'accept_rate': rs.accept_rate, 'data_correct': correct,
           'n_docs': len(kept)})


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  v, wd = config.verified, Path(workdir)
  peak = flops.measure_matmul_peak(n=512 if config.mode == 'smoke' else 0)
  base = config_lib.replace(config_lib.build(config), **{'train.flops_peak': peak})
  batch = min(256, v.n_docs)
  # Real data, written through the data layer: task train docs for the teacher,
  # held-out test docs for every model's real-data loss.
  real = generate.write_jsonl(wd / 'real' / 'train.jsonl', recursive.tag(
      [_doc(q, a) for q, a in tasks.generate(4 * v.n_docs, 0, 'train', max_ops=v.max_ops)],
      'real'))
  test = tasks.generate(v.n_test, 0, 'test', max_ops=v.max_ops)
  test_qs = [q for q, _ in test]
  held_out = generate.write_jsonl(wd / 'real' / 'test.jsonl', [_doc(q, a) for q, a in test])
  real_batches = lm.eval_batches(config_lib.replace(base, **generate.data_overrides(
      [held_out], val_fraction=0.999)).data, base.data.eval_batches)
  teacher = lm.train_on(config_lib.replace(base, **{'train.steps': v.teacher_steps}),
                        [real], wd / 'teacher')
  teacher_acc = accuracy(teacher, test_qs, batch)
  rows, outs = {}, {}
  for name, verifier in VERIFIERS.items():
    current, rows[name], outs[name] = teacher, [], []
    for g in range(1, v.generations + 1):
      docs, stats = synthesize(current, verifier, v, g, batch)
      if docs:
        path = generate.write_jsonl(wd / name / f'gen{g}' / 'train.jsonl',
                                    recursive.tag(docs, f'{name}_gen{g - 1}'))
        current = lm.train_on(base, [path], wd / name / f'gen{g}')
      else:  # nothing passed the verifier: no data, so no update (smoke's untrained teacher)
        stats['skipped'] = True
      outs[name].append(current)
      rows[name].append({'generation': g, 'accuracy': accuracy(current, test_qs, batch),
                         **lm.evaluate_on(current, real_batches), **stats})
      print(f'[verified] {name} gen {g}: {rows[name][-1]}')
  acc = {n: [r['accuracy'] for r in rows[n]] for n in rows}
  arms = [experiment.Arm(
      name='teacher', overrides={'train.steps': v.teacher_steps},
      metrics=experiment.aggregate([{'accuracy': teacher_acc, 'val_loss': teacher['val_loss']}]),
      params=int(teacher['params']), active_params=int(teacher['active_params']),
      train_flops=teacher['train_flops'], tokens=teacher['tokens'],
      wall_s=teacher['wall_s'], seeds=[0])]
  for n in rows:
    last = rows[n][-1]
    arms.append(experiment.Arm(
        name=n, overrides={'verifier': n}, metrics=experiment.aggregate([{
            'accuracy_gen1': acc[n][0], 'accuracy_last': acc[n][-1],
            'val_loss_real_last': last['val_loss_real'],
            'data_correct_gen1': rows[n][0]['data_correct'],
            'accept_rate_gen1': rows[n][0]['accept_rate']}]),
        params=int(outs[n][0]['params']), active_params=int(outs[n][0]['active_params']),
        train_flops=sum(o['train_flops'] for o in outs[n]),
        tokens=sum(o['tokens'] for o in outs[n]), wall_s=sum(o['wall_s'] for o in outs[n]),
        seeds=[0], extra={'per_generation': rows[n]}))
  fmt = lambda xs: np.round(xs, 3).tolist()
  checks = [
      experiment.check('exact-filtered student beats unfiltered', acc['exact'][0] > acc['unfiltered'][0],
                    f'gen-1 accuracy exact {acc["exact"][0]:.3f} vs unfiltered '
                    f'{acc["unfiltered"][0]:.3f} (teacher {teacher_acc:.3f})'),
      experiment.check('noisy-filtered student beats unfiltered', acc['noisy'][0] > acc['unfiltered'][0],
                    f'gen-1 accuracy noisy {acc["noisy"][0]:.3f} vs unfiltered '
                    f'{acc["unfiltered"][0]:.3f}'),
      experiment.check('filtering prevents collapse across generations',
                    min(acc['exact'][-1], acc['noisy'][-1]) > acc['unfiltered'][-1]
                    and acc['exact'][-1] >= acc['exact'][0] - 0.05,
                    f'accuracy by generation: exact {fmt(acc["exact"])}, noisy '
                    f'{fmt(acc["noisy"])}, unfiltered {fmt(acc["unfiltered"])}'),
  ]
  gens = list(range(0, v.generations + 1))
  plots = [experiment.plot_series(wd / 'accuracy.png',
                               {n: (gens, [teacher_acc] + acc[n]) for n in acc},
                               xlabel='generation (0: teacher)', ylabel='test accuracy',
                               title='students on verified vs unverified samples'),
           experiment.plot_series(wd / 'data_correct.png',
                               {n: (gens[1:], [r['data_correct'] for r in rows[n]])
                                for n in rows},
                               xlabel='generation', ylabel='fraction of training docs correct',
                               title='purity of each generation\'s synthetic data')]
  return experiment.finish(
      __name__, config, wd, arms=arms,
      checks=checks,
      headline={'paper': 'verified selection prevents collapse (Feng et al.); Phi-4 '
                         'filters all synthetic data by execution/verification',
                'ours': f'gen-1 accuracy exact {acc["exact"][0]:.3f}, noisy '
                        f'{acc["noisy"][0]:.3f}, unfiltered {acc["unfiltered"][0]:.3f}; '
                        f'last gen {acc["exact"][-1]:.3f} / {acc["noisy"][-1]:.3f} / '
                        f'{acc["unfiltered"][-1]:.3f} (teacher {teacher_acc:.3f})'},
      plots=plots,
      notes=f'task: {tasks.source_name()}')
