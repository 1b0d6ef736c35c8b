"""Files in and out: atomic writes, the JSON serialiser, safe checkpoint and data readers, the report.

Nothing in this package unpickles untrusted data: checkpoints load through safetensors or
``torch.load(weights_only=True)``.
"""

from slt_tms.io.atomic import atomic_path, atomic_write_text, prepare_output_dir, save_figure
from slt_tms.io.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    load_state_dict_file,
    load_tensors,
    save_checkpoint,
)
from slt_tms.io.serialize import as_float, dumps, read_json, to_jsonable, write_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "as_float",
    "atomic_path",
    "atomic_write_text",
    "dumps",
    "load_checkpoint",
    "load_state_dict_file",
    "load_tensors",
    "prepare_output_dir",
    "read_json",
    "save_checkpoint",
    "save_figure",
    "to_jsonable",
    "write_json",
]
