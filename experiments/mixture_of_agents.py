r"""Mixture-of-Agents, Self-MoA and their variants with small trained models.

Papers: Wang et al. 2024, "Mixture-of-Agents Enhances Large Language Model
Capabilities" (arXiv 2406.04692); Li et al. 2025, "Rethinking Mixture-of-Agents: Is
Mixing Different Large Language Models Beneficial?" (arXiv 2502.00674); RMoA (arXiv
2505.24442); Attention-MoA (arXiv 2601.16596).

Claim: an aggregator reading several proposers' answers beats the best single
proposer (MoA, AlpacaEval 2.0 LC 65.1 vs GPT-4o 57.5), and when proposer quality
differs strongly, aggregating samples of the best proposer alone (Self-MoA) beats
mixing proposers (+6.6 AlpacaEval LC): quality matters more than diversity.

Setup (no instruction-tuned models here): proposers of different quality (training
steps, sizes, seeds) learn fixed-width 2-digit addition (`lattice.agents.arith_task`,
exact answers); an aggregator learns to read [question; candidate answers] and write
the answer, from candidates made by corrupting true answers. Methods over the same
held-out questions: each proposer alone (greedy), majority vote, MoA with 1-3
layers (later layers are aggregator samples), Self-MoA (the best proposer sampled n
times), Self-MoA-Seq (window 3), RMoA (k diverse answers, residual, early stop) and
Attention-MoA (critique, refine, early stop); plus MoA over mixes of decreasing
quality for the quality-diversity plot.

Commands:
  python -m lattice.main --config=experiments/mixture_of_agents.py:smoke --workdir=runs/moa_smoke
  python -m lattice.main --config=experiments/mixture_of_agents.py:quick --workdir=runs/moa
  python -m lattice.main --config=experiments/mixture_of_agents.py:full  --workdir=runs/moa_full

Expected: MoA (1 layer) above the best proposer's greedy accuracy; Self-MoA above
mixed MoA when the proposers' accuracies are far apart.
"""

from __future__ import annotations

import itertools
import time

import jax
import ml_collections

from lattice import experiment, results
from lattice.agents import arith_task as task
from lattice.agents import generator as generator_lib
from lattice.agents import moa
from lattice.train import loop

PAPER = {'title': 'Mixture-of-Agents Enhances Large Language Model Capabilities; '
                  'Rethinking Mixture-of-Agents (Self-MoA)', 'arxiv': '2406.04692'}
MAX_TOKENS = task.ANSWER_WIDTH + 1


def _config(d, proposers, agg_steps, n_eval, lr, gen_batch, agg_layers=2, peak=0.0):
  c = experiment.lm_config(d, 2, 4, 32, 32, max(p[3] for p in proposers if len(p) == 5), lr,
                           warmup=10, max_len=64)
  c.data.source = 'moa_arith'
  c.data.eval_batches = 4 if n_eval > 8 else 1
  c.train.progress = False
  c.train.flops_peak = peak  # smoke: a nominal peak, skipping the matmul timing
  # [name, d_model, n_layers, steps, seed]: quality comes from steps, size and seed;
  # or [name, parent, step]: the parent run's checkpoint at that step (no training).
  c.proposers = [list(p) for p in proposers]
  c.aggregator = dict(steps=agg_steps, d_model=d, n_layers=agg_layers)
  c.n_eval, c.temperature, c.n_samples, c.window, c.k = n_eval, 0.5, 4, 3, 3
  c.gen_batch = gen_batch  # decode rows per call: one compiled shape per model
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(32, [('strong', 32, 1, 30, 0), ('weak', 'strong', 10)],
                               20, 8, 3e-3, 32, agg_layers=1, peak=1e11),
      'quick': lambda: _config(64, [('strong', 64, 2, 1200, 0), ('mid', 64, 2, 450, 1),
                                    ('weak', 64, 2, 250, 2), ('small', 32, 1, 400, 3)],
                               600, 200, 6e-3, 128),
      'full': lambda: _config(128, [('strong', 128, 2, 4000, 0), ('mid', 128, 2, 1500, 1),
                                    ('weak', 64, 2, 800, 2), ('small', 64, 1, 800, 3)],
                              3000, 1000, 3e-3, 512),
  })


def _train(config, workdir, name, overrides, seed):
  steps = overrides.pop('steps')
  snapshots = [p[2] for p in config.proposers if len(p) == 3 and p[1] == name]
  if snapshots:  # keep the checkpoints that snapshot proposers restore
    overrides.update({'checkpoint.every': min(snapshots),
                      'checkpoint.keep': steps // min(snapshots) + 1})
  cfg = experiment.arm_config(config, {'train.steps': steps, **overrides}, seed)
  print(f'[lattice] training {name}')
  out = loop.train_and_evaluate(cfg, f'{workdir}/{name}')
  gen = generator_lib.LatticeGenerator(jax.device_get(out['state'].variables),
                                       out['setup'].cfg.model, seed=seed, name=name,
                                       batch_size=config.gen_batch)
  return gen, out


def _acc(questions, answers):
  return sum(task.is_correct(q, a) for q, a in zip(questions, answers)) / len(questions)


def _disagreement(layer):
  """Mean over questions and agent pairs of answers that differ."""
  pairs = [(a != b) for ans in layer for a, b in itertools.combinations(ans, 2)]
  return sum(pairs) / max(len(pairs), 1)


def run(config: ml_collections.ConfigDict, workdir: str) -> results.Result:
  gens, arms = {}, []
  for name, d, n_layers, steps, seed in (p for p in config.proposers if len(p) == 5):
    gens[name], out = _train(config, workdir, name, {
        'steps': steps, 'model.d_model': d, 'model.n_layers': n_layers}, seed)
    arms.append((name, out, {'model.d_model': d, 'model.n_layers': n_layers,
                             'train.steps': steps, 'train.seed': seed}))
  for name, parent, step in (p for p in config.proposers if len(p) == 3):
    gens[name] = generator_lib.LatticeGenerator.from_workdir(
        f'{workdir}/{parent}', step=step, name=name, batch_size=config.gen_batch)
    out = dict(next(o for n, o, _ in arms if n == parent))
    out['tokens'] = out['tokens'] * step // out['steps']
    out['train_flops'] = out['train_flops'] * step // out['steps']
    out.update(val_loss=None, wall_s=0.0)  # not evaluated separately; no training
    arms.append((name, out, {'snapshot_of': parent, 'train.steps': step}))
  a = config.aggregator
  agg, out = _train(config, workdir, 'aggregator', {
      'steps': a.steps, 'model.d_model': a.d_model, 'model.n_layers': a.n_layers,
      'data.source': 'moa_aggregate', 'data.seq_len': 64}, 0)
  arms.append(('aggregator', out, {'data.source': 'moa_aggregate',
                                   'train.steps': a.steps}))

  qs = task.eval_questions(config.n_eval)
  T, n, kw = config.temperature, config.n_samples, dict(max_tokens=MAX_TOKENS)
  fmt = task.aggregate_prompt
  t0 = time.perf_counter()
  single = {g: _acc(qs, moa.single(qs, gens[g], **kw).answers) for g in gens}
  ranked = sorted(gens, key=lambda g: -single[g])
  best = ranked[0]
  mixed = [gens[g] for g in ranked]
  refiners = [agg] * len(mixed)
  traces = {
      'majority_vote (mixed, greedy)': moa.majority_vote(qs, mixed, **kw),
      f'majority_vote (self x{n})': moa.majority_vote(qs, [gens[best]] * n,
                                                      temperature=T, **kw),
      'aggregator alone (no answers)': moa.single(
          [fmt(q, []) for q in qs], agg, **kw),
  }
  for layers in (1, 2, 3):
    traces[f'moa_{layers}'] = moa.moa(qs, [mixed] + [refiners] * (layers - 1), agg,
                                      fmt=fmt, temperature=T, **kw)
  traces[f'self_moa (x{n})'] = moa.self_moa(qs, gens[best], agg, n=n, fmt=fmt,
                                            temperature=T, **kw)
  m = task.MAX_CANDIDATES
  traces[f'self_moa_seq (x{m}, window {config.window})'] = moa.self_moa_seq(
      qs, gens[best], agg, n=m, window=config.window, fmt=fmt, temperature=T, **kw)
  traces[f'rmoa (k={config.k})'] = moa.rmoa(qs, mixed, refiners, agg, k=config.k,
                                            max_layers=3, fmt=fmt, temperature=T, **kw)
  traces['attention_moa'] = moa.attention_moa(
      qs, refiners, proposers=mixed, max_layers=3, aggregator=agg, fmt=fmt,
      critique_fmt=lambda q, own, others: fmt(q, [own, *others]),
      refine_fmt=lambda q, own, others, crit: fmt(q, [crit, own, *others]),
      temperature=T, **kw)
  acc = {k: _acc(qs, t.answers) for k, t in traces.items()}

  # Quality vs diversity: MoA (1 layer) over mixes from all-best to all-different.
  mixes = {f'{best} x{n}': [gens[best]] * n}
  for j in range(1, len(ranked)):
    mixes['+'.join(ranked[:j + 1])] = [gens[g] for g in ranked[:j + 1]] + [
        gens[best]] * (n - j - 1)
  sweep = []
  for label, members in mixes.items():
    tr = moa.moa(qs, [members], agg, fmt=fmt, temperature=T, **kw)
    sweep.append(dict(mix=label, quality=sum(single[g.name] for g in members) / n,
                      diversity=_disagreement(tr.layers[0]), moa=_acc(qs, tr.answers)))
  eval_s = time.perf_counter() - t0

  result_arms = [results.Arm(
      name=name, overrides=ov,
      metrics=results.aggregate([{
          **({'val_loss': float(o['val_loss'])} if o['val_loss'] is not None else {}),
          **({'accuracy': single[name]} if name in single else {})}]),
      params=int(o['params']), active_params=int(o['active_params']),
      train_flops=float(o['train_flops']), tokens=int(o['tokens']),
      wall_s=float(o['wall_s']), seeds=[ov.get('train.seed', 0)])
      for name, o, ov in arms]
  checks = [
      results.check('MoA beats the best single proposer',
                    acc['moa_1'] > single[best],
                    f'MoA (1 layer, {len(mixed)} mixed proposers) accuracy '
                    f'{acc["moa_1"]:.3f} vs best single ({best}, greedy) '
                    f'{single[best]:.3f}; 2/3 layers {acc["moa_2"]:.3f}/'
                    f'{acc["moa_3"]:.3f}'),
      results.check('Self-MoA beats mixed MoA when proposer quality differs strongly',
                    acc[f'self_moa (x{n})'] > acc['moa_1'],
                    f'Self-MoA ({best} x{n}) {acc[f"self_moa (x{n})"]:.3f} vs mixed MoA '
                    f'{acc["moa_1"]:.3f}; proposer accuracies ' + ', '.join(
                        f'{g} {single[g]:.3f}' for g in ranked)),
  ]
  rows = ['| method | accuracy | completions | mean layers |', '|---|---|---|---|']
  rows += [f'| single: {g} (greedy) | {single[g]:.3f} | {len(qs)} | 1 |' for g in ranked]
  rows += [f'| {k} | {acc[k]:.3f} | {t.calls} | {t.mean_layers:.2f} |'
           for k, t in traces.items()]
  rows += ['', '| mix (MoA, 1 layer) | mean proposer accuracy | disagreement | MoA '
           'accuracy |', '|---|---|---|---|']
  rows += [f'| {s["mix"]} | {s["quality"]:.3f} | {s["diversity"]:.3f} | '
           f'{s["moa"]:.3f} |' for s in sweep]
  notes = (f'{len(qs)} held-out questions; sampling temperature {T}; evaluation took '
           f'{eval_s:.0f} s.\n\n' + '\n'.join(rows))
  by_quality = sorted(sweep, key=lambda s: s['quality'])
  plots = [
      results.plot_bars(f'{workdir}/methods.png',
                        {**{f'single {g}': single[g] for g in ranked}, **acc}, None,
                        ylabel='exact-match accuracy', title='MoA methods'),
      results.plot_series(f'{workdir}/quality_diversity.png', {
          'MoA accuracy': ([s['quality'] for s in by_quality],
                           [s['moa'] for s in by_quality]),
          'proposer disagreement': ([s['quality'] for s in by_quality],
                                    [s['diversity'] for s in by_quality])},
          xlabel='mean proposer accuracy of the mix (quality)', ylabel='value',
          title='MoA vs proposer quality and diversity'),
  ]
  result = results.Result(
      experiment='mixture_of_agents', paper=PAPER,
      claim=__doc__.split('Claim: ')[1].split('\n\n')[0].replace('\n', ' '),
      mode=config.mode, arms=result_arms, checks=checks,
      headline={'paper': 'MoA 65.1 vs GPT-4o 57.5 (AlpacaEval 2.0 LC); Self-MoA +6.6 '
                         'over mixed MoA',
                'ours': f'MoA {acc["moa_1"]:.3f} vs best single {single[best]:.3f}; '
                        f'Self-MoA {acc[f"self_moa (x{n})"]:.3f} vs mixed MoA '
                        f'{acc["moa_1"]:.3f} (exact match)'},
      plots=plots, notes=notes, env=experiment.result_env(config))
  result.write(workdir)
  return result
