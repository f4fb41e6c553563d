"""tljax.layers: Equinox layers with PyTorch-like names whose graphs are plain lax primitives.

Every layer's `__call__` runs under `jax.named_scope("tljax.layers.<Name>")`, so each traced
equation can be attributed to its layer. PRNG keys are keyword-only (`key=`).
"""

from tljax.layers._activations import GELU as GELU
from tljax.layers._activations import Dropout as Dropout
from tljax.layers._activations import LeakyReLU as LeakyReLU
from tljax.layers._activations import ReLU as ReLU
from tljax.layers._activations import Sigmoid as Sigmoid
from tljax.layers._activations import Softplus as Softplus
from tljax.layers._activations import Tanh as Tanh
from tljax.layers._attention import FlashAttention as FlashAttention
from tljax.layers._attention import MultiheadAttention as MultiheadAttention
from tljax.layers._attention import attention_kernel as attention_kernel
from tljax.layers._attention import dot_product_attention as dot_product_attention
from tljax.layers._attention import flash_attention as flash_attention
from tljax.layers._attention import flash_attention_kernel as flash_attention_kernel
from tljax.layers._containers import MLP as MLP
from tljax.layers._containers import Sequential as Sequential
from tljax.layers._conv import AvgPool2d as AvgPool2d
from tljax.layers._conv import Conv1d as Conv1d
from tljax.layers._conv import Conv2d as Conv2d
from tljax.layers._conv import MaxPool2d as MaxPool2d
from tljax.layers._linear import Embedding as Embedding
from tljax.layers._linear import Flatten as Flatten
from tljax.layers._linear import Identity as Identity
from tljax.layers._linear import Linear as Linear
from tljax.layers._norm import BatchNorm as BatchNorm
from tljax.layers._norm import BatchNormState as BatchNormState
from tljax.layers._norm import LayerNorm as LayerNorm
from tljax.layers._ssm import DiagonalSSM as DiagonalSSM
from tljax.layers._ssm import MambaBlock as MambaBlock
from tljax.layers._ssm import SelectiveSSM as SelectiveSSM
from tljax.layers._ssm import linear_recurrence_parallel as linear_recurrence_parallel
from tljax.layers._ssm import linear_recurrence_sequential as linear_recurrence_sequential
from tljax.layers._ssm import selective_scan as selective_scan
