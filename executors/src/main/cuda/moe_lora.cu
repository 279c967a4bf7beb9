// The MoE-LoRA SwiGLU layer on the grouped GEMM, the fp32 GroupedGemm entry points, memory and random fill.
// Layer forward (N = routed rows, plan order; s = LoRA scale; packed = gate/up interleaved by 8, see
// grouped_gemm.cuh):
//   xs   = x[token_of_row]                                   [N, D]   gather
//   u13  = s·xs·[A1;A3]ᵀ                                     [N, 2R]
//   h13  = xs·W13pᵀ + u13·B13pᵀ, act = silu(h1)·h3           [N, 2I] packed, [N, I]  (SwiGLU epilogue)
//   u2   = s·act·A2ᵀ                                         [N, R]
//   ys   = act·W2ᵀ + u2·B2ᵀ                                  [N, D]
//   out[t] = Σ_k w·ys[row_of_pair[t·K + k]]                  [T, D]   combine
// B13p [E, 2I, 2R] is block-diagonal (gate rows carry B1 in columns 0..R-1, up rows B3 in R..2R-1), so
// one expand step serves both halves. Backward runs the mirror, every product again a grouped GEMM.
#include "grouped_gemm.cuh"
#include "sparkmoe_cuda.h"
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

using smk::GemmArgs;
using smk::Seg;
typedef __nv_bfloat16 bf16;

#define SMK_TRY(x) do { int e__ = (int)(x); if (e__ != 0) return e__; } while (0)

namespace {

__device__ __forceinline__ float ld(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, long long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void st(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, long long i, float v) { p[i] = __float2bfloat16(v); }

int threadsFor(int cols) { return std::min(256, std::max(32, (cols + 31) / 32 * 32)); }

__device__ __forceinline__ uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T>
__global__ void fillUniform(T* p, size_t n, uint64_t seed, float lo, float hi) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float u = (mix(seed * 0x632BE59BD9B4E019ull + i) >> 40) * (1.0f / 16777216.0f);
        st(p, i, lo + (hi - lo) * u);
    }
}

// W13p [E, 2I, cols] from W1, W3 [E, I, cols]: packed row 16b+j = W1 row 8b+j, 16b+8+j = W3 row 8b+j.
template <typename T>
__global__ void packRows(T* dst, const T* w1, const T* w3, int I, int cols) {
    long long prow = blockIdx.x;                 // e·2I + p
    int e = (int)(prow / (2 * I)), p = (int)(prow % (2 * I));
    int src = (p >> 4) * 8 + (p & 7);
    const T* s = ((p >> 3) & 1 ? w3 : w1) + ((long long)e * I + src) * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[prow * cols + c] = s[c];
}

// B13p [E, 2I, 2R] from B1, B3 [E, I, R]: block-diagonal in the packed row order.
template <typename T>
__global__ void packLoraB(T* dst, const T* b1, const T* b3, int I, int R) {
    long long prow = blockIdx.x;
    int e = (int)(prow / (2 * I)), p = (int)(prow % (2 * I));
    int src = (p >> 4) * 8 + (p & 7);
    bool up = (p >> 3) & 1;
    const T* s = (up ? b3 : b1) + ((long long)e * I + src) * R;
    for (int c = threadIdx.x; c < 2 * R; c += blockDim.x) {
        bool mine = up ? c >= R : c < R;
        dst[prow * 2 * R + c] = mine ? s[up ? c - R : c] : T(0.f);
    }
}

// A13 [E, 2R, D]: expert e's A1 rows then its A3 rows.
template <typename T>
__global__ void concatA(T* dst, const T* a1, const T* a3, int R, int D) {
    long long row = blockIdx.x;                  // e·2R + r
    int e = (int)(row / (2 * R)), r = (int)(row % (2 * R));
    const T* s = (r < R ? a1 + ((long long)e * R + r) * D : a3 + ((long long)e * R + r - R) * D);
    for (int c = threadIdx.x; c < D; c += blockDim.x) dst[row * D + c] = s[c];
}

// Eight bf16 (16 bytes) as floats and back.
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) { float2 t = __bfloat1622float2(h[i]); f[2 * i] = t.x; f[2 * i + 1] = t.y; }
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
    uint4 v;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return v;
}

// dst[r] = scale_r · src[index[r]], scale_r = weights ? weights[r] : 1      (gather, and dys = w·dout[token])
template <typename T>
__global__ void gatherRows(T* dst, const T* src, const int* index, const float* weights, int D) {
    long long r = blockIdx.x;
    const T* s = src + (long long)index[r] * D;
    float w = weights ? weights[r] : 1.f;
    for (int c = threadIdx.x; c < D; c += blockDim.x) st(dst, r * D + c, w * ld(s, c));
}

// The same on bf16 rows of D % 8 == 0, 16 bytes per access.
__global__ void gatherRows8(bf16* dst, const bf16* src, const int* index, const float* weights, int D) {
    long long r = blockIdx.x;
    const uint4* s = reinterpret_cast<const uint4*>(src + (long long)index[r] * D);
    uint4* d = reinterpret_cast<uint4*>(dst + r * D);
    float w = weights ? weights[r] : 1.f;
    for (int c = threadIdx.x; c < D / 8; c += blockDim.x) {
        uint4 v = s[c];
        if (weights) {
            float f[8];
            unpack8(v, f);
#pragma unroll
            for (int i = 0; i < 8; i++) f[i] *= w;
            v = pack8(f);
        }
        d[c] = v;
    }
}

// dst[t] = Σ_k scale · src[row_of_pair[t·K + k]], fp32 sum      (combine out, and dx from dxs)
template <typename T>
__global__ void combineRows(T* dst, const T* src, const int* rowOfPair, const float* weights, int K, int D) {
    long long t = blockIdx.x;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float acc = 0.f;
        for (int k = 0; k < K; k++) {
            int row = rowOfPair[t * K + k];
            acc += (weights ? weights[row] : 1.f) * ld(src, (long long)row * D + c);
        }
        st(dst, t * D + c, acc);
    }
}

__global__ void combineRows8(bf16* dst, const bf16* src, const int* rowOfPair, const float* weights, int K, int D) {
    long long t = blockIdx.x;
    for (int c = threadIdx.x; c < D / 8; c += blockDim.x) {
        float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        for (int k = 0; k < K; k++) {
            int row = rowOfPair[t * K + k];
            float w = weights ? weights[row] : 1.f, f[8];
            unpack8(reinterpret_cast<const uint4*>(src + (long long)row * D)[c], f);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] += w * f[i];
        }
        reinterpret_cast<uint4*>(dst + t * D)[c] = pack8(acc);
    }
}

template <typename T>
int gather(T* dst, const T* src, const int* index, const float* weights, int rows, int D, cudaStream_t st) {
    if (rows == 0) return 0;
    if constexpr (sizeof(T) == 2) {
        if (D % 8 == 0) {
            gatherRows8<<<rows, threadsFor(D / 8), 0, st>>>(dst, src, index, weights, D);
            return cudaGetLastError();
        }
    }
    gatherRows<T><<<rows, threadsFor(D), 0, st>>>(dst, src, index, weights, D);
    return cudaGetLastError();
}

template <typename T>
int combine(T* dst, const T* src, const int* rowOfPair, const float* weights, int T_, int K, int D, cudaStream_t st) {
    if (T_ == 0) return 0;
    if constexpr (sizeof(T) == 2) {
        if (D % 8 == 0) {
            combineRows8<<<T_, threadsFor(D / 8), 0, st>>>(dst, src, rowOfPair, weights, K, D);
            return cudaGetLastError();
        }
    }
    combineRows<T><<<T_, threadsFor(D), 0, st>>>(dst, src, rowOfPair, weights, K, D);
    return cudaGetLastError();
}

// dgates[r] = dout[token_of_row[r]] · ys[r]: one warp per row.
template <typename T>
__global__ void rowDots(float* dgates, const T* dout, const T* ys, const int* tokenOfRow, int rows, int D) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    const T* a = dout + (long long)tokenOfRow[r] * D;
    const T* b = ys + (long long)r * D;
    float acc = 0.f;
    for (int c = threadIdx.x % 32; c < D; c += 32) acc += ld(a, c) * ld(b, c);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (threadIdx.x % 32 == 0) dgates[r] = acc;
}

// Per-step timing of smk_layer_time's last pass when SMK_PROFILE is set (events after each step, to stderr).
struct Profile {
    bool on = false;
    int used = 0;
    std::vector<std::pair<const char*, cudaEvent_t>> events;
};
Profile profile;

void mark(const char* step) {
    if (!profile.on) return;
    if (profile.used == (int)profile.events.size()) {
        cudaEvent_t e;
        cudaEventCreate(&e);
        profile.events.push_back({step, e});
    }
    profile.events[profile.used].first = step;
    cudaEventRecord(profile.events[profile.used++].second);
}

Seg seg(const void* a, long long lda, const void* b, long long ldb, long long strideB, int K, int aChunk = 8,
        int bChunk = 8) {
    Seg s;
    s.a = a; s.lda = lda; s.aChunk = aChunk; s.b = b; s.ldb = ldb; s.strideB = strideB; s.bChunk = bChunk; s.K = K;
    return s;
}

GemmArgs rowsArgs(const int* offsets, int groups, int rows, int N, void* c, long long ldc, float alpha) {
    GemmArgs g = {};
    g.offsets = offsets; g.groups = groups; g.rows = rows; g.N = N; g.c = c; g.ldc = ldc; g.alpha = alpha;
    g.epilogue = smk::EPI_STORE;
    return g;
}


}  // namespace

struct SmkLayer {
    int dtype, E, D, I, R;
    float scale;
    void *w13p = nullptr, *w2 = nullptr, *a13 = nullptr, *b13p = nullptr, *a2 = nullptr, *b2 = nullptr;
    size_t capRows = 0;
    void *xs = nullptr, *u13 = nullptr, *h13 = nullptr, *act = nullptr, *u2 = nullptr, *ys = nullptr;
    void *dys = nullptr, *v2 = nullptr, *dh13 = nullptr, *v13 = nullptr, *dxs = nullptr;
    float* da13 = nullptr;
    float* db13p = nullptr;   // [E, 2I, 2R] fp32: dh13ᵀ·u13 in one pass; dB1, dB3 are its diagonal blocks
    // the plan of the last forward
    int T = 0, K = 0, rows = 0;
    const int *offsets = nullptr, *tokenOfRow = nullptr, *rowOfPair = nullptr;
    const float* weightOfRow = nullptr;

    size_t elem() const { return dtype == SMK_BF16 ? 2 : 4; }
};

namespace {

void freeAll(std::vector<void**> ptrs) {
    for (void** p : ptrs) { if (*p) cudaFree(*p); *p = nullptr; }
}

int reserve(SmkLayer* L, int rows) {
    if ((size_t)rows <= L->capRows) return 0;
    freeAll({&L->xs, &L->u13, &L->h13, &L->act, &L->u2, &L->ys, &L->dys, &L->v2, &L->dh13, &L->v13, &L->dxs});
    size_t n = std::max<size_t>(rows, 1), e = L->elem();
    SMK_TRY(cudaMalloc(&L->xs, n * L->D * e));
    SMK_TRY(cudaMalloc(&L->u13, n * 2 * L->R * e));
    SMK_TRY(cudaMalloc(&L->h13, n * 2 * L->I * e));
    SMK_TRY(cudaMalloc(&L->act, n * L->I * e));
    SMK_TRY(cudaMalloc(&L->u2, n * L->R * e));
    SMK_TRY(cudaMalloc(&L->ys, n * L->D * e));
    SMK_TRY(cudaMalloc(&L->dys, n * L->D * e));
    SMK_TRY(cudaMalloc(&L->v2, n * L->R * e));
    SMK_TRY(cudaMalloc(&L->dh13, n * 2 * L->I * e));
    SMK_TRY(cudaMalloc(&L->v13, n * 2 * L->R * e));
    SMK_TRY(cudaMalloc(&L->dxs, n * L->D * e));
    L->capRows = rows;
    return 0;
}

template <typename T>
const T* P(const void* p) { return static_cast<const T*>(p); }

template <typename T>
int forward(SmkLayer* L, const void* xv, void* outv) {
    const int E = L->E, D = L->D, I = L->I, R = L->R, N = L->rows;
    const float s = L->scale;
    cudaStream_t st = 0;
    SMK_TRY(gather<T>((T*)L->xs, P<T>(xv), L->tokenOfRow, nullptr, N, D, st));
    mark("gather xs");
    GemmArgs g = rowsArgs(L->offsets, E, N, 2 * R, L->u13, 2 * R, s);                   // u13 = s·xs·A13ᵀ
    g.nseg = 1; g.seg[0] = seg(L->xs, D, L->a13, D, 2LL * R * D, D);
    SMK_TRY(smk::launch<T>(smk::FWD, g, st));
    mark("u13 = s·xs·A13ᵀ");
    g = rowsArgs(L->offsets, E, N, 2 * I, L->h13, 2 * I, 1.f);                            // h13, act
    g.nseg = 2; g.seg[0] = seg(L->xs, D, L->w13p, D, 2LL * I * D, D);
    g.seg[1] = seg(L->u13, 2 * R, L->b13p, 2 * R, 2LL * I * 2 * R, 2 * R);
    g.epilogue = smk::EPI_SWIGLU_FWD; g.c2 = L->act; g.ldc2 = I;
    SMK_TRY(smk::launch<T>(smk::FWD, g, st));
    mark("h13 + act (SwiGLU)");
    g = rowsArgs(L->offsets, E, N, R, L->u2, R, s);                                       // u2 = s·act·A2ᵀ
    g.nseg = 1; g.seg[0] = seg(L->act, I, L->a2, I, (long long)R * I, I);
    SMK_TRY(smk::launch<T>(smk::FWD, g, st));
    mark("u2 = s·act·A2ᵀ");
    g = rowsArgs(L->offsets, E, N, D, L->ys, D, 1.f);                                     // ys
    g.nseg = 2; g.seg[0] = seg(L->act, I, L->w2, I, (long long)D * I, I);
    g.seg[1] = seg(L->u2, R, L->b2, R, (long long)D * R, R);
    SMK_TRY(smk::launch<T>(smk::FWD, g, st));
    mark("ys");
    SMK_TRY(combine<T>((T*)outv, P<T>(L->ys), L->rowOfPair, L->weightOfRow, L->T, L->K, D, st));
    mark("combine out");
    return 0;
}

// dB1 [E, I, R] and dB3 from dB13p [E, 2I, 2R]: gate rows (packed 16b + j) and columns 0..R-1, up rows
// (packed 16b + 8 + j) and columns R..2R-1.
__global__ void unpackDb13(float* db1, float* db3, const float* db13p, int I, int R) {
    long long row = blockIdx.x;                  // e·I + i
    int e = (int)(row / I), i = (int)(row % I);
    long long gate = (long long)e * 2 * I + (i >> 3) * 16 + (i & 7);
    for (int c = threadIdx.x; c < R; c += blockDim.x) {
        db1[row * R + c] = db13p[gate * 2 * R + c];
        db3[row * R + c] = db13p[(gate + 8) * 2 * R + R + c];
    }
}

GemmArgs wgradArgs(const int* offsets, int groups, int M, int N, float* c, const void* a, long long lda, int aChunk,
                   const void* b, long long ldb) {
    GemmArgs g = {};
    g.offsets = offsets; g.groups = groups; g.M = M; g.N = N; g.c = c; g.ldc = N; g.strideC = (long long)M * N;
    g.cF32 = true; g.alpha = 1.f; g.epilogue = smk::EPI_STORE; g.nseg = 1;
    g.seg[0] = seg(a, lda, b, ldb, 0, 0, aChunk, 8);
    return g;
}

template <typename T>
int backward(SmkLayer* L, const void* doutv, void* dxv, float* da1, float* db1, float* da3, float* db3, float* da2,
             float* db2, float* dgates) {
    const int E = L->E, D = L->D, I = L->I, R = L->R, N = L->rows;
    const float s = L->scale;
    cudaStream_t st = 0;
    SMK_TRY(gather<T>((T*)L->dys, P<T>(doutv), L->tokenOfRow, L->weightOfRow, N, D, st));
    if (N > 0) {
        rowDots<T><<<(N + 7) / 8, 256, 0, st>>>(dgates, P<T>(doutv), P<T>(L->ys), L->tokenOfRow, N, D);
        SMK_TRY(cudaGetLastError());
    }
    mark("dys = w·dout[token], dgates");
    GemmArgs g = rowsArgs(L->offsets, E, N, R, L->v2, R, s);                              // v2 = s·dys·B2
    g.nseg = 1; g.seg[0] = seg(L->dys, D, L->b2, R, (long long)D * R, D);
    SMK_TRY(smk::launch<T>(smk::DGRAD, g, st));
    mark("v2 = s·dys·B2");
    g = rowsArgs(L->offsets, E, N, I, L->dh13, 2 * I, 1.f);                               // dact → dh13
    g.nseg = 2; g.seg[0] = seg(L->dys, D, L->w2, I, (long long)D * I, D);
    g.seg[1] = seg(L->v2, R, L->a2, I, (long long)R * I, R);
    g.epilogue = smk::EPI_SWIGLU_BWD; g.aux = L->h13; g.ldaux = 2 * I;
    SMK_TRY(smk::launch<T>(smk::DGRAD, g, st));
    mark("dact -> dh13 (SwiGLU bwd)");
    g = rowsArgs(L->offsets, E, N, 2 * R, L->v13, 2 * R, s);                              // v13 = s·dh13·B13p
    g.nseg = 1; g.seg[0] = seg(L->dh13, 2 * I, L->b13p, 2 * R, 2LL * I * 2 * R, 2 * I);
    SMK_TRY(smk::launch<T>(smk::DGRAD, g, st));
    mark("v13 = s·dh13·B13p");
    g = rowsArgs(L->offsets, E, N, D, L->dxs, D, 1.f);                                    // dxs
    g.nseg = 2; g.seg[0] = seg(L->dh13, 2 * I, L->w13p, D, 2LL * I * D, 2 * I);
    g.seg[1] = seg(L->v13, 2 * R, L->a13, D, 2LL * R * D, 2 * R);
    SMK_TRY(smk::launch<T>(smk::DGRAD, g, st));
    mark("dxs");
    SMK_TRY(combine<T>((T*)dxv, P<T>(L->dxs), L->rowOfPair, nullptr, L->T, L->K, D, st));
    mark("dx = sum of dxs");
    // LoRA gradients, one output matrix per expert (K = the expert's rows)
    g = wgradArgs(L->offsets, E, D, R, db2, L->dys, D, 8, L->u2, R);                       // dB2 = dysᵀ·u2
    SMK_TRY(smk::launch<T>(smk::WGRAD, g, st));
    mark("dB2");
    g = wgradArgs(L->offsets, E, R, I, da2, L->v2, R, 8, L->act, I);                       // dA2 = v2ᵀ·act
    SMK_TRY(smk::launch<T>(smk::WGRAD, g, st));
    mark("dA2");
    // dB1 = dh1ᵀ·u1, dB3 = dh3ᵀ·u3: one product over the packed dh13 (read once, densely), then its blocks
    g = wgradArgs(L->offsets, E, 2 * I, 2 * R, L->db13p, L->dh13, 2 * I, 8, L->u13, 2 * R);
    SMK_TRY(smk::launch<T>(smk::WGRAD, g, st));
    unpackDb13<<<(unsigned)(E * I), 32, 0, st>>>(db1, db3, L->db13p, I, R);
    SMK_TRY(cudaGetLastError());
    mark("dB1, dB3");
    g = wgradArgs(L->offsets, E, 2 * R, D, L->da13, L->v13, 2 * R, 8, L->xs, D);           // dA13 = v13ᵀ·xs
    SMK_TRY(smk::launch<T>(smk::WGRAD, g, st));
    mark("dA13");
    size_t row = (size_t)R * D * sizeof(float);
    SMK_TRY(cudaMemcpy2DAsync(da1, row, L->da13, 2 * row, row, E, cudaMemcpyDeviceToDevice, st));
    SMK_TRY(cudaMemcpy2DAsync(da3, row, (const char*)L->da13 + row, 2 * row, row, E, cudaMemcpyDeviceToDevice, st));
    return 0;
}

int setPlan(SmkLayer* L, int T, int K, int rows, const int* offsets, const int* tokenOfRow, const float* weightOfRow,
            const int* rowOfPair) {
    if (T < 0 || K < 1 || rows != T * K) return cudaErrorInvalidValue;
    SMK_TRY(reserve(L, rows));
    L->T = T; L->K = K; L->rows = rows; L->offsets = offsets; L->tokenOfRow = tokenOfRow;
    L->weightOfRow = weightOfRow; L->rowOfPair = rowOfPair;
    return 0;
}

}  // namespace

extern "C" {

int smk_device_count(int* count) { return cudaGetDeviceCount(count); }

int smk_set_device(int ordinal) { return cudaSetDevice(ordinal); }
int smk_get_device(int* ordinal) { return cudaGetDevice(ordinal); }

int smk_device_name(int ordinal, char* host, int capacity) {
    cudaDeviceProp p;
    SMK_TRY(cudaGetDeviceProperties(&p, ordinal));
    snprintf(host, capacity, "%s (sm_%d%d, %d SMs)", p.name, p.major, p.minor, p.multiProcessorCount);
    return 0;
}

int smk_malloc(void** ptr, size_t bytes) { return cudaMalloc(ptr, std::max<size_t>(bytes, 1)); }
int smk_free(void* ptr) { return cudaFree(ptr); }
int smk_copy_to_device(void* dst, const void* host, size_t bytes) {
    return cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice);
}
int smk_copy_to_host(void* host, const void* src, size_t bytes) {
    return cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost);
}
int smk_synchronize() { return cudaDeviceSynchronize(); }
const char* smk_error_string(int error) { return cudaGetErrorString((cudaError_t)error); }

int smk_fill_uniform(void* ptr, size_t n, int dtype, uint64_t seed, float lo, float hi) {
    if (n == 0) return 0;
    unsigned blocks = (unsigned)std::min<size_t>((n + 255) / 256, 65535);
    if (dtype == SMK_BF16) fillUniform<bf16><<<blocks, 256>>>((bf16*)ptr, n, seed, lo, hi);
    else fillUniform<float><<<blocks, 256>>>((float*)ptr, n, seed, lo, hi);
    return cudaGetLastError();
}

int smk_gemm_forward_f32(const float* x, const float* w, float* y, const int* offsets, int groups, int rows, int out,
                         int in, int accumulate) {
    GemmArgs g = rowsArgs(offsets, groups, rows, out, y, out, 1.f);
    g.accumulate = accumulate; g.cF32 = true; g.nseg = 1;
    g.seg[0] = seg(x, in, w, in, (long long)out * in, in);
    return smk::launch<float>(smk::FWD, g, 0);
}

int smk_gemm_backward_input_f32(const float* dy, const float* w, float* dx, const int* offsets, int groups, int rows,
                                int out, int in, int accumulate) {
    GemmArgs g = rowsArgs(offsets, groups, rows, in, dx, in, 1.f);
    g.accumulate = accumulate; g.cF32 = true; g.nseg = 1;
    g.seg[0] = seg(dy, out, w, in, (long long)out * in, out);
    return smk::launch<float>(smk::DGRAD, g, 0);
}

int smk_gemm_backward_weight_f32(const float* dy, const float* x, float* dw, const int* offsets, int groups, int rows,
                                 int out, int in, int accumulate) {
    GemmArgs g = wgradArgs(offsets, groups, out, in, dw, dy, out, 8, x, in);
    g.rows = rows; g.accumulate = accumulate;
    return smk::launch<float>(smk::WGRAD, g, 0);
}

int smk_layer_create(SmkLayer** layer, int dtype, int E, int D, int I, int R, float scale) {
    if (E < 1 || D < 1 || I < 1 || R < 1 || (dtype != SMK_F32 && dtype != SMK_BF16)) return cudaErrorInvalidValue;
    if (dtype == SMK_BF16 && (D % 8 || I % 8 || R % 8)) return cudaErrorInvalidValue;
    if (I % 8) return cudaErrorInvalidValue;   // the packed gate/up layout interleaves blocks of 8
    SmkLayer* L = new SmkLayer();
    L->dtype = dtype; L->E = E; L->D = D; L->I = I; L->R = R; L->scale = scale;
    size_t e = L->elem();
    int err = 0;
    if (!err) err = cudaMalloc(&L->w13p, (size_t)E * 2 * I * D * e);
    if (!err) err = cudaMalloc(&L->w2, (size_t)E * D * I * e);
    if (!err) err = cudaMalloc(&L->a13, (size_t)E * 2 * R * D * e);
    if (!err) err = cudaMalloc(&L->b13p, (size_t)E * 2 * I * 2 * R * e);
    if (!err) err = cudaMalloc(&L->a2, (size_t)E * R * I * e);
    if (!err) err = cudaMalloc(&L->b2, (size_t)E * D * R * e);
    if (!err) err = cudaMalloc((void**)&L->da13, (size_t)E * 2 * R * D * sizeof(float));
    if (!err) err = cudaMalloc((void**)&L->db13p, (size_t)E * 2 * I * 2 * R * sizeof(float));
    if (err) { smk_layer_destroy(L); return err; }
    *layer = L;
    return 0;
}

int smk_layer_destroy(SmkLayer* L) {
    if (!L) return 0;
    freeAll({&L->w13p, &L->w2, &L->a13, &L->b13p, &L->a2, &L->b2, (void**)&L->da13, (void**)&L->db13p, &L->xs,
             &L->u13, &L->h13, &L->act, &L->u2, &L->ys, &L->dys, &L->v2, &L->dh13, &L->v13, &L->dxs});
    delete L;
    return 0;
}

int smk_layer_set_base(SmkLayer* L, const void* w1, const void* w3, const void* w2) {
    size_t e = L->elem();
    unsigned prows = (unsigned)(2LL * L->E * L->I);
    if (L->dtype == SMK_BF16) packRows<bf16><<<prows, threadsFor(L->D)>>>((bf16*)L->w13p, (const bf16*)w1, (const bf16*)w3, L->I, L->D);
    else packRows<float><<<prows, threadsFor(L->D)>>>((float*)L->w13p, (const float*)w1, (const float*)w3, L->I, L->D);
    SMK_TRY(cudaGetLastError());
    SMK_TRY(cudaMemcpy(L->w2, w2, (size_t)L->E * L->D * L->I * e, cudaMemcpyDeviceToDevice));
    return cudaDeviceSynchronize();
}

int smk_layer_set_lora(SmkLayer* L, const void* a1, const void* b1, const void* a3, const void* b3, const void* a2,
                       const void* b2) {
    size_t e = L->elem();
    unsigned prows = (unsigned)(2LL * L->E * L->I), arows = (unsigned)(2LL * L->E * L->R);
    if (L->dtype == SMK_BF16) {
        packLoraB<bf16><<<prows, 32>>>((bf16*)L->b13p, (const bf16*)b1, (const bf16*)b3, L->I, L->R);
        concatA<bf16><<<arows, threadsFor(L->D)>>>((bf16*)L->a13, (const bf16*)a1, (const bf16*)a3, L->R, L->D);
    } else {
        packLoraB<float><<<prows, 32>>>((float*)L->b13p, (const float*)b1, (const float*)b3, L->I, L->R);
        concatA<float><<<arows, threadsFor(L->D)>>>((float*)L->a13, (const float*)a1, (const float*)a3, L->R, L->D);
    }
    SMK_TRY(cudaGetLastError());
    SMK_TRY(cudaMemcpy(L->a2, a2, (size_t)L->E * L->R * L->I * e, cudaMemcpyDeviceToDevice));
    SMK_TRY(cudaMemcpy(L->b2, b2, (size_t)L->E * L->D * L->R * e, cudaMemcpyDeviceToDevice));
    return cudaDeviceSynchronize();
}

int smk_layer_forward(SmkLayer* L, int T, int K, int rows, const int* offsets, const int* tokenOfRow,
                      const float* weightOfRow, const int* rowOfPair, const void* x, void* out) {
    SMK_TRY(setPlan(L, T, K, rows, offsets, tokenOfRow, weightOfRow, rowOfPair));
    return L->dtype == SMK_BF16 ? forward<bf16>(L, x, out) : forward<float>(L, x, out);
}

int smk_layer_backward(SmkLayer* L, const void* dout, void* dx, float* da1, float* db1, float* da3, float* db3,
                       float* da2, float* db2, float* dgates) {
    if (L->offsets == nullptr) return cudaErrorInvalidValue;   // no forward yet
    return L->dtype == SMK_BF16 ? backward<bf16>(L, dout, dx, da1, db1, da3, db3, da2, db2, dgates)
                                : backward<float>(L, dout, dx, da1, db1, da3, db3, da2, db2, dgates);
}

int smk_layer_time(SmkLayer* L, int T, int K, int rows, const int* offsets, const int* tokenOfRow,
                   const float* weightOfRow, const int* rowOfPair, const void* x, void* out, const void* dout, void* dx,
                   float* da1, float* db1, float* da3, float* db3, float* da2, float* db2, float* dgates, int warmup,
                   int iters, float* medianMs) {
    if (iters < 1) return cudaErrorInvalidValue;
    cudaEvent_t a, b;
    SMK_TRY(cudaEventCreate(&a));
    SMK_TRY(cudaEventCreate(&b));
    std::vector<float> ms;
    profile.on = std::getenv("SMK_PROFILE") != nullptr;
    for (int i = 0; i < warmup + iters; i++) {
        profile.used = 0;
        mark("start");
        SMK_TRY(cudaEventRecord(a));
        SMK_TRY(smk_layer_forward(L, T, K, rows, offsets, tokenOfRow, weightOfRow, rowOfPair, x, out));
        SMK_TRY(smk_layer_backward(L, dout, dx, da1, db1, da3, db3, da2, db2, dgates));
        SMK_TRY(cudaEventRecord(b));
        SMK_TRY(cudaEventSynchronize(b));
        float t;
        SMK_TRY(cudaEventElapsedTime(&t, a, b));
        if (i >= warmup) ms.push_back(t);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    for (int i = 1; profile.on && i < profile.used; i++) {
        float t;
        cudaEventElapsedTime(&t, profile.events[i - 1].second, profile.events[i].second);
        fprintf(stderr, "  %-28s %8.3f ms\n", profile.events[i].first, t);
    }
    profile.on = false;
    std::sort(ms.begin(), ms.end());
    *medianMs = ms[ms.size() / 2];
    return 0;
}

}  // extern "C"
