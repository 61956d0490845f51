// Pointwise activations and softmax on the GPU, same contract as
// ops/activation.h with DEVICE pointers (default stream).
#pragma once

#include <cstdint>

namespace ut::cuda {

// GELU, tanh approximation (PyTorch approximate="tanh"). inp, out [n].
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp [n] = dout * gelu'(inp) (written; dinp may alias dout).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// SwiGLU: out = silu(gate) * up, silu(x) = x * sigmoid(x). gate, up, out [n].
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
// dout [n] -> dgate [n], dup [n] (written).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n);

// Row softmax. inp [N,C] -> out [N,C] (may alias).
void softmax_forward(float* out, const float* inp, int N, int C);
// dinp [N,C] = out * (dout - sum(dout*out)) (written; may alias dout).
void softmax_backward(float* dinp, const float* dout, const float* out, int N, int C);

}  // namespace ut::cuda
