"""lattice: composable LLM techniques in JAX/Flax, each backed by paper reproductions.

The folders are the architecture. `config` turns an experiment's ConfigDict into
typed, validated sections; `model.make_model` composes one decoder from an input
stage (`multimodal`), the trunk (`nn`, whose projections come from `quant` and
whose FFN may be `moe`) and output heads (`mtp`); `data` feeds it; `train` runs
the one loop; `run` and `experiment` turn arms x seeds into a Result with
pre-registered checks; `decode`, `serve`, `sample`, `eval`, `convert`, `synth` and
`agents` use trained runs. Each technique plugs in as one file plus one line in
its concern's literal table (README, "Adding a technique").
"""

__version__ = '0.1.0'
