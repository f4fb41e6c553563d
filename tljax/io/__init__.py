"""tljax.io: ONNX import, VNN-LIB properties, StableHLO export and exact JSON files."""

from ..core import load_json as load_json
from ..core import save_json as save_json
from ._export import export as export
from ._export import load_exported as load_exported
from ._onnx import load_onnx as load_onnx
from ._vnnlib import Property as Property
from ._vnnlib import load_vnnlib as load_vnnlib
