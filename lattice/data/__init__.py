"""lattice.data: byte tokenizer, document sources and grain pipelines."""

from lattice.data.pipeline import describe
from lattice.data.pipeline import local_batch_size
from lattice.data.pipeline import make_eval_batches
from lattice.data.pipeline import make_train_iterator
from lattice.data.sources import DataError
from lattice.data.sources import get_source
from lattice.data.sources import register_source
from lattice.data.sources import stdlib_info
from lattice.data.tokenizer import ByteTokenizer
from lattice.data.tokenizer import padded_vocab_size
from lattice.data import tasks  # noqa: F401  (registers the generated-task sources)
