// Rotary position embedding, Hugging Face LLaMA "rotate_half" convention (CPU):
//   x = [x1, x2] (halves of the head dim D), inv_freq[i] = theta^(-2i/D), i < D/2,
//   angle = pos * inv_freq[i], cos/sin repeated over both halves,
//   out = x * cos + [-x2, x1] * sin.
#pragma once

#include <cstdint>

namespace ut::cpu {

// x [N, H, D] with positions pos [N] -> out [N, H, D] (may alias x).
void rope_forward(float* out, const float* x, const int32_t* pos, int N, int H, int D,
                  float theta);
// The inverse rotation: dx [N,H,D] from dout (written; may alias).
void rope_backward(float* dx, const float* dout, const int32_t* pos, int N, int H, int D,
                   float theta);

// Strided variants for packed projections: the H heads of row n are the first
// H*D floats at x + n*ld (and out + n*ld); the rest of each row is untouched.
// E.g. q and k of a packed [N, (H+2Hkv)*D] qkv buffer in one call with
// H + Hkv heads and ld = (H+2Hkv)*D. Same values as the plain functions.
void rope_forward_strided(float* out, const float* x, int64_t ld, const int32_t* pos, int N,
                          int H, int D, float theta);
void rope_backward_strided(float* dx, const float* dout, int64_t ld, const int32_t* pos, int N,
                           int H, int D, float theta);

}  // namespace ut::cpu
