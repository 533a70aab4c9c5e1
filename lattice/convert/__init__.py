"""lattice.convert: Hugging Face checkpoints in (import_hf) and out (export_hf)."""

from lattice.convert.exporter import export_hf
from lattice.convert.hf_config import ConvertError
from lattice.convert.hf_config import model_config
from lattice.convert.importer import import_hf
from lattice.convert.safetensors_reader import HFCheckpoint
