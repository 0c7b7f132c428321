"""Write a {name: numpy array} pickle the way Python 2 did (the format of resnet50_ft_weight.pkl).

Python 2 ``str`` values (key names, the arrays' raw bytes, dtype codes) are written as BINSTRING opcodes,
and numpy is referenced as ``numpy.core.multiarray``.  Reading such a file in Python 3 needs
``encoding="latin1"``, exactly like the real file.
"""
from __future__ import annotations

import pickle
import struct

import numpy as np


class Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def write_py2_pickle(obj: dict[str, np.ndarray], path) -> None:
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)
