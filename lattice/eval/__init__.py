"""lattice.eval: standard evaluation of trained runs.

Owns what is measured after training, independent of any technique: execution-based
code evaluation (pass@k over HumanEval/MBPP-format problems in a sandboxed
subprocess, `lattice.eval.code`).
"""
