#!/usr/bin/env python3
"""Writes the example inputs of tools/sdtw (run from the repository root).

    python3 tools/sdtw/examples/make_examples.py

x.npy / x.txt: the same float32 sequence [6, 2] as NumPy .npy and as text with
tabs and comments; y.csv: a float32 sequence [4, 2] as CSV; z_1d.npy / z_1d.txt:
a float64 1-D sequence [5] (five slices of dimension 1) as .npy and text.
matrix_io_test reads each .npy (written by NumPy, not by our writer) and checks
it against its text twin.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)

x = rng.standard_normal((6, 2)).astype(np.float32)
y = rng.standard_normal((4, 2)).astype(np.float32)
z = rng.standard_normal(5)

np.save(os.path.join(HERE, "x.npy"), x)
with open(os.path.join(HERE, "x.txt"), "w") as f:
    f.write("# x: 6 slices of dimension 2 (the same values as x.npy)\n\n")
    for row in x:
        f.write("\t".join(f"{v:.9g}" for v in row) + "   # a slice\n")
with open(os.path.join(HERE, "y.csv"), "w") as f:
    f.write("# y: 4 slices of dimension 2\n")
    for row in y:
        f.write(",".join(f"{v:.9g}" for v in row) + "\n")
np.save(os.path.join(HERE, "z_1d.npy"), z)
np.savetxt(os.path.join(HERE, "z_1d.txt"), z, fmt="%.17g")
print("wrote x.npy x.txt y.csv z_1d.npy z_1d.txt in", HERE)
