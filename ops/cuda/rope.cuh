// Rotary position embedding on the GPU, Hugging Face LLaMA "rotate_half"
// convention, same contract as ops/rope.h with DEVICE pointers (pos too).
#pragma once

#include <cstdint>

namespace ut::cuda {

// x [N, H, D] with positions pos [N] -> out [N, H, D] (may alias x). D even, <= 1024.
void rope_forward(float* out, const float* x, const int32_t* pos, int N, int H, int D, float theta);
// The inverse rotation: dx [N,H,D] from dout (written; may alias).
void rope_backward(float* dx, const float* dout, const int32_t* pos, int N, int H, int D,
                   float theta);

}  // namespace ut::cuda
