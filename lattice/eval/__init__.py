"""lattice.eval: standard evaluation of trained runs.

Owns what is measured after training, independent of any technique: execution-based
code evaluation (pass@k over HumanEval/MBPP-format problems in a sandboxed
subprocess, `lattice.eval.code`; sampled from a trained model,
`lattice.eval.code_samples`), teacher-forced draft acceptance of multi-token heads
(`lattice.eval.draft_acceptance`) and induction accuracy over training
(`lattice.eval.induction`).
"""
