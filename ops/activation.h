// Pointwise activations and softmax, forward and backward (CPU).
#pragma once

#include <cstdint>

namespace ut::cpu {

// GELU, tanh approximation (PyTorch approximate="tanh"). inp, out [n].
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp [n] = dout * gelu'(inp) (written; dinp may alias dout).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// SwiGLU: out = silu(gate) * up, silu(x) = x * sigmoid(x). gate, up, out [n].
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
// dout [n] -> dgate [n], dup [n] (written).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n);

// Packed SwiGLU, for a fused gate/up projection: gu [N, 2F] holds gate in
// columns [0, F) and up in [F, 2F) of each row -> out [N, F]. Same values as
// swiglu_forward on the two halves.
void swiglu_forward_packed(float* out, const float* gu, int N, int F);
// dout [N, F] -> dgu [N, 2F] (dgate | dup per row, written).
void swiglu_backward_packed(float* dgu, const float* dout, const float* gu, int N, int F);

// Row softmax. inp [N,C] -> out [N,C] (may alias).
void softmax_forward(float* out, const float* inp, int N, int C);
// dinp [N,C] = out * (dout - sum(dout*out)) (written; may alias dout).
void softmax_backward(float* dinp, const float* dout, const float* out, int N, int C);

}  // namespace ut::cpu
