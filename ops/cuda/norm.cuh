// LayerNorm and RMSNorm on the GPU, same contract as ops/norm.h with DEVICE
// pointers (default stream). Weight/bias gradients are deterministic column
// sums (no atomics).
#pragma once

namespace ut::cuda {

// LayerNorm over the last dim. inp [N,C], weight/bias [C] -> out [N,C];
// saves mean [N] and rstd [N] for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps);
// dout [N,C] -> dinp [N,C] (written, or added when accumulate_dinp);
// dweight [C] += ..., dbias [C] += ...
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int N, int C, bool accumulate_dinp = false);

// RMSNorm (LLaMA): out = inp * rsqrt(mean(inp^2) + eps) * weight.
// inp [N,C], weight [C] -> out [N,C]; saves rstd [N].
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C,
                     float eps);
// dout [N,C] -> dinp [N,C] (written or added); dweight [C] += ...
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int N, int C,
                      bool accumulate_dinp = false);

}  // namespace ut::cuda
