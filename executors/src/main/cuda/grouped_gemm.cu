// Grouped GEMM kernels: see grouped_gemm.cuh for the modes, segments and the packed gate/up layout.
#include "grouped_gemm.cuh"
#include <cuda_runtime.h>
#include <cstdlib>

namespace smk {
namespace {

// ---------------------------------------------------------------- element helpers

__device__ __forceinline__ float toF(float v) { return v; }
__device__ __forceinline__ float toF(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T fromF(float v);
template <> __device__ __forceinline__ float fromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <typename T> __device__ __forceinline__ float roundT(float v) { return toF(fromF<T>(v)); }

// Writes (v0, v1) at columns col, col+1 of one output row (v1 only when has1); fp32 or T per args.cF32.
template <typename T>
__device__ __forceinline__ void storePair(const GemmArgs& a, void* base, long long idx, float v0, float v1,
                                          bool has1) {
    if (a.cF32 || sizeof(T) == 4) {
        float* p = static_cast<float*>(base) + idx;
        if (a.accumulate) { v0 += p[0]; if (has1) v1 += p[1]; }
        p[0] = v0;
        if (has1) p[1] = v1;
    } else {
        T* p = static_cast<T*>(base) + idx;
        if (a.accumulate) { v0 += toF(p[0]); if (has1) v1 += toF(p[1]); }
        if (has1 && (idx & 1) == 0) {
            *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
        } else {
            p[0] = fromF<T>(v0);
            if (has1) p[1] = fromF<T>(v1);
        }
    }
}

// Two consecutive elements (the first at an even index, so one 4-byte access for bf16), no accumulation.
__device__ __forceinline__ void storeRaw2(float* p, float v0, float v1) { p[0] = v0; p[1] = v1; }
__device__ __forceinline__ void storeRaw2(__nv_bfloat16* p, float v0, float v1) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
}
__device__ __forceinline__ void loadRaw2(const float* p, float (&v)[2]) { v[0] = p[0]; v[1] = p[1]; }
__device__ __forceinline__ void loadRaw2(const __nv_bfloat16* p, float (&v)[2]) {
    float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    v[0] = f.x; v[1] = f.y;
}

// The epilogue of two column pairs of one row: (a0, a1) at col, col+1 and (b0, b1) at col+8, col+9.
// In EPI_SWIGLU_FWD col lies in a gate block of the packed layout, col+8 in its up block.
template <typename T>
__device__ __forceinline__ void epilogue4(const GemmArgs& a, void* c, long long row, int col, float a0, float a1,
                                          float b0, float b1) {
    const int N = a.N;
    a0 *= a.alpha; a1 *= a.alpha; b0 *= a.alpha; b1 *= a.alpha;
    if (a.epilogue == EPI_STORE) {
        if (col < N) storePair<T>(a, c, row * a.ldc + col, a0, a1, col + 1 < N);
        if (col + 8 < N) storePair<T>(a, c, row * a.ldc + col + 8, b0, b1, col + 9 < N);
    } else if (a.epilogue == EPI_SWIGLU_FWD) {
        if (col >= N) return;
        T* h = static_cast<T*>(c) + row * a.ldc;
        float g0 = roundT<T>(a0), g1 = roundT<T>(a1), u0 = roundT<T>(b0), u1 = roundT<T>(b1);
        int real = (col >> 4) * 8 + (col & 7);
        T* act = static_cast<T*>(a.c2) + row * a.ldc2 + real;
        storeRaw2(h + col, g0, g1);
        storeRaw2(h + col + 8, u0, u1);
        storeRaw2(act, g0 / (1.f + __expf(-g0)) * u0, g1 / (1.f + __expf(-g1)) * u1);
    } else {  // EPI_SWIGLU_BWD: dact at real columns → dh1, dh3 at their packed columns, two columns at a time
        const T* h = static_cast<const T*>(a.aux) + row * a.ldaux;
        T* dh = static_cast<T*>(c) + row * a.ldc;
        float d[4] = {a0, a1, b0, b1};
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int cc = col + 8 * i;
            if (cc >= N) continue;
            int p = (cc >> 3) * 16 + (cc & 7);
            float h1[2], h3[2], dg[2], du[2];
            loadRaw2(h + p, h1);
            loadRaw2(h + p + 8, h3);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                float sg = 1.f / (1.f + __expf(-h1[j]));
                du[j] = d[2 * i + j] * h1[j] * sg;
                dg[j] = d[2 * i + j] * h3[j] * sg * (1.f + h1[j] * (1.f - sg));
            }
            storeRaw2(dh + p, dg[0], dg[1]);
            storeRaw2(dh + p + 8, du[0], du[1]);
        }
    }
}

__device__ __forceinline__ Seg pick(const GemmArgs& a, int s) {
    return s == 0 ? a.seg[0] : (s == 1 ? a.seg[1] : a.seg[2]);
}

// Finds the (group, m-tile, n-tile) of a row-mode CTA; false for the grid's spare CTAs.
__device__ __forceinline__ bool rowTile(const GemmArgs& a, int bm, int bn, int& g, int& mt, int& nt) {
    int t = blockIdx.x;
    int nTiles = (a.N + bn - 1) / bn;
    for (g = 0; g < a.groups; g++) {
        int m = __ldg(a.offsets + g + 1) - __ldg(a.offsets + g);
        int cnt = (m + bm - 1) / bm * nTiles;
        if (t < cnt) {
            mt = t / nTiles;
            nt = t % nTiles;
            return true;
        }
        t -= cnt;
    }
    return false;
}

// ---------------------------------------------------------------- bf16 tensor-core kernel

// A tile shape: WM × WN warps, each MI m16 × NI n8 mma tiles; BK deep, STAGES cp.async stages, at least MINB
// CTAs per SM.
template <int WM_, int WN_, int MI_, int NI_, int BK_, int STAGES_, int MINB_>
struct Cfg {
    static constexpr int WM = WM_, WN = WN_, MI = MI_, NI = NI_, BK = BK_, STAGES = STAGES_, MINB = MINB_;
    static constexpr int THREADS = WM * WN * 32;
    static constexpr int KS = BK + 8;   // K-major smem row, halfs (16 bytes of padding: ldmatrix conflict-free)
    static constexpr int BM = WM * MI * 16, BN = WN * NI * 8;
    static constexpr int A_TILE = (BM * KS > BK * (BM + 8)) ? BM * KS : BK * (BM + 8);   // halfs
    static constexpr int B_TILE = (BN * KS > BK * (BN + 8)) ? BN * KS : BK * (BN + 8);
    static constexpr int SMEM = STAGES * (A_TILE + B_TILE) * 2;
};
// The large products: 128 × 128 × 64, 4 warps of 64 × 64, 3 stages, 2 CTAs per SM, m-tile fastest; the best of
// six shapes timed on the H100 (deploy/gpu/NOTES.md).
using Big = Cfg<2, 2, 4, 8, 64, 3, 2>;
// 128 × 32: N ≤ 32 (LoRA shrink, dB). Few CTAs stream long K there (Mixtral: 136 CTAs, K up to 28672), so the
// loads in flight bound the speed: 64-deep k-tiles carry twice the bytes of 32-deep ones (SMK_SKINNY_BK=32).
using SkinnyN = Cfg<8, 1, 1, 4, 64, 4, 2>;
using SkinnyN32 = Cfg<8, 1, 1, 4, 32, 4, 2>;
using SkinnyM = Cfg<1, 8, 2, 2, 32, 4, 2>; // 32 × 128: WGRAD with M ≤ 32 (dA)

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cpCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cpWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm4(unsigned (&r)[4], const void* p) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm4t(unsigned (&r)[4], const void* p) {
    unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Row modes: the tiles of group g in order n-tile-major, m-tile fastest, so the CTAs resident at once share a
// few weight column blocks (read from HBM about once) and the group's rows (kept in L2).
__device__ __forceinline__ bool rowTileMFast(const GemmArgs& a, int bm, int bn, int& g, int& mt, int& nt) {
    int t = blockIdx.x;
    int nTiles = (a.N + bn - 1) / bn;
    for (g = 0; g < a.groups; g++) {
        int m = __ldg(a.offsets + g + 1) - __ldg(a.offsets + g);
        int mTiles = (m + bm - 1) / bm;
        int cnt = mTiles * nTiles;
        if (t < cnt) {
            nt = t / mTiles;
            mt = t % mTiles;
            return true;
        }
        t -= cnt;
    }
    return false;
}

template <int MODE, typename C>
__global__ void __launch_bounds__(C::THREADS, C::MINB) tcKernel(const __grid_constant__ GemmArgs a) {
    constexpr bool A_KMAJ = MODE != WGRAD;
    constexpr bool B_KMAJ = MODE == FWD;
    constexpr int BM = C::BM, BN = C::BN, MI = C::MI, NI = C::NI, STAGES = C::STAGES, BK = C::BK, KS = C::KS;
    constexpr int THREADS = C::THREADS, KCH = BK / 8;   // 16-byte chunks per K-major row
    constexpr int MNA = BM + 8, MNB = BN + 8;   // M/N-major smem rows, halfs
    extern __shared__ __align__(16) __nv_bfloat16 smem[];
    int g, mt, nt;
    int rowStart, rowEnd;   // FWD/DGRAD: this tile's rows; WGRAD: the group's rows (its K range)
    if (MODE == WGRAD) {
        int mTiles = (a.M + BM - 1) / BM, nTiles = (a.N + BN - 1) / BN;
        int t = blockIdx.x;
        g = t / (mTiles * nTiles);
        t -= g * mTiles * nTiles;
        mt = t / nTiles;
        nt = t % nTiles;
        rowStart = a.offsets[g];
        rowEnd = a.offsets[g + 1];
    } else {
        if (!rowTileMFast(a, BM, BN, g, mt, nt)) return;
        rowStart = a.offsets[g] + mt * BM;
        rowEnd = a.offsets[g + 1];
    }
    const int m0 = mt * BM, n0 = nt * BN;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / C::WN, wn = warp % C::WN;

    int ktiles[3] = {0, 0, 0};
    int total = 0;
#pragma unroll
    for (int s = 0; s < 3; s++) {
        if (s < a.nseg) {
            int K = MODE == WGRAD ? rowEnd - rowStart : a.seg[s].K;
            ktiles[s] = (K + BK - 1) / BK;
            total += ktiles[s];
        }
    }

    auto load = [&](int stage, int kt) {
        int s = 0;
        if (kt >= ktiles[0]) { kt -= ktiles[0]; s = 1; if (kt >= ktiles[1]) { kt -= ktiles[1]; s = 2; } }
        const Seg sg = pick(a, s);
        const int K = MODE == WGRAD ? rowEnd - rowStart : sg.K;
        const int k0 = kt * BK;
        const __nv_bfloat16* A = static_cast<const __nv_bfloat16*>(sg.a);
        const __nv_bfloat16* B = static_cast<const __nv_bfloat16*>(sg.b);
        __nv_bfloat16* sA = smem + stage * (C::A_TILE + C::B_TILE);
        __nv_bfloat16* sB = sA + C::A_TILE;
        constexpr int A_CHUNKS = BM * BK / 8, B_CHUNKS = BN * BK / 8;
#pragma unroll
        for (int c = tid; c < A_CHUNKS; c += THREADS) {
            if (A_KMAJ) {
                int row = c / KCH, kc = (c % KCH) * 8;
                int r = rowStart + row, k = k0 + kc;
                bool ok = r < rowEnd && k < K;
                cpAsync16(sA + row * KS + kc, ok ? A + (long long)r * sg.lda + k : A, ok);
            } else {
                constexpr int PER = BM / 8;
                int kr = c / PER, mc = (c % PER) * 8;
                int k = k0 + kr, m = m0 + mc;
                bool ok = k < K && m < a.M;
                cpAsync16(sA + kr * MNA + mc,
                          ok ? A + (long long)(rowStart + k) * sg.lda + (long long)(m >> 3) * sg.aChunk : A, ok);
            }
        }
#pragma unroll
        for (int c = tid; c < B_CHUNKS; c += THREADS) {
            if (B_KMAJ) {
                int nr = c / KCH, kc = (c % KCH) * 8;
                int n = n0 + nr, k = k0 + kc;
                bool ok = n < a.N && k < K;
                cpAsync16(sB + nr * KS + kc, ok ? B + g * sg.strideB + (long long)n * sg.ldb + k : B, ok);
            } else {
                constexpr int PER = BN / 8;
                int kr = c / PER, nc = (c % PER) * 8;
                int k = k0 + kr, n = n0 + nc;
                bool ok = k < K && n < a.N;
                long long row = MODE == WGRAD ? (long long)(rowStart + k) * sg.ldb
                                              : g * sg.strideB + (long long)k * sg.ldb;
                cpAsync16(sB + kr * MNB + nc, ok ? B + row + (long long)(n >> 3) * sg.bChunk : B, ok);
            }
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < total) load(s, s);
        cpCommit();
    }
    for (int kt = 0; kt < total; kt++) {
        cpWait<STAGES - 2>();
        __syncthreads();
        int next = kt + STAGES - 1;
        if (next < total) load(next % STAGES, next);
        cpCommit();
        const __nv_bfloat16* sA = smem + (kt % STAGES) * (C::A_TILE + C::B_TILE);
        const __nv_bfloat16* sB = sA + C::A_TILE;
        // fragments double-buffered: step ks+1's ldmatrix are issued before step ks's mma
        unsigned af[2][MI][4], bf[2][NI][2];
        auto fragments = [&](int buf, int kk) {
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                int m = wm * MI * 16 + mi * 16;
                if (A_KMAJ) {
                    ldsm4(af[buf][mi], sA + (m + (lane & 15)) * KS + kk + (lane >> 4) * 8);
                } else {
                    ldsm4t(af[buf][mi], sA + (kk + (lane & 7) + (lane >> 4) * 8) * MNA + m + ((lane >> 3) & 1) * 8);
                }
            }
#pragma unroll
            for (int np = 0; np < NI / 2; np++) {
                int n = wn * NI * 8 + np * 16;
                unsigned r[4];
                if (B_KMAJ) {
                    ldsm4(r, sB + (n + (lane & 7) + (lane >> 4) * 8) * KS + kk + ((lane >> 3) & 1) * 8);
                } else {
                    ldsm4t(r, sB + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * MNB + n + (lane >> 4) * 8);
                }
                bf[buf][2 * np][0] = r[0]; bf[buf][2 * np][1] = r[1];
                bf[buf][2 * np + 1][0] = r[2]; bf[buf][2 * np + 1][1] = r[3];
            }
        };
        fragments(0, 0);
#pragma unroll
        for (int ks = 0; ks < BK / 16; ks++) {
            if (ks + 1 < BK / 16) fragments((ks + 1) & 1, (ks + 1) * 16);
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++) mma16816(acc[mi][ni], af[ks & 1][mi], bf[ks & 1][ni][0], bf[ks & 1][ni][1]);
        }
    }
    cpWait<0>();

    void* c = a.c;
    if (MODE == WGRAD) {
        c = a.cF32 ? static_cast<void*>(static_cast<float*>(a.c) + g * a.strideC)
                   : static_cast<void*>(static_cast<__nv_bfloat16*>(a.c) + g * a.strideC);
    }
#pragma unroll
    for (int mi = 0; mi < MI; mi++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int rl = wm * MI * 16 + mi * 16 + (lane >> 2) + h * 8;
            long long row;
            if (MODE == WGRAD) {
                if (m0 + rl >= a.M) continue;
                row = m0 + rl;
            } else {
                if (rowStart + rl >= rowEnd) continue;
                row = rowStart + rl;
            }
#pragma unroll
            for (int np = 0; np < NI / 2; np++) {
                int col = n0 + wn * NI * 8 + np * 16 + (lane & 3) * 2;
                epilogue4<__nv_bfloat16>(a, c, row, col, acc[mi][2 * np][2 * h], acc[mi][2 * np][2 * h + 1],
                                         acc[mi][2 * np + 1][2 * h], acc[mi][2 * np + 1][2 * h + 1]);
            }
        }
    }
}

// ---------------------------------------------------------------- fp32 SIMT kernel (tests, GroupedGemm)

constexpr int SM = 64, SN = 64, SK = 16, STHREADS = 256;

template <int MODE>
__global__ void __launch_bounds__(STHREADS) simtKernel(const __grid_constant__ GemmArgs a) {
    __shared__ float sA[SK][SM + 1];
    __shared__ float sB[SK][SN + 1];
    int g, mt, nt, rowStart, rowEnd;
    if (MODE == WGRAD) {
        int mTiles = (a.M + SM - 1) / SM, nTiles = (a.N + SN - 1) / SN;
        int t = blockIdx.x;
        g = t / (mTiles * nTiles);
        t -= g * mTiles * nTiles;
        mt = t / nTiles;
        nt = t % nTiles;
        rowStart = a.offsets[g];
        rowEnd = a.offsets[g + 1];
    } else {
        if (!rowTile(a, SM, SN, g, mt, nt)) return;
        rowStart = a.offsets[g] + mt * SM;
        rowEnd = a.offsets[g + 1];
    }
    const int m0 = mt * SM, n0 = nt * SN, tid = threadIdx.x;
    const int ty = tid >> 4, tx = tid & 15;
    const int cBase = (tx >> 2) * 16 + (tx & 3) * 2;   // columns cBase, +1, +8, +9
    const int myCols[4] = {cBase, cBase + 1, cBase + 8, cBase + 9};
    float acc[4][4] = {};
    for (int s = 0; s < a.nseg; s++) {
        const Seg sg = pick(a, s);
        const float* A = static_cast<const float*>(sg.a);
        const float* B = static_cast<const float*>(sg.b);
        const int K = MODE == WGRAD ? rowEnd - rowStart : sg.K;
        for (int k0 = 0; k0 < K; k0 += SK) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int e = tid + i * STHREADS;
                float v = 0.f;
                int kl, ml;
                if (MODE != WGRAD) {
                    ml = e >> 4; kl = e & 15;
                    int r = rowStart + ml, k = k0 + kl;
                    if (r < rowEnd && k < K) v = A[(long long)r * sg.lda + k];
                } else {
                    kl = e >> 6; ml = e & 63;
                    int k = k0 + kl, m = m0 + ml;
                    if (k < K && m < a.M) v = A[(long long)(rowStart + k) * sg.lda + (long long)(m >> 3) * sg.aChunk + (m & 7)];
                }
                sA[kl][ml] = v;
                float w = 0.f;
                int nl;
                if (MODE == FWD) {
                    nl = e >> 4; kl = e & 15;
                    int n = n0 + nl, k = k0 + kl;
                    if (n < a.N && k < K) w = B[g * sg.strideB + (long long)n * sg.ldb + k];
                } else {
                    kl = e >> 6; nl = e & 63;
                    int n = n0 + nl, k = k0 + kl;
                    long long row = MODE == WGRAD ? (long long)(rowStart + k) * sg.ldb
                                                  : g * sg.strideB + (long long)k * sg.ldb;
                    if (k < K && n < a.N) w = B[row + (long long)(n >> 3) * sg.bChunk + (n & 7)];
                }
                sB[kl][nl] = w;
            }
            __syncthreads();
#pragma unroll
            for (int k = 0; k < SK; k++) {
                float av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) av[i] = sA[k][ty * 4 + i];
#pragma unroll
                for (int j = 0; j < 4; j++) bv[j] = sB[k][myCols[j]];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
            __syncthreads();
        }
    }
    void* c = MODE == WGRAD ? static_cast<void*>(static_cast<float*>(a.c) + g * a.strideC) : a.c;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int rl = ty * 4 + i;
        long long row;
        if (MODE == WGRAD) {
            if (m0 + rl >= a.M) continue;
            row = m0 + rl;
        } else {
            if (rowStart + rl >= rowEnd) continue;
            row = rowStart + rl;
        }
        epilogue4<float>(a, c, row, n0 + cBase, acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    }
}

// ---------------------------------------------------------------- Hopper wgmma kernel (FWD, DGRAD; sm_90a)
// 128 × BN × 64 tiles (BN = 128 or 256), 2 warpgroups of 64 rows each issuing wgmma m64nBNk16 with both operands
// in shared memory (128-byte swizzle; A K-major, B K-major or N-major), fed by the same cp.async pipeline; used
// for the large FWD and DGRAD products on sm_90 devices. The accumulator fragment of wgmma per n8 block is
// mma.sync's, so the plain epilogue is shared; the SwiGLU epilogues are staged through shared memory instead
// (16-byte coalesced stores of h13/act and dh13, loads of h13, which is prefetched into L2 when the tile starts).

constexpr int WG_BM = 128, WG_BK = 64, WG_THREADS = 256;
// Shared memory of one configuration: the pipeline, or the staged SwiGLU-backward tile if larger; +1 KB to align.
template <int BN> __host__ __device__ constexpr int wgStageHalfs() { return (WG_BM + BN) * WG_BK; }
template <int BN> __host__ __device__ constexpr int wgEpiPitch() { return 2 * BN + 8; }   // halfs per staged h13 row (16 bytes of padding)
template <int BN, int STAGES> constexpr int wgSmem() {
    return (STAGES * wgStageHalfs<BN>() > WG_BM * wgEpiPitch<BN>() ? STAGES * wgStageHalfs<BN>()
                                                                  : WG_BM * wgEpiPitch<BN>()) * 2 + 1024;
}

// Shared-memory matrix descriptor, 128-byte swizzle: K-major (lbo unused) or MN-major (lbo = bytes between
// 64-element MN atoms); sbo = 1024 bytes between groups of 8 rows.
__device__ __forceinline__ uint64_t wgDesc(const void* p, uint64_t lbo) {
    uint64_t a = static_cast<uint64_t>(__cvta_generic_to_shared(p));
    return ((a & 0x3FFFF) >> 4) | ((lbo >> 4) << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}

// One wgmma m64nBNk16 (BN = 128 or 256: BN/2 fp32 accumulators per thread).
template <int BN, int TRANS_B>   // TRANS_B 0: B K-major, 1: B MN-major
__device__ __forceinline__ void wgmma(float (&d)[BN / 2], uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (BN == 128) {
    asm volatile("{\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, 1, 1, 1, 0, %66;\n"
                 "}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "n"(TRANS_B));
    } else {
    asm volatile("{\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, 1, 1, 1, 0, %130;\n"
                 "}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "l"(da), "l"(db), "n"(TRANS_B));
    }
#else
    __trap();
#endif
}

__device__ __forceinline__ void wgFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
// Commits the wgmma issued since the last commit and waits until at most PENDING groups are in flight.
template <int PENDING>
__device__ __forceinline__ void wgCommitWait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#endif
}
__device__ __forceinline__ void proxyFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Asks the copy engine to bring bytes (a multiple of 16, 16-byte aligned) at p into L2.
__device__ __forceinline__ void prefetchL2(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// EPI_SWIGLU_BWD through shared memory (the pipeline's buffers are free by now): h13's packed columns 2·n0 ..
// 2·n0 + 2·BN of the tile's rows are loaded with 16-byte cp.async, each thread turns its dact values and the
// h1, h3 beside them into dh1, dh3 in place, and the tile goes out with 16-byte stores.
template <int BN>
__device__ __forceinline__ void wgSwigluBwd(const GemmArgs& a, __nv_bfloat16* sH, const float (&acc)[BN / 2],
                                            int rowStart, int rowEnd, int n0) {
    constexpr int PITCH = wgEpiPitch<BN>(), CPR = 2 * BN / 8;   // 16-byte chunks per staged row
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warpInWg = (tid >> 5) & 3;
    const int pcols = min(2 * BN, 2 * (a.N - n0));              // packed columns of this tile (a multiple of 16)
    const __nv_bfloat16* h = static_cast<const __nv_bfloat16*>(a.aux);
    __nv_bfloat16* dh = static_cast<__nv_bfloat16*>(a.c);
    for (int c = tid; c < WG_BM * CPR; c += WG_THREADS) {
        int r = c / CPR, pc = (c % CPR) * 8;
        bool ok = rowStart + r < rowEnd && pc < pcols;
        cpAsync16(sH + r * PITCH + pc, ok ? h + (long long)(rowStart + r) * a.ldaux + 2 * n0 + pc : h, ok);
    }
    cpCommit();
    cpWait<0>();
    __syncthreads();
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int rl = wg * 64 + warpInWg * 16 + (lane >> 2) + hh * 8;
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
#pragma unroll
            for (int i = 0; i < 2; i++) {   // dact columns cc, cc+1 → packed p (gate), p + 8 (up)
                int cc = np * 16 + 8 * i + (lane & 3) * 2;
                int p = (cc >> 3) * 16 + (cc & 7);
                __nv_bfloat162* g2 = reinterpret_cast<__nv_bfloat162*>(sH + rl * PITCH + p);
                __nv_bfloat162* u2 = reinterpret_cast<__nv_bfloat162*>(sH + rl * PITCH + p + 8);
                float2 h1 = __bfloat1622float2(*g2), h3 = __bfloat1622float2(*u2);
                float d0 = a.alpha * acc[8 * np + 4 * i + 2 * hh], d1 = a.alpha * acc[8 * np + 4 * i + 2 * hh + 1];
                float s0 = 1.f / (1.f + __expf(-h1.x)), s1 = 1.f / (1.f + __expf(-h1.y));
                *g2 = __floats2bfloat162_rn(d0 * h3.x * s0 * (1.f + h1.x * (1.f - s0)),
                                            d1 * h3.y * s1 * (1.f + h1.y * (1.f - s1)));
                *u2 = __floats2bfloat162_rn(d0 * h1.x * s0, d1 * h1.y * s1);
            }
        }
    }
    __syncthreads();
    for (int c = tid; c < WG_BM * CPR; c += WG_THREADS) {
        int r = c / CPR, pc = (c % CPR) * 8;
        if (rowStart + r < rowEnd && pc < pcols) {
            *reinterpret_cast<uint4*>(dh + (long long)(rowStart + r) * a.ldc + 2 * n0 + pc) =
                    *reinterpret_cast<const uint4*>(sH + r * PITCH + pc);
        }
    }
}

// EPI_SWIGLU_FWD through shared memory: each thread writes its rounded gate/up pairs (h13, packed columns) and
// silu(gate)·up (act) into staged tiles, which go out with 16-byte stores.
template <int BN>
__device__ __forceinline__ void wgSwigluFwd(const GemmArgs& a, __nv_bfloat16* sH, const float (&acc)[BN / 2],
                                            int rowStart, int rowEnd, int n0) {
    constexpr int PH = BN + 8, PA = BN / 2 + 8;   // halfs per staged h13 / act row (16 bytes of padding)
    static_assert(WG_BM * (PH + PA) <= 3 * wgStageHalfs<BN>(), "staged SwiGLU tiles exceed the pipeline's buffers");
    __nv_bfloat16* sAct = sH + WG_BM * PH;
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warpInWg = (tid >> 5) & 3;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int rl = wg * 64 + warpInWg * 16 + (lane >> 2) + hh * 8;
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {   // gate columns c, c+1 and their up columns c+8, c+9
            int c = np * 16 + (lane & 3) * 2;
            __nv_bfloat162 g = __floats2bfloat162_rn(a.alpha * acc[8 * np + 2 * hh], a.alpha * acc[8 * np + 2 * hh + 1]);
            __nv_bfloat162 u = __floats2bfloat162_rn(a.alpha * acc[8 * np + 4 + 2 * hh],
                                                     a.alpha * acc[8 * np + 4 + 2 * hh + 1]);
            *reinterpret_cast<__nv_bfloat162*>(sH + rl * PH + c) = g;
            *reinterpret_cast<__nv_bfloat162*>(sH + rl * PH + c + 8) = u;
            float2 gf = __bfloat1622float2(g), uf = __bfloat1622float2(u);
            *reinterpret_cast<__nv_bfloat162*>(sAct + rl * PA + (c >> 4) * 8 + (c & 7)) =
                    __floats2bfloat162_rn(gf.x / (1.f + __expf(-gf.x)) * uf.x, gf.y / (1.f + __expf(-gf.y)) * uf.y);
        }
    }
    __syncthreads();
    const int cols = min(BN, a.N - n0);           // packed columns of this tile (a multiple of 16)
    __nv_bfloat16* h = static_cast<__nv_bfloat16*>(a.c);
    __nv_bfloat16* act = static_cast<__nv_bfloat16*>(a.c2);
    for (int c = tid; c < WG_BM * BN / 8; c += WG_THREADS) {
        int r = c / (BN / 8), pc = (c % (BN / 8)) * 8;
        if (rowStart + r < rowEnd && pc < cols) {
            *reinterpret_cast<uint4*>(h + (long long)(rowStart + r) * a.ldc + n0 + pc) =
                    *reinterpret_cast<const uint4*>(sH + r * PH + pc);
        }
    }
    for (int c = tid; c < WG_BM * BN / 16; c += WG_THREADS) {
        int r = c / (BN / 16), pc = (c % (BN / 16)) * 8;
        if (rowStart + r < rowEnd && pc < cols / 2) {
            *reinterpret_cast<uint4*>(act + (long long)(rowStart + r) * a.ldc2 + n0 / 2 + pc) =
                    *reinterpret_cast<const uint4*>(sAct + r * PA + pc);
        }
    }
}

// FWD (B K-major) or DGRAD (B N-major, MN-major tiles of BN/64 atoms × 64 k-rows); LATE: slot refill (below)
template <int MODE, int BN, int WG_STAGES, int MINB, bool LATE>
__global__ void __launch_bounds__(WG_THREADS, MINB) wgKernel(const __grid_constant__ GemmArgs a) {
    extern __shared__ __align__(16) unsigned char wgRaw[];
    __nv_bfloat16* smem = reinterpret_cast<__nv_bfloat16*>(
            (reinterpret_cast<uintptr_t>(wgRaw) + 1023) & ~static_cast<uintptr_t>(1023));
    int g, mt, nt;
    if (!rowTileMFast(a, WG_BM, BN, g, mt, nt)) return;
    const int rowStart = a.offsets[g] + mt * WG_BM, rowEnd = a.offsets[g + 1];
    const int n0 = nt * BN;
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, warpInWg = (tid >> 5) & 3;

    int ktiles[3] = {0, 0, 0};
    int total = 0;
#pragma unroll
    for (int s = 0; s < 3; s++) {
        if (s < a.nseg) {
            ktiles[s] = (a.seg[s].K + WG_BK - 1) / WG_BK;
            total += ktiles[s];
        }
    }
    auto load = [&](int stage, int kt) {
        int s = 0;
        if (kt >= ktiles[0]) { kt -= ktiles[0]; s = 1; if (kt >= ktiles[1]) { kt -= ktiles[1]; s = 2; } }
        const Seg sg = pick(a, s);
        const int k0 = kt * WG_BK;
        const __nv_bfloat16* A = static_cast<const __nv_bfloat16*>(sg.a);
        const __nv_bfloat16* B = static_cast<const __nv_bfloat16*>(sg.b);
        __nv_bfloat16* sA = smem + stage * wgStageHalfs<BN>();
        __nv_bfloat16* sB = sA + WG_BM * WG_BK;
#pragma unroll
        for (int i = 0; i < WG_BM * 8 / WG_THREADS; i++) {   // A: 128 rows of 8 16-byte chunks
            int c = tid + i * WG_THREADS;
            int row = c >> 3, kc = c & 7;
            int k = k0 + kc * 8;
            int r = rowStart + row;
            bool okA = r < rowEnd && k < sg.K;
            cpAsync16(sA + row * 64 + ((kc ^ (row & 7)) << 3), okA ? A + (long long)r * sg.lda + k : A, okA);
        }
#pragma unroll
        for (int i = 0; i < BN * 8 / WG_THREADS; i++) {
            int c = tid + i * WG_THREADS;
            if (MODE == FWD) {                  // BN rows of 8 chunks along K
                int row = c >> 3, kc = c & 7;
                int k = k0 + kc * 8, n = n0 + row;
                bool okB = n < a.N && k < sg.K;
                cpAsync16(sB + row * 64 + ((kc ^ (row & 7)) << 3),
                          okB ? B + g * sg.strideB + (long long)n * sg.ldb + k : B, okB);
            } else {                            // 64 k-rows of BN/8 chunks along N, in 64-column atoms
                int kr = c / (BN / 8), nc = c % (BN / 8), kb = k0 + kr, n = n0 + nc * 8;
                bool okB = kb < sg.K && n < a.N;
                int at = (nc >> 3) * 4096 + kr * 64 + (((nc & 7) ^ (kr & 7)) << 3);
                cpAsync16(sB + at, okB ? B + g * sg.strideB + (long long)kb * sg.ldb + (long long)(n >> 3) * sg.bChunk
                                       : B, okB);
            }
        }
    };

    // the epilogue's h13 rows into L2 now (a prefetch inside the K loop makes ptxas serialize the wgmma, C7515)
    if (a.epilogue == EPI_SWIGLU_BWD && tid < WG_BM && rowStart + tid < rowEnd) {
        prefetchL2(static_cast<const __nv_bfloat16*>(a.aux) + (long long)(rowStart + tid) * a.ldaux + 2 * n0,
                   4u * min(BN, a.N - n0));
    }
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] = 0.f;
    // Loads run AHEAD tiles in front of the wgmma, one group of wgmma stays in flight (wait_group 1). Refilled
    // early (one barrier per k-tile), a slot takes tile kt+STAGES-2 before tile kt's wgmma are issued, two tiles
    // after its last use; refilled late, a second barrier after wait_group(1) frees tile kt-1's slot for tile
    // kt+STAGES-1. Late is faster at 2 CTAs per SM (3 stages), early at 1 CTA per SM (deploy/gpu/NOTES.md).
    constexpr int AHEAD = LATE ? WG_STAGES - 1 : WG_STAGES - 2;
#pragma unroll
    for (int s = 0; s < AHEAD; s++) {
        if (s < total) load(s, s);
        cpCommit();
    }
    for (int kt = 0; kt < total; kt++) {
        cpWait<AHEAD - 1>();
        proxyFence();
        __syncthreads();
        if (!LATE) {
            if (kt + AHEAD < total) load((kt + AHEAD) % WG_STAGES, kt + AHEAD);
            cpCommit();
        }
        const __nv_bfloat16* sA = smem + (kt % WG_STAGES) * wgStageHalfs<BN>() + wg * 64 * 64;
        const __nv_bfloat16* sB = smem + (kt % WG_STAGES) * wgStageHalfs<BN>() + WG_BM * WG_BK;
        uint64_t da = wgDesc(sA, 16), db = wgDesc(sB, MODE == FWD ? 16 : 8192);
        wgFence();
#pragma unroll
        for (int j = 0; j < WG_BK / 16; j++) {   // next k16: +32 bytes in a K-major row, +16 rows (2048 bytes) MN-major
            wgmma<BN, MODE == FWD ? 0 : 1>(acc, da + 2 * j, db + (MODE == FWD ? 2 : 128) * j);
        }
        wgCommitWait<1>();
        if (LATE) {
            __syncthreads();
            if (kt + AHEAD < total) load((kt + AHEAD) % WG_STAGES, kt + AHEAD);
            cpCommit();
        }
    }
    wgCommitWait<0>();
    cpWait<0>();
    if (a.epilogue != EPI_STORE) {
        __syncthreads();   // every warpgroup is done with the pipeline's buffers
        if (a.epilogue == EPI_SWIGLU_BWD) wgSwigluBwd<BN>(a, smem, acc, rowStart, rowEnd, n0);
        else wgSwigluFwd<BN>(a, smem, acc, rowStart, rowEnd, n0);
        return;
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int rl = wg * 64 + warpInWg * 16 + (lane >> 2) + h * 8;
        if (rowStart + rl >= rowEnd) continue;
        long long row = rowStart + rl;
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
            int col = n0 + np * 16 + (lane & 3) * 2;
            epilogue4<__nv_bfloat16>(a, a.c, row, col, acc[8 * np + 2 * h], acc[8 * np + 2 * h + 1],
                                     acc[8 * np + 4 + 2 * h], acc[8 * np + 4 + 2 * h + 1]);
        }
    }
}

template <int MODE, int BN, int STAGES, int MINB, bool LATE>
int launchWgCfg(const GemmArgs& a, cudaStream_t stream) {
    constexpr int SMEM = wgSmem<BN, STAGES>();
    static bool configured = false;
    if (!configured) {
        cudaError_t e = cudaFuncSetAttribute(wgKernel<MODE, BN, STAGES, MINB, LATE>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM);
        if (e != cudaSuccess) return e;
        configured = true;
    }
    long long blocks = ((long long)(a.rows + WG_BM - 1) / WG_BM + a.groups) * ((a.N + BN - 1) / BN);
    if (blocks == 0) return cudaSuccess;
    wgKernel<MODE, BN, STAGES, MINB, LATE><<<(unsigned)blocks, WG_THREADS, SMEM, stream>>>(a);
    return cudaGetLastError();
}

// An integer from the environment, or fallback when unset (tuning overrides, deploy/gpu/NOTES.md).
int envInt(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v ? std::atoi(v) : fallback;
}

// 128 × 128 tiles, 3 stages and 2 CTAs per SM (one CTA's epilogue overlaps the other's main loop) measured
// fastest for the 64-expert shapes; 128 × 256 tiles, 4 stages, 1 CTA per SM for groups of many rows and wide
// outputs (Mixtral). SMK_WG_BN=128|256 (SMK_WG_BN_H13 for the gate/up product alone) overrides the choice.
template <int MODE>
int launchWg(const GemmArgs& a, cudaStream_t stream) {
    bool wide = a.groups > 0 && a.rows / a.groups >= 1024 && a.N >= 2048;
    int bn = envInt("SMK_WG_BN", wide ? 256 : 128);
    if (a.epilogue == EPI_SWIGLU_FWD) bn = envInt("SMK_WG_BN_H13", bn);
    return bn == 256 ? launchWgCfg<MODE, 256, 4, 1, false>(a, stream) : launchWgCfg<MODE, 128, 3, 2, true>(a, stream);
}

// Whether device 0 is a Hopper (sm_90): the wgmma kernel's machine code is built for sm_90a only.
bool hopper() {
    static int major = -1;
    if (major < 0) {
        cudaDeviceProp p;
        major = cudaGetDeviceProperties(&p, 0) == cudaSuccess ? p.major : 0;
    }
    return major == 9;
}

template <int MODE, typename C>
int launchTcCfg(const GemmArgs& a, cudaStream_t stream) {
    static bool configured = false;
    if (!configured) {
        cudaError_t e = cudaFuncSetAttribute(tcKernel<MODE, C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
        if (e != cudaSuccess) return e;
        configured = true;
    }
    long long blocks = MODE == WGRAD
            ? (long long)a.groups * ((a.M + C::BM - 1) / C::BM) * ((a.N + C::BN - 1) / C::BN)
            : ((long long)(a.rows + C::BM - 1) / C::BM + a.groups) * ((a.N + C::BN - 1) / C::BN);
    if (blocks == 0) return cudaSuccess;
    tcKernel<MODE, C><<<(unsigned)blocks, C::THREADS, C::SMEM, stream>>>(a);
    return cudaGetLastError();
}

template <int MODE>
int launchTc(const GemmArgs& a, cudaStream_t stream) {
    if (a.N <= 32) {
        return envInt("SMK_SKINNY_BK", 64) == 32 ? launchTcCfg<MODE, SkinnyN32>(a, stream)
                                                 : launchTcCfg<MODE, SkinnyN>(a, stream);
    }
    if constexpr (MODE == WGRAD) {
        if (a.M <= 32) return launchTcCfg<MODE, SkinnyM>(a, stream);
    }
    if constexpr (MODE != WGRAD) {
        if (hopper() && std::getenv("SMK_NO_WGMMA") == nullptr) return launchWg<MODE>(a, stream);
    }
    return launchTcCfg<MODE, Big>(a, stream);
}

template <int MODE>
int launchSimt(const GemmArgs& a, cudaStream_t stream) {
    long long blocks = MODE == WGRAD
            ? (long long)a.groups * ((a.M + SM - 1) / SM) * ((a.N + SN - 1) / SN)
            : ((long long)(a.rows + SM - 1) / SM + a.groups) * ((a.N + SN - 1) / SN);
    if (blocks == 0) return cudaSuccess;
    simtKernel<MODE><<<(unsigned)blocks, STHREADS, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace

template <>
int launch<__nv_bfloat16>(int mode, const GemmArgs& a, cudaStream_t stream) {
    // cp.async moves 16-byte chunks: every base, leading dimension and chunk stride must be a multiple of 8.
    for (int s = 0; s < a.nseg; s++) {
        const Seg& sg = a.seg[s];
        if ((reinterpret_cast<uintptr_t>(sg.a) | reinterpret_cast<uintptr_t>(sg.b)) & 15) return cudaErrorMisalignedAddress;
        if ((sg.lda | sg.ldb | sg.strideB | sg.aChunk | sg.bChunk | (mode == WGRAD ? 0 : sg.K)) & 7)
            return cudaErrorInvalidValue;
    }
    if (a.N & 7 || (mode == WGRAD && a.M & 7)) return cudaErrorInvalidValue;
    switch (mode) {
        case FWD: return launchTc<FWD>(a, stream);
        case DGRAD: return launchTc<DGRAD>(a, stream);
        default: return launchTc<WGRAD>(a, stream);
    }
}

template <>
int launch<float>(int mode, const GemmArgs& a, cudaStream_t stream) {
    switch (mode) {
        case FWD: return launchSimt<FWD>(a, stream);
        case DGRAD: return launchSimt<DGRAD>(a, stream);
        default: return launchSimt<WGRAD>(a, stream);
    }
}

}  // namespace smk
