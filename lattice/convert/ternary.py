"""BitNet b1.58 2B4T's packed ternary weights -> lattice's `bitnet` kernel, exactly.

Shape legend: O output features, I input features, P = O/4 packed rows.

The released layout (transformers/integrations/bitnet.py, `pack_weights` and
`BitLinear`): a projection's codes[O, I] in {-1, 0, 1} are stored as uint8
packed[P, I], where bits 2i..2i+1 of packed[r] hold codes[i*P + r] + 1 (i = 0..3),
plus a one-element `weight_scale`; BitLinear divides its int8 x ternary product by
weight_scale, so the effective weight is codes / weight_scale.

lattice's BitLinear keeps a float kernel and quantizes it in the forward pass:
ternary(w) = clip(round(w * s), -1, 1) / s with s = 1 / mean|w| (quant/ste.py,
BitNet b1.58's absmean, arXiv 2402.17764). The kernel w = codes / (p * weight_scale),
p the fraction of nonzero codes, has mean|w| = 1 / weight_scale, so s = weight_scale,
round(codes / p) clips back to the codes, and ternary(w) = codes / weight_scale: the
released weight, up to the float rounding of the mean (relative 1e-7 in float32; in
bfloat16 params, w itself rounds, so the effective scale moves by up to 2^-9). An
all-zero tensor gives w = 0. `quant.inference.pack_model` then recovers the codes
exactly.
"""

from __future__ import annotations

import numpy as np

from lattice.convert.hf_config import ConvertError

VALUES_PER_BYTE = 4  # 2-bit codes per uint8 (transformers' VALUES_PER_ITEM)


def unpack_kernel(packed_PxI: np.ndarray, weight_scale: np.ndarray, name: str
                  ) -> np.ndarray:
  """kernel_IxO (float32) whose lattice ternary quantization is codes / weight_scale.

  `packed_PxI` is the uint8 tensor `name`; `weight_scale` its one-element scale.
  Raises ConvertError naming the tensor for a scale that is not one positive
  finite number (lattice's absmean scale is per tensor) or a 2-bit value of 3 (no
  ternary code).
  """
  if packed_PxI.dtype != np.uint8 or packed_PxI.ndim != 2:
    raise ConvertError(f'tensor {name}: {packed_PxI.dtype} {list(packed_PxI.shape)}; '
                       f'expected packed ternary uint8 [out/4, in]')
  sigma = np.asarray(weight_scale, np.float64).reshape(-1)
  if sigma.size != 1 or not np.isfinite(sigma[0]) or sigma[0] <= 0:
    raise ConvertError(f'tensor {name}: weight_scale {sigma.tolist()[:4]} is not one '
                       f'positive number (lattice\'s BitNet scale is per tensor)')
  P, I = packed_PxI.shape
  nonzero = 0
  for i in range(VALUES_PER_BYTE):
    v_PxI = (packed_PxI >> (2 * i)) & 3
    if (v_PxI == 3).any():
      raise ConvertError(f'tensor {name}: a 2-bit value of 3 is no ternary code')
    nonzero += int(np.count_nonzero(v_PxI != 1))
  kernel_IxO = np.zeros((I, VALUES_PER_BYTE * P), np.float32)
  if nonzero == 0:
    return kernel_IxO
  magnitude = np.float32(packed_PxI.size * VALUES_PER_BYTE / (nonzero * sigma[0]))
  for i in range(VALUES_PER_BYTE):
    codes_PxI = ((packed_PxI >> (2 * i)) & 3).astype(np.int8) - 1
    np.multiply(codes_PxI.T, magnitude, out=kernel_IxO[:, i * P:(i + 1) * P],
                dtype=np.float32)
  return kernel_IxO
