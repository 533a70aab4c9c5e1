r"""LLM-to-SLM conversion for tool calls, with grammar-constrained decoding.

Paper: Belcak et al. 2025, "Small Language Models are the Future of Agentic AI"
(arXiv 2506.02153); constrained decoding after Outlines (arXiv 2307.09702).

Steps: a "teacher" LM trains on all four tool-call clusters
(`lattice.data.tasks.toolcalls`); it answers `n_log` fresh requests (constrained
decoding: every logged call is a valid call); the logged requests are clustered by
the tool family the teacher called (paper §6: cluster the logged calls into tasks),
and test requests are routed to the nearest family centre of the logged requests'
hashed bag-of-words features (`lattice.agents.routing`); a base specialist trains
on every log, then one copy per cluster is fine-tuned on that cluster's logs (from
the base: "a small model pretrained on all logs"). All models decode greedily, with
and without the constraint, graded by the strict evaluator
(`lattice.agents.toolcall`). FLOPs per call: forward 2 x matmul params per token
plus attention scores and values, over the prompt and the generated call.

Pre-registered checks: (1) per cluster, the 95% paired bootstrap interval (over
that cluster's test requests) of specialists - teacher exact-call accuracy has its
lower bound above -0.10 on >= 2 of the 4 clusters, and the teacher reaches >= 80%
exact calls (else the comparison is void); (2) the same within 0.10 for picking
the right tool; (3) specialists cost <= 1/10 of the teacher's FLOPs per call;
(4) constrained decoding gives 100% schema-valid calls.

One example per training row (issue #20): `data.packing=first_fit` puts whole
examples into padded windows of 176+1 tokens and never splits one (byte-level
examples are 129 tokens on average, at most 170 with BOS/EOS, measured on 5,000
of them), so every argument a call copies is in the same row as its request. The
earlier quick teacher (400 steps, ConcatThenSplit windows of 128) reached 3.1%
exact calls.

Measured with 400 teacher steps and 300 / 150 specialist steps (quick, clean clone of
cc5fec7, the idle 2-core machine, load average 2.05 at the start and 1.87 at the
end): 1 min 52 s wall, 171 s summed arm time (each trained model is counted in
both its constrained and its free arm). NOT reproduced (2/4): the teacher picks the
right tool 100% of the time but writes 22.2% of calls exactly (calendar 35%, math
0%, search 57%, units 0%; its final training loss 0.170), short of the 80% that
makes the specialist comparison mean anything (void); specialists 1.5% exact, 89.5%
right tool, at 0.081x the teacher's FLOPs per call; constrained decoding 100%
schema-valid (free: teacher 98.8%, specialists 35.5%). The run used ~15% of the
1,200 s budget, so quick now trains 7x the teacher steps (2,800) and 4x the
specialists' (1,200 base, 600 per cluster).

Measured with those steps (quick, clean clone of 58009e6, the idle 2-core machine,
load average 1.61 at the start and 2.27 at the end): 7 min 35 s wall, 831 s summed
arm time (each model counted twice, as above). NOT reproduced (3/4). The teacher
reaches 51.0% exact calls (calendar 74%, math 5%, search 99%, units 32%; final
training loss 0.118), still short of 80%, so the specialist comparison stays void;
specialists 4.2% exact (calendar 7%, search 11%, math and units 0%) at 0.080x the
FLOPs, 98.8% right tool (within the tolerance: passes); constrained decoding 100%
schema-valid (free: teacher 99.8%, specialists 95.8%). Per cluster the teacher
ranges from 99% (search: a topic from a fixed list) to 5% (math: two free-form
operands, integers below 1,000 or one-decimal numbers); 7x the steps moved search
from 57% to 99% but math only from 0% to 5%, so the operand copying is what this
0.37M-parameter byte model has not learned in the budget (not examined further
here). What would reach the 80% teacher: a teacher fine-tuned from a pretrained
model (medium), or a larger quick teacher if the budget allows.

Commands:
  python -m lattice.main --config=experiments/slm_agents.py:smoke  --workdir=runs/slm_smoke
  python -m lattice.main --config=experiments/slm_agents.py:quick  --workdir=runs/slm_agents
  lattice convert hf --from Qwen/Qwen2.5-1.5B-Instruct --out runs/qwen2.5-1.5b-instruct
  lattice convert hf --from Qwen/Qwen2.5-0.5B-Instruct --out runs/qwen2.5-0.5b-instruct
  python -m lattice.main --config=experiments/slm_agents.py:medium --workdir=runs/slm_medium
  python -m lattice.main --config=experiments/slm_agents.py:full   --workdir=runs/slm_full

medium / full: the teacher is Qwen2.5-1.5B-Instruct and every specialist starts
from Qwen2.5-0.5B-Instruct (imported with `lattice convert hf`; the modes' model
sections hold their dimensions, lattice/agents/open_models.py, so `lattice plan`
prices them offline), fine-tuned on the calls with the Qwen2.5 tokenizer (calls
decode over its pieces, lattice/agents/calls.py). These fine-tune pretrained models,
so the pretraining rule of >= 20 tokens per parameter does not apply; the 0.5B/1.5B
FLOPs ratio (~1/3) is above the quick mode's 1/10 bound by construction. Not run
here (no weights can be downloaded on this machine). From `lattice plan --chips
h100x1` (not run; it prices the teacher's fine-tune): medium 1.54B params, 2.82M
tokens, 0.019 H100-hours; full 11.3M tokens, 0.074 H100-hours.

Expected: constrained calls 100% schema-valid for every model (by construction);
specialists within 10 points of a capable teacher on >= 2 clusters at <= 1/10 of its
FLOPs per call. Earlier quick result (k-means clusters, specialists from scratch;
results/slm_agents): teacher 98.8% right tool, 3.1% exact calls; not reproduced.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import numpy as np

from lattice import config as config_lib
from lattice import experiment, sharding
from lattice.agents import calls, open_models, routing, toolcall
from lattice.data.tasks import toolcalls
from lattice.run import bootstrap
from lattice.train import loop

NAME = 'slm_agents'
PAPER = {'title': 'Small Language Models are the Future of Agentic AI',
         'arxiv': '2506.02153'}
CLAIM = ("most agent calls are narrow; logging a large model's calls, clustering the "
         'requests into tasks and fine-tuning a small specialist per cluster on the '
         'logged calls gives specialists that match the large model on their clusters '
         'at a fraction of its cost; compiling the call schema into the decoder gives '
         '100% schema-valid calls.')
# Non-inferiority margin per cluster: the specialists' exact-call accuracy may trail
# the teacher's by at most this (lower 95% bootstrap bound of the difference).
TOLERANCE = 0.10
MIN_CLUSTERS = 2     # "within the margin on >= 2 of the 4 clusters" (issue #20)
# Below this the teacher is too weak for "the specialists match it" to mean anything
# (issue #20: a teacher at >= 80% exact calls).
MIN_TEACHER_ACCURACY = 0.8
MAX_FLOPS_RATIO = 0.1  # "at <= 1/10 of the FLOPs per call" (the issue's check).


def _config(teacher, specialist, steps, spec_steps, batch, n_log, n_test, max_new,
            gen_batch=64, open_teacher='', open_specialist=''):
  d, n_layers, heads = teacher
  # One whole example per window (first-fit packing): the longest byte-level
  # example is 170 tokens with BOS/EOS, so windows of 176+1 hold every one.
  c = experiment.lm_config(d, n_layers, heads, 176, batch, steps, 3e-3, max_len=192,
                           log_points=10, checkpoints=1)
  c.data.source = 'toolcalls'
  c.data.packing = 'first_fit'
  c.data.eval_batches = 4
  c.specialist = dict(d_model=specialist[0], n_layers=specialist[1],
                      n_heads=specialist[2], base_steps=spec_steps,
                      steps=max(spec_steps // 2, 1), init_from='')
  if open_teacher:  # medium / full: imported instruction models, fine-tuned
    c.model.update(open_models.model_section(open_teacher, max_len=256))
    c.data.tokenizer = open_models.OPEN_MODELS[open_teacher].tokenizer
    c.optimizer.lr = 1e-5
    c.train.init_from = f'runs/{open_teacher}'
    c.specialist.init_from = f'runs/{open_specialist}'
  c.agents = dict(n_log=n_log, n_test=n_test, max_new=max_new,
                  gen_batch=gen_batch)
  return c


def _open(teacher, specialist, steps, spec_steps):
  t, s = open_models.OPEN_MODELS[teacher], open_models.OPEN_MODELS[specialist]
  return dict(teacher=(t.d_model, t.n_layers, t.n_heads),
              specialist=(s.d_model, s.n_layers, s.n_heads), steps=steps,
              spec_steps=spec_steps, batch=32, n_log=8192, n_test=2048,
              max_new=96, gen_batch=64, open_teacher=teacher, open_specialist=specialist)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(teacher=(32, 1, 2), specialist=(16, 1, 2), steps=3,
                               spec_steps=2, batch=8, n_log=16, n_test=16,
                               max_new=48, gen_batch=16),
      'quick': lambda: _config(teacher=(96, 3, 4), specialist=(32, 1, 2), steps=2800,
                               spec_steps=1200, batch=16, n_log=1024, n_test=400,
                               max_new=112),
      # A 1.5B teacher, 0.5B specialists, both imported instruction models
      # (`lattice convert hf --from Qwen/Qwen2.5-1.5B-Instruct --out
      # runs/qwen2.5-1.5b-instruct`, and the same for 0.5B) fine-tuned on the calls.
      'medium': lambda: _config(**_open('qwen2.5-1.5b-instruct', 'qwen2.5-0.5b-instruct',
                                        steps=500, spec_steps=200)),
      'full': lambda: _config(**_open('qwen2.5-1.5b-instruct', 'qwen2.5-0.5b-instruct',
                                      steps=2000, spec_steps=1000)),
  })


def answer(cfg, variables, requests: list[str], constrained: bool, ev) -> list[str]:
  return calls.answer(cfg, variables, requests, constrained=constrained,
                      batch=ev['gen_batch'], max_new=ev['max_new'])


def flops_per_call(out, prompt_len: int, call_bytes: float) -> float:
  return calls.flops_per_call(out.state.params, out.setup.cfg.model, prompt_len,
                              call_bytes, out.setup.param_axes)


def _train(cfg: config_lib.Config, workdir: Path) -> loop.RunOutput:
  out = loop.train_and_evaluate(cfg, workdir)
  if out.metrics['preempted']:
    # SIGTERM: the checkpoint is saved; later stages must not run on a partly
    # trained model (a rerun resumes every stage).
    raise SystemExit(f'[lattice] slm_agents: preempted while training {workdir}')
  out.variables = sharding.to_host(out.state.variables)  # host copy for decoding
  return out


def _grade(texts, examples) -> list[toolcall.Verdict]:
  return [toolcall.evaluate_call(t, e.call) for t, e in zip(texts, examples)]


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  ev, sp = dict(config.agents), dict(config.specialist)
  wd = Path(workdir)
  cfg = config_lib.build(config)
  teacher = _train(cfg, wd / 'teacher')
  tcfg = teacher.setup.cfg
  # 1. Log the teacher's (constrained, hence valid) calls on fresh requests.
  logs = toolcalls.generate(ev['n_log'], 1, 'train')
  logged = answer(tcfg, teacher.variables, [e.request for e in logs], True, ev)
  # 2. Clusters by logged tool: the tool family of each logged call; test requests
  # go to the nearest family centre of the logged requests' features.
  names = list(toolcalls.CLUSTERS)
  labels = np.asarray([names.index(_family(t)) for t in logged])
  centroids = routing.label_centres([e.request for e in logs], labels, len(names))
  # 3. A base specialist on every log, then one fine-tuned copy per cluster.
  (wd / 'logs').mkdir(parents=True, exist_ok=True)

  def log_file(name, rows):
    path = wd / 'logs' / f'{name}.jsonl'
    with open(path, 'w') as f:
      for i in rows:
        f.write(json.dumps({'text': toolcalls.prompt_of(logs[i].request) + logged[i]})
                + '\n')
    return str(path)

  def specialist_cfg(path, steps, init_from):
    # From scratch (or the imported small model, whose own model section then
    # replaces these dims) for the base; from the base for each cluster.
    return config_lib.replace(cfg, **{
        'model.d_model': sp['d_model'], 'model.n_layers': sp['n_layers'],
        'model.attention.n_heads': sp['n_heads'],
        'model.attention.n_kv_heads': sp['n_heads'], 'train.steps': steps,
        'train.init_from': init_from, 'data.source': 'jsonl', 'data.paths': path,
        'checkpoint.every': steps, 'train.log_every': max(steps // 10, 1)})

  base = _train(specialist_cfg(log_file('all', range(len(logs))), sp['base_steps'],
                               sp['init_from']), wd / 'specialist_base')
  specialists = []
  for j, name in enumerate(names):
    rows = np.flatnonzero(labels == j)
    if not len(rows):  # the teacher never called this family: the base serves it
      specialists.append(base)
      continue
    specialists.append(_train(specialist_cfg(log_file(f'cluster_{name}', rows),
                                             sp['steps'], str(wd / 'specialist_base')),
                              wd / f'specialist_{name}'))
  # 4. Test: teacher vs routed specialists, with and without the constraint.
  test = toolcalls.generate(ev['n_test'], 2, 'test')
  requests = [e.request for e in test]
  routed = routing.route(requests, centroids)
  prompt_len = len(toolcalls.prompt_of('')) + 1
  rows = {}
  for constrained in (True, False):
    tag = 'constrained' if constrained else 'free'
    t_texts = answer(tcfg, teacher.variables, requests, constrained, ev)
    s_texts = [''] * len(test)
    for j, s in enumerate(specialists):
      idx = np.flatnonzero(routed == j)
      if len(idx):
        texts = answer(s.setup.cfg, s.variables, [requests[i] for i in idx],
                       constrained, ev)
        for i, t in zip(idx, texts):
          s_texts[i] = t
    for name, texts, models in (('teacher', t_texts, [teacher]),
                                ('specialists', s_texts, specialists)):
      verdicts = _grade(texts, test)
      per = {c: toolcall.summarize([v for v, e in zip(verdicts, test) if e.cluster == c])
             ['accuracy'] for c in toolcalls.CLUSTERS}
      mean_len = float(np.mean([len(t.encode()) for t in texts]))
      fl = (flops_per_call(teacher, prompt_len, mean_len) if name == 'teacher' else
            float(np.mean([flops_per_call(specialists[j], prompt_len, len(t.encode()))
                           for j, t in zip(routed, texts)])))
      rows[f'{name}_{tag}'] = dict(toolcall.summarize(verdicts), flops_per_call=fl,
                                   **{f'acc_{c}': a for c, a in per.items()},
                                   models=models,
                                   correct=[v.error is None for v in verdicts])
  return _report(config, wd, rows, teacher, specialists, logs, labels, routed, test)


def _family(call_text: str) -> str:
  """The tool family (a toolcalls.CLUSTERS key) of a logged call; the first family
  when the call does not parse (constrained calls always do)."""
  try:
    return toolcalls.CLUSTER_OF[json.loads(call_text)['name']]
  except (ValueError, KeyError, TypeError):
    return next(iter(toolcalls.CLUSTERS))


def _purity(labels, examples) -> float:
  hits = 0
  for j in set(labels.tolist()):
    true = [examples[i].cluster for i in np.flatnonzero(labels == j)]
    hits += max(true.count(c) for c in set(true))
  return hits / len(examples)


def _report(config, wd, rows, teacher, specialists, logs, labels, routed, test):
  arms = []
  correct = {}
  for name, r in rows.items():
    models = r.pop('models')
    correct[name] = r.pop('correct')
    arms.append(experiment.Arm(
        name=name, overrides={}, metrics=experiment.aggregate([r]),
        params=sum(int(m['params']) for m in models),
        active_params=int(models[0]['active_params']),
        train_flops=sum(float(m['train_flops']) for m in models),
        tokens=sum(int(m['tokens']) for m in models),
        wall_s=sum(float(m['wall_s']) for m in models), seeds=[0]))
  tc, sc = rows['teacher_constrained'], rows['specialists_constrained']
  tf, sf = rows['teacher_free'], rows['specialists_free']
  ratio = sc['flops_per_call'] / tc['flops_per_call']
  per_cluster = []
  for c in toolcalls.CLUSTERS:
    idx = [i for i, e in enumerate(test) if e.cluster == c]
    if len(idx) < 2:
      per_cluster.append((c, False, f'{c}: {len(idx)} test requests, too few'))
      continue
    ci = bootstrap.paired([float(correct['specialists_constrained'][i]) for i in idx],
                          [float(correct['teacher_constrained'][i]) for i in idx])
    per_cluster.append((c, ci['lo'] > -TOLERANCE,
                        f'{c} {ci["diff"]:+.3f} [{ci["lo"]:+.3f}, {ci["hi"]:+.3f}] '
                        f'(n={ci["n"]})'))
  close = sum(ok for _, ok, _ in per_cluster)
  meaningful = tc['accuracy'] >= MIN_TEACHER_ACCURACY
  checks = [
      experiment.check(
          f'specialists within {TOLERANCE:.0%} of a capable teacher on >= '
          f'{MIN_CLUSTERS} of {len(toolcalls.CLUSTERS)} clusters',
          meaningful and close >= MIN_CLUSTERS,
          f'exact-call accuracy, constrained, specialists - teacher per cluster with '
          f'95% paired bootstrap CIs over its test requests: '
          + '; '.join(d for _, _, d in per_cluster) + f'; {close} cluster(s) have the '
          f'lower bound above -{TOLERANCE:.2f}, {MIN_CLUSTERS} needed; the teacher must '
          f'reach {MIN_TEACHER_ACCURACY:.0%} exact calls for the comparison to mean '
          f'anything (it has {tc["accuracy"]:.1%}{"" if meaningful else ": void"})'),
      experiment.check('specialists pick the teacher\'s tools within the tolerance',
                    sc['tool_accuracy'] >= tc['tool_accuracy'] - TOLERANCE,
                    f'valid call of the right tool (any arguments), constrained: '
                    f'specialists {sc["tool_accuracy"]:.1%} vs teacher '
                    f'{tc["tool_accuracy"]:.1%}'),
      experiment.check('specialists cost <= 1/10 of the teacher per call',
                    ratio <= MAX_FLOPS_RATIO,
                    f'{sc["flops_per_call"]:.3g} vs {tc["flops_per_call"]:.3g} FLOPs per '
                    f'call: {ratio:.3f}x'),
      experiment.check('constrained decoding gives 100% schema-valid calls',
                    tc['schema_valid'] == 1.0 and sc['schema_valid'] == 1.0,
                    f'constrained: teacher {tc["schema_valid"]:.1%}, specialists '
                    f'{sc["schema_valid"]:.1%}; unconstrained: teacher '
                    f'{tf["schema_valid"]:.1%}, specialists {sf["schema_valid"]:.1%}'),
  ]
  plots = [experiment.plot_bars(
      f'{wd}/accuracy.png', {n: r['accuracy'] for n, r in rows.items()}, None,
      ylabel='exact-call accuracy', title='tool calls: teacher vs routed specialists')]
  table = ['| model | decoding | accuracy | right tool | schema-valid | FLOPs/call | '
           + ' | '.join(toolcalls.CLUSTERS) + ' |',
           '|---|---|---:|---:|---:|---:|' + '---:|' * len(toolcalls.CLUSTERS)]
  for n, r in rows.items():
    who, how = n.split('_')
    table.append(f'| {who} | {how} | {r["accuracy"]:.1%} | {r["tool_accuracy"]:.1%} | '
                 f'{r["schema_valid"]:.1%} | '
                 f'{r["flops_per_call"]:.3g} | ' + ' | '.join(
                     f'{r["acc_" + c]:.0%}' for c in toolcalls.CLUSTERS) + ' |')
  seen = {e.request for e in logs}
  notes = ('Accuracy per cluster vs FLOPs per call:\n\n' + '\n'.join(table) + '\n\n'
           f'Routing purity (cluster = the tool family the teacher called) on the '
           f'logged requests: {_purity(labels, logs):.1%}; on '
           f'routed test requests: {_purity(routed, test):.1%}. Test requests also in '
           f'the log: {np.mean([e.request in seen for e in test]):.1%} (the request '
           f'space of some tools is small). Teacher params {teacher["params"]}, '
           f'specialist params {specialists[0]["params"]} each. Each specialist is '
           f'the base specialist (trained on every logged call) fine-tuned on its '
           f'cluster\'s logged calls.')
  return experiment.finish(
      __name__, config, wd, arms=arms,
      checks=checks,
      headline={'paper': 'specialists replace the LLM on 40-70% of calls; '
                         'constrained decoding 100% valid',
                'ours': f'exact calls: specialists {sc["accuracy"]:.0%} vs teacher '
                        f'{tc["accuracy"]:.0%}, right tool {sc["tool_accuracy"]:.0%} vs '
                        f'{tc["tool_accuracy"]:.0%}, at {ratio:.2f}x FLOPs; valid '
                        f'{sc["schema_valid"]:.0%} constrained vs '
                        f'{sf["schema_valid"]:.0%} free'},
      plots=plots,
      notes=notes)
