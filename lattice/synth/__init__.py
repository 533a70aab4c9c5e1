"""lattice.synth: synthetic data generation, verification, dedup, diversity metrics,
and recursive-generation (model collapse) loops."""

from lattice.synth import generate, metrics, quality, recursive, tasks, toy, transforms
from lattice.synth.generate import (data_overrides, prompts_from_docs, read_jsonl, sample,
                                    write_arrayrecord, write_jsonl, write_records)
from lattice.synth.metrics import (diversity_report, distinct_n, kl_to_real, rare_token_mass,
                                   rare_tokens)
from lattice.synth.quality import NoisyVerifier, exact, minhash_dedup, rejection_sample
from lattice.synth.recursive import Policy, compose, provenance, run_generations
