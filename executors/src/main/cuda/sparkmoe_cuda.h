// The C interface of libsparkmoe_cuda: device memory, the fp32 grouped GEMM behind Java's GroupedGemm, and
// the MoE-LoRA SwiGLU layer (bf16 or fp32) with its forward and backward. Every function returns a
// cudaError_t (0 = success); pointers are device pointers unless named host*. Shapes in comments.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {

enum SmkDtype { SMK_F32 = 0, SMK_BF16 = 1 };

int smk_device_count(int* count);
// The calling host thread's current device (CUDA's per-thread state): every later call on this thread
// allocates, copies and launches there.
int smk_set_device(int ordinal);
int smk_get_device(int* ordinal);
int smk_device_name(int ordinal, char* host, int capacity);
int smk_malloc(void** ptr, size_t bytes);
int smk_free(void* ptr);
int smk_copy_to_device(void* dst, const void* host, size_t bytes);
int smk_copy_to_host(void* host, const void* src, size_t bytes);
int smk_synchronize();
// Fills n elements with U(lo, hi) from a counter-based hash of (seed, index).
int smk_fill_uniform(void* ptr, size_t n, int dtype, uint64_t seed, float lo, float hi);

// GroupedGemm on fp32 device arrays; offsets [G+1] on the device, rows = offsets[G].
// forward y[N,out] (+)= x·W_gᵀ; backward_input dx[N,in] (+)= dy·W_g; backward_weight dW[G,out,in] (+)= dy_gᵀ·x_g.
int smk_gemm_forward_f32(const float* x, const float* w, float* y, const int* offsets, int groups, int rows,
                         int out, int in, int accumulate);
int smk_gemm_backward_input_f32(const float* dy, const float* w, float* dx, const int* offsets, int groups,
                                int rows, int out, int in, int accumulate);
int smk_gemm_backward_weight_f32(const float* dy, const float* x, float* dw, const int* offsets, int groups,
                                 int rows, int out, int in, int accumulate);

// The MoE-LoRA layer: E SwiGLU experts, frozen W1/W3 [E,I,D] and W2 [E,D,I], LoRA rank R on all three with
// one scale s = alpha/R: h = x·Wᵀ + s·(x·Aᵀ)·Bᵀ. Weights live on the device for the handle's life.
typedef struct SmkLayer SmkLayer;
int smk_layer_create(SmkLayer** layer, int dtype, int E, int D, int I, int R, float scale);
int smk_layer_destroy(SmkLayer* layer);
// w1, w3 [E,I,D], w2 [E,D,I] in the layer's dtype; copied (packed) into the layer.
int smk_layer_set_base(SmkLayer* layer, const void* w1, const void* w3, const void* w2);
// a1, a3 [E,R,D], b1, b3 [E,I,R], a2 [E,R,I], b2 [E,D,R] in the layer's dtype; copied into the layer.
int smk_layer_set_lora(SmkLayer* layer, const void* a1, const void* b1, const void* a3, const void* b3,
                       const void* a2, const void* b2);
// The routing plan (RoutingPlan's arrays, on the device): offsets [E+1], token_of_row [N], weight_of_row [N]
// (fp32), row_of_pair [T·K] (the plan row of pair t·K + k). x [T,D] and out [T,D] in the layer's dtype.
int smk_layer_forward(SmkLayer* layer, int T, int K, int rows, const int* offsets, const int* token_of_row,
                      const float* weight_of_row, const int* row_of_pair, const void* x, void* out);
// After smk_layer_forward: dout [T,D] → dx [T,D] (layer dtype); fp32 gradients dA1, dA3 [E,R,D], dB1, dB3
// [E,I,R], dA2 [E,R,I], dB2 [E,D,R]; dgates [N] fp32 = dout[token]·ys[row] (the routing weights' gradient).
int smk_layer_backward(SmkLayer* layer, const void* dout, void* dx, float* da1, float* db1, float* da3, float* db3,
                       float* da2, float* db2, float* dgates);
// Median time in ms of `iters` forward+backward passes (after `warmup`), timed with CUDA events.
int smk_layer_time(SmkLayer* layer, int T, int K, int rows, const int* offsets, const int* token_of_row,
                   const float* weight_of_row, const int* row_of_pair, const void* x, void* out, const void* dout,
                   void* dx, float* da1, float* db1, float* da3, float* db3, float* da2, float* db2, float* dgates,
                   int warmup, int iters, float* median_ms);
const char* smk_error_string(int error);
}
