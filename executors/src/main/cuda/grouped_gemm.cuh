// Grouped GEMM over a routing plan on the bf16 tensor cores (wgmma on sm_90a, mma.sync m16n8k16 elsewhere;
// fp32 accumulation; cp.async multi-stage pipelines) and an fp32 SIMT variant with the same arguments, plus
// fused epilogues.
//
// Three modes (Hugging Face Linear layout, weights [G, out, in]):
//   FWD   C[r, n] = alpha · Σ_seg Σ_k A_s[r, k] · B_s,g[n, k]      rows r of group g (offsets), B K-major
//   DGRAD C[r, n] = alpha · Σ_seg Σ_k A_s[r, k] · B_s,g[k, n]      rows r of group g, B N-major
//   WGRAD C_g[m, n] = alpha · Σ_{r in g} A[r, m] · B[r, n]          one output matrix per group
// A segment list concatenates along K: [x | u]·[W | B]ᵀ is the base product and the LoRA expand in one
// K loop, the rank-R intermediate u read once per tile and kept on chip with the base tile.
// M/N-major operands are read in 8-element chunks whose stride ("chunk") may exceed 8: that is how the
// interleaved gate/up layout below is addressed in place.
//
// Interleaved gate/up ("packed"): W13p [E, 2I, D] holds W1 and W3 rows in alternating blocks of 8
// (packed row 16b + j = W1 row 8b + j, packed row 16b + 8 + j = W3 row 8b + j), so one output tile holds
// matching gate and up columns in the same thread's registers and the SwiGLU runs in the epilogue.
#pragma once
#include <cuda_bf16.h>
#include <cstdint>

namespace smk {

enum Mode { FWD = 0, DGRAD = 1, WGRAD = 2 };
enum Epilogue { EPI_STORE = 0, EPI_SWIGLU_FWD = 1, EPI_SWIGLU_BWD = 2 };

struct Seg {
    const void* a;
    long long lda;       // elements between rows of A
    int aChunk;          // WGRAD: elements between 8-element chunks along M (8: dense)
    const void* b;
    long long ldb;       // elements between rows of B
    long long strideB;   // FWD/DGRAD: elements between the groups' B matrices
    int bChunk;          // DGRAD/WGRAD: elements between 8-element chunks along N (8: dense)
    int K;               // FWD/DGRAD: reduction length of this segment
};

struct GemmArgs {
    int nseg;
    Seg seg[3];
    const int* offsets;  // device [G+1]
    int groups;
    int rows;            // offsets[G] (FWD/DGRAD: sizes the grid)
    int M;               // WGRAD: rows of each output matrix
    int N;               // columns of the output (FWD/DGRAD) or of each output matrix (WGRAD)
    void* c;
    long long ldc;
    long long strideC;   // WGRAD: elements between the groups' outputs
    bool cF32;           // output element type: fp32, else the input type
    bool accumulate;     // C += result
    float alpha;
    int epilogue;
    void* c2;            // EPI_SWIGLU_FWD: act [rows, N/2]
    long long ldc2;
    const void* aux;     // EPI_SWIGLU_BWD: h13 packed [rows, 2N]
    long long ldaux;
};

// Runs one grouped GEMM; T is __nv_bfloat16 (tensor cores) or float (SIMT). Returns a cudaError_t.
template <typename T>
int launch(int mode, const GemmArgs& args, cudaStream_t stream);

}  // namespace smk
