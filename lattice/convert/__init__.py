"""lattice.convert: Hugging Face checkpoints in (import_hf) and out (export_hf).

Owns the mapping between Hugging Face decoder checkpoints (Llama, Mistral,
Qwen2/3, Mixtral, Dots1 and BitNet b1.58 2B4T layouts; `hf_config`, `names`,
`ternary`) and
lattice's one decoder: importing streams safetensors one tensor at a time into an
Orbax train state and a run directory that `serve`, `sample` and
`train.init_from` read; exporting writes a plain float run back as a Hugging Face
directory. `lattice convert` is its command line (`cli`).
"""

from lattice.convert.exporter import export_hf
from lattice.convert.hf_config import ConvertError
from lattice.convert.hf_config import model_config
from lattice.convert.importer import import_hf
from lattice.convert.safetensors_reader import HFCheckpoint

__all__ = ['ConvertError', 'HFCheckpoint', 'export_hf', 'import_hf', 'model_config']
