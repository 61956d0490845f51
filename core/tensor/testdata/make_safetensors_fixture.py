# Writes py_written.safetensors with the reference implementation (pip safetensors),
# read back by safetensors_test (ReadsFileWrittenByReferenceImplementation).
# Run from this directory: python3 make_safetensors_fixture.py
import numpy as np
import torch
from safetensors.torch import save_file

save_file(
    {
        "model.w": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.25 - 0.5,
        "ids": torch.tensor([7, -1, 1 << 40], dtype=torch.int64),
        "half": torch.tensor([1.0, -2.5], dtype=torch.bfloat16),
        "n": torch.tensor([3, 4], dtype=torch.int32),
    },
    "py_written.safetensors",
    metadata={"source": "pytorch"},
)
