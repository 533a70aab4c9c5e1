"""lattice.synth: synthetic data and recursive training on it.

Owns sampling datasets from trained models and writing them (`generate`),
verifiers, rejection sampling and MinHash dedup (`quality`), diversity and tail
metrics (`metrics`), Phi-4-style programmatic transformations (`transforms`), a
checkable arithmetic task (`tasks`), the generation schedule of model-collapse
loops, replace vs accumulate (`recursive`, Shumailov et al. 2024, Gerstgrasser et
al. 2024), their closed-form toy versions (`toy`), and the glue that trains each
generation through the one train loop (`lm`).
"""

from lattice.synth import generate, metrics, quality, recursive, tasks, toy, transforms
from lattice.synth.generate import (data_overrides, prompts_from_docs, read_jsonl, sample,
                                    write_arrayrecord, write_jsonl, write_records)
from lattice.synth.metrics import (diversity_report, distinct_n, kl_to_real, rare_token_mass,
                                   rare_tokens)
from lattice.synth.quality import NoisyVerifier, exact, minhash_dedup, rejection_sample
from lattice.synth.recursive import Policy, compose, provenance, run_generations

__all__ = ['NoisyVerifier', 'Policy', 'compose', 'data_overrides', 'distinct_n', 'diversity_report',
           'exact', 'generate', 'kl_to_real', 'metrics', 'minhash_dedup', 'prompts_from_docs',
           'provenance', 'quality', 'rare_token_mass', 'rare_tokens', 'read_jsonl', 'recursive',
           'rejection_sample', 'run_generations', 'sample', 'tasks', 'toy', 'transforms',
           'write_arrayrecord', 'write_jsonl', 'write_records']
