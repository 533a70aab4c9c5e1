"""lattice.data: tokenizer, data sources and the batches a config trains on.

Owns the byte tokenizer, the document sources (`sources.SOURCES`: files, JSONL,
ArrayRecord, HF datasets, the standard library's source and the generated tasks of
`tasks/`), the grain pipelines that pack documents into rows, and the batch sources
that build whole batches (`batches.BATCH_SOURCES`: `shapes`, interleaved image+text
rows). `batches.make_data(cfg, tok)` is what a run reads.
"""

from lattice.data.pipeline import describe
from lattice.data.pipeline import local_batch_size
from lattice.data.pipeline import make_eval_batches
from lattice.data.pipeline import make_train_iterator
from lattice.data.sources import SOURCES
from lattice.data.sources import DataError
from lattice.data.sources import get_source
from lattice.data.sources import stdlib_info
from lattice.data.tokenizer import ByteTokenizer
from lattice.data.tokenizer import padded_vocab_size

__all__ = ['ByteTokenizer', 'DataError', 'SOURCES', 'describe', 'get_source', 'local_batch_size',
           'make_eval_batches', 'make_train_iterator', 'padded_vocab_size', 'stdlib_info']
