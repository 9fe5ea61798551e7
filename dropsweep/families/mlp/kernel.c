/* Epochs of SGD for a batch of small Keras-style MLPs, one model at a time.
 *
 * Why C: at this size (16-row minibatches, 60-60-30-1) a batched torch step is bound by
 * memory traffic and per-call overhead, not arithmetic: every element-wise pass streams the
 * weights, gradients and velocities of *all* models through memory. Here each model trains
 * its whole epoch while its few kilobytes of parameters stay in the core's cache, and the
 * gradient of a weight row is applied as soon as it is computed. Semantics are exactly those
 * of the torch path in network.py (see engine.py): inverted dropout, Keras momentum
 * (v = m*v - lr*g; w += v), MaxNorm(c) on hidden layers after every step, each minibatch's
 * loss the mean over its real rows. Only dropout masks differ: they come from a counter-based
 * generator (SplitMix64 of key + counter), so a model's masks do not depend on its batch.
 *
 * Built at first use by kernel.py with the system C compiler; plain C99, no torch headers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#if defined(__FMA__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Subnormal floats flushed to zero (FTZ, DAZ) while an epoch runs, in this thread only, and
 * the caller's mode restored after: TensorFlow's CPU kernels run so (Keras's numbers), and a
 * velocity decaying towards zero (a weight whose gradient is almost always 0: one from a
 * nearly blank border pixel, a unit that stopped firing) otherwise turns subnormal, where every
 * operation on it costs about a hundred cycles: measured 1.6x slower a Fashion-MNIST epoch
 * (benchmarks/large_rows.py). Not -ffast-math's start-up code, which would flush the whole
 * process for good. */
#if defined(__SSE__)
static unsigned flush_subnormals(void) {
    const unsigned mode = _mm_getcsr();
    _mm_setcsr(mode | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return mode;
}
static void restore_mode(unsigned mode) { _mm_setcsr(mode); }
#else
static unsigned flush_subnormals(void) { return 0; }
static void restore_mode(unsigned mode) { (void)mode; }
#endif

#define KERAS_EPSILON 1e-7f
#define MAX_LAYERS 32
/* Floats in a vector; every row of a layer is padded to a multiple of this. It must match the
 * CPU's own registers: GCC splits a wider generic vector into pieces, spills them, and
 * lowered this kernel 8x slower on an AVX2 CPU at 16 (benchmarks/trial_speed.py). -DVL=n
 * forces a width (the tests build each). */
#ifndef VL
#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
#endif
#if VL != 4 && VL != 8 && VL != 16
#error "VL (floats in a vector) must be 4, 8 or 16"
#endif

/* GCC/Clang vector extensions. */
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline int64_t padded(int64_t n) { return (n + VL - 1) / VL * VL; }

/* a*b + c rounded once, lane by lane: the multiply-adds the kernel means, written out. The
 * build turns contraction off (kernel.py), so no other product is fused behind the source's
 * back: where the compiler fused which product of an expression changed with edits elsewhere
 * (inlining, common subexpressions), and with it the last bits of every weight; and fusion
 * differed between vector widths. */
#if defined(__AVX512F__) && VL == 16
static inline vf fused_v(vf a, vf b, vf c) { return (vf)_mm512_fmadd_ps(a, b, c); }
#elif defined(__FMA__) && VL == 8
static inline vf fused_v(vf a, vf b, vf c) { return (vf)_mm256_fmadd_ps(a, b, c); }
#elif defined(__FMA__) && VL == 4
static inline vf fused_v(vf a, vf b, vf c) { return (vf)_mm_fmadd_ps(a, b, c); }
#elif defined(__FMA__) || defined(__ARM_FEATURE_FMA)
/* (a width with no instruction above, as the tests force: the compiler vectorises this loop
 * only in part, but it rounds as they do) */
static inline vf fused_v(vf a, vf b, vf c) {
    vf out;
    for (int i = 0; i < VL; i++) out[i] = fmaf(a[i], b[i], c[i]);
    return out;
}
#else
/* A CPU without fused multiply-add (AVX without FMA, SSE only): fmaf would be a call into the
 * C library for every lane, so a product and a sum, rounded twice. The same at every width
 * on such a CPU, other last bits than an FMA CPU's. */
static inline vf fused_v(vf a, vf b, vf c) { return a * b + c; }
#endif
/* The same with a broadcast: a - (vf){0} is a in every lane (subtracting +0 changes no
 * float, -0 included). */
static inline vf fused(float a, vf b, vf c) { return fused_v(a - (vf){0}, b, c); }

/* What a product does with its result block s at c: store it, add it (the accumulator starts
 * from c), start from the row v (a layer's bias, the same for every row) and store it, the
 * same through ReLU, take it as the gradient of weights c with velocities v: Keras SGD,
 * v = mo*v - rate*s; c += v, while the block is still in registers, or take it as the
 * gradient of a ReLU layer's output a (at v, laid out as c) and store it through the ReLU
 * and dropout: a > 0 ? s * mo : 0 (a kept unit's mask value is the scale mo itself, and a
 * dropped unit's output is 0, so this is s times the mask); or, scoring, start from the
 * bias and store through a ReLU that keeps NaN as torch.relu does. */
enum { STORE, ADD, BIAS, BIAS_RELU, SGD, RELU_BACK, BIAS_RELU_NAN };

typedef int32_t vm __attribute__((vector_size(VL * sizeof(int32_t))));

static inline vf first(int mode, const float *c, const float *v) {
    return mode == ADD ? vload(c)
           : mode == BIAS || mode == BIAS_RELU || mode == BIAS_RELU_NAN ? vload(v) : (vf){0};
}

static inline void finish(int mode, float *c, float *v, vf s, float mo, float rate) {
    if (mode == SGD) {
        const vf vv = mo * vload(v) - rate * s;
        vstore(v, vv);
        vstore(c, vload(c) + vv);
    } else if (mode == BIAS_RELU) { /* s > 0 ? s : 0, NaN and -0 to +0 as the scalar form */
        vstore(c, (vf)((vm)s & (s > 0.0f)));
    } else if (mode == BIAS_RELU_NAN) { /* as torch.relu: NaN stays NaN (scoring) */
        vstore(c, (vf)((vm)s & ((s > 0.0f) | (s != s))));
    } else if (mode == RELU_BACK) {
        vstore(c, (vf)((vm)(s * mo) & (vload(v) > 0.0f)));
    } else {
        vstore(c, s);
    }
}

/* How a product is cut: column strips of NV vectors, and in each strip R rows computed at
 * once, R*NV accumulators in registers beside the strip's NV vectors of B and a broadcast of
 * A; more than the CPU has, and the compiler spills accumulators to the stack inside the k
 * loop. Two plans ("tiles"), chosen at run time (dropsweep_epoch's argument tiles):
 *  - NARROW: strips of 2 vectors, 8 rows where there are 32 vector registers (AVX-512), 6
 *    where there are 16 (AVX2, SSE), as BLAS kernels for AVX2 do; on an AMD EPYC (Zen 3)
 *    6 x 2 beat 3 x 4, 4 x 3, 5 x 2, 4 x 2 and 12 x 1 by 9% an epoch or more, and on a Zen 4
 *    with AVX-512, 8 x 2 beat 6 x 2 by 3% (in-process A/B, 16 Sonar trials);
 *  - WIDE: strips of 4 vectors, 4 rows (AVX-512's 32 registers only; built too where a test
 *    forces 16 floats a vector): on a Zen 4, 4 x 4 was 1.3x slower an epoch than 8 x 2 at
 *    the Sonar shape and 1.4x at the Fashion-MNIST one, where on Intel's AVX-512 it was the
 *    kernel's only plan. Which is faster depends on the CPU, so kernel.py times both on a
 *    shape's first training calls and keeps the faster (tiles.py).
 * How rows and columns are grouped changes no number: each sum still runs over k in order. */
enum { NARROW, WIDE };
#if defined(__AVX512F__)
#define NARROW_ROWS 8
#else
#define NARROW_ROWS 6
#endif
#if defined(__AVX512F__) || VL == 16
#define TILE_PLANS 2
#else
#define TILE_PLANS 1
#endif

/* C[i:i+R, 0:VL*NV] <- sum_k A(i, k) * B[k, 0:VL*NV], with A(i, k) = a[i*ai + k*ak]: the
 * R*NV accumulators in registers (R and NV constants: unrolled). */
#define GEMM_BLOCK(NV, R)                                                                    \
    static inline void block_nv##NV##_r##R(                                                  \
        int64_t i, int64_t K, const float *restrict a, int64_t ai, int64_t ak,               \
        const float *restrict b, int64_t ldb, float *c, float *v, int64_t ldc, int mode,     \
        float mo, float rate) {                                                              \
        vf s[R][NV];                                                                         \
        for (int r = 0; r < R; r++)                                                          \
            for (int u = 0; u < NV; u++)                                                     \
                s[r][u] = first(mode, c + (i + r) * ldc + VL * u, v + VL * u);               \
        for (int64_t k = 0; k < K; k++) {                                                    \
            vf bv[NV];                                                                       \
            for (int u = 0; u < NV; u++) bv[u] = vload(b + k * ldb + VL * u);                \
            for (int r = 0; r < R; r++) {                                                    \
                const float x = a[(i + r) * ai + k * ak];                                    \
                for (int u = 0; u < NV; u++) s[r][u] = fused(x, bv[u], s[r][u]);            \
            }                                                                                \
        }                                                                                    \
        for (int r = 0; r < R; r++)                                                          \
            for (int u = 0; u < NV; u++) {                                                   \
                const int64_t at = (i + r) * ldc + VL * u;                                   \
                finish(mode, c + at, v + at, s[r][u], mo, rate);                             \
            }                                                                                \
    }
#define GEMM_BLOCKS(NV)                                                                      \
    GEMM_BLOCK(NV, 1) GEMM_BLOCK(NV, 2) GEMM_BLOCK(NV, 3) GEMM_BLOCK(NV, 4)                  \
    GEMM_BLOCK(NV, 5) GEMM_BLOCK(NV, 6) GEMM_BLOCK(NV, 7) GEMM_BLOCK(NV, 8)
GEMM_BLOCKS(1)
GEMM_BLOCKS(2)
#if TILE_PLANS > 1
GEMM_BLOCKS(3)
GEMM_BLOCKS(4)
#endif

/* C[i, 0:VL*NV] for i < m: R rows at a time, the last m % R together too (one row alone
 * would wait on each multiply-add's latency). */
#define ARGS K, a, ai, ak, b, ldb, c, v, ldc, mode, mo, rate
#define GEMM_NV(NV, R) GEMM_NV_(NV, R) /* R expanded (NARROW_ROWS to its number) before ## */
#define GEMM_NV_(NV, R)                                                                      \
    static void gemm_nv##NV##_r##R(int64_t m, int64_t K, const float *restrict a, int64_t ai, \
                                   int64_t ak, const float *restrict b, int64_t ldb,         \
                                   float *c, float *v, int64_t ldc, int mode, float mo,      \
                                   float rate) {                                             \
        int64_t i = 0;                                                                       \
        for (; i + R <= m; i += R) block_nv##NV##_r##R(i, ARGS);                             \
        switch (m - i) {                                                                     \
        case 1: block_nv##NV##_r1(i, ARGS); break;                                           \
        case 2: block_nv##NV##_r2(i, ARGS); break;                                           \
        case 3: block_nv##NV##_r3(i, ARGS); break;                                           \
        case 4: block_nv##NV##_r4(i, ARGS); break;                                           \
        case 5: block_nv##NV##_r5(i, ARGS); break;                                           \
        case 6: block_nv##NV##_r6(i, ARGS); break;                                           \
        case 7: block_nv##NV##_r7(i, ARGS); break;                                           \
        default: break;                                                                      \
        }                                                                                    \
    }
/* the rows left over by the blocks go to the switch above: it has blocks of up to 7 */
typedef char rows_in_a_block_at_most_8[NARROW_ROWS <= 8 ? 1 : -1];
GEMM_NV(1, 8)
GEMM_NV(2, NARROW_ROWS)
#if TILE_PLANS > 1
GEMM_NV(1, 4)
GEMM_NV(2, 4)
GEMM_NV(3, 4)
GEMM_NV(4, 4)
#endif
#undef ARGS
#define GEMM_CALL(NV, R) GEMM_CALL_(NV, R)
#define GEMM_CALL_(NV, R)                                                                    \
    gemm_nv##NV##_r##R(m, K, a, ai, ak, b + j, ldb, c + j, vj, ldc, mode, mo, rate)

/* An m x n block of C (n a multiple of VL) from A B, cut as `tiles` says; v: the velocities
 * beside C when mode is SGD, the ReLU layer's output beside C when RELU_BACK, the bias row
 * when BIAS, BIAS_RELU or BIAS_RELU_NAN (else unused). */
static void gemm(int64_t m, int64_t n, int64_t K, const float *a, int64_t ai, int64_t ak,
                 const float *b, int64_t ldb, float *c, float *v, int64_t ldc, int mode,
                 float mo, float rate, int tiles) {
#if TILE_PLANS > 1
    if (tiles == WIDE) {
        for (int64_t j = 0; j < n; j += 4 * VL) {
            float *vj = v ? v + j : c + j;
            switch ((n - j) / VL) {
            case 1: GEMM_CALL(1, 4); break;
            case 2: GEMM_CALL(2, 4); break;
            case 3: GEMM_CALL(3, 4); break;
            default: GEMM_CALL(4, 4); break;
            }
        }
        return;
    }
#endif
    (void)tiles;
    for (int64_t j = 0; j < n; j += 2 * VL) {
        float *vj = v ? v + j : c + j;
        if (n - j == VL)
            GEMM_CALL(1, 8);
        else
            GEMM_CALL(2, NARROW_ROWS);
    }
}
#undef GEMM_CALL
#undef GEMM_CALL_

/* How many tile plans this build has (NARROW, then WIDE where it has two). */
int dropsweep_tile_plans(void) { return TILE_PLANS; }

/* Transpose VL vectors of VL in registers: log2(VL) stages, each swapping the off-diagonal
 * halves of 2s x 2s blocks (row i with bit s clear trades its elements with bit s set for
 * row i+s's elements with bit s clear). A few shuffles per row instead of a strided gather
 * of every element (which took ~6% of an AVX2 epoch at Sonar's shapes). */
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));
#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif
#define UNPAREN(...) __VA_ARGS__
#define TRANSPOSE_STAGE(S, LO, HI)                                                          \
    for (int i = 0; i < VL; i++)                                                             \
        if (!(i & S)) {                                                                      \
            const vf a = r[i], b = r[i + S];                                                 \
            r[i] = SHUFFLE(a, b, UNPAREN LO);                                                \
            r[i + S] = SHUFFLE(a, b, UNPAREN HI);                                            \
        }

static inline void transpose_block(vf r[VL]) {
#if VL == 16
    TRANSPOSE_STAGE(1, (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                    (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31));
    TRANSPOSE_STAGE(2, (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                    (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31));
    TRANSPOSE_STAGE(4, (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                    (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31));
    TRANSPOSE_STAGE(8, (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                    (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31));
#elif VL == 8
    TRANSPOSE_STAGE(1, (0, 8, 2, 10, 4, 12, 6, 14), (1, 9, 3, 11, 5, 13, 7, 15));
    TRANSPOSE_STAGE(2, (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15));
    TRANSPOSE_STAGE(4, (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15));
#else
    TRANSPOSE_STAGE(1, (0, 4, 2, 6), (1, 5, 3, 7));
    TRANSPOSE_STAGE(2, (0, 1, 4, 5), (2, 3, 6, 7));
#endif
}

/* wt[j, k] = w[k, j] for k < in, j < out: w is [in x ldw], wt [out x ldt]; ldw and ldt are
 * multiples of VL and wt's padded columns (k >= in) get zeros. */
static void transpose(const float *w, int64_t in, int64_t ldw, float *wt, int64_t out,
                      int64_t ldt) {
    for (int64_t k0 = 0; k0 < in; k0 += VL)
        for (int64_t j0 = 0; j0 < out; j0 += VL) {
            vf r[VL];
            for (int64_t i = 0; i < VL; i++)
                r[i] = k0 + i < in ? vload(w + (k0 + i) * ldw + j0) : (vf){0};
            transpose_block(r);
            for (int64_t i = 0; i < VL && j0 + i < out; i++)
                vstore(wt + (j0 + i) * ldt + k0, r[i]);
        }
}

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* mask[i] = scale where unit i is kept (probability keep / 2^16), else 0. Unit u of the
 * stream is 16-bit lane u % 4 of the 64-bit word SplitMix64(key + (u / 4) * golden): four
 * units per mix. */
static inline float lane_mask(uint64_t z, unsigned lane, uint32_t keep, float scale) {
    return (uint32_t)((z >> (16 * lane)) & 0xffff) < keep ? scale : 0.0f;
}

static void fill_mask(float *restrict mask, int64_t n, uint64_t key, uint64_t *ctr,
                      uint32_t keep, float scale) {
    const uint64_t golden = 0x9e3779b97f4a7c15ULL;
    uint64_t u = *ctr;
    const uint64_t end = u + (uint64_t)n;
    for (; u < end && (u & 3); u++) /* the rest of a word begun by the last call */
        *mask++ = lane_mask(mix64(key + (u >> 2) * golden), (unsigned)(u & 3), keep, scale);
    uint64_t first = u >> 2, words = (end - u) >> 2;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Whole words in blocks: the words mixed in one pass, then each 16-bit lane compared
     * in another, both vectorised (lane u of a little-endian word is its u-th uint16). */
    enum { BLOCK = 64 };
    union { uint64_t words[BLOCK]; uint16_t lanes[4 * BLOCK]; } z; /* (C99 allows the pun) */
    while (words > 0) {
        const uint64_t w = words < BLOCK ? words : BLOCK;
        for (uint64_t i = 0; i < w; i++) z.words[i] = mix64(key + (first + i) * golden);
        for (uint64_t j = 0; j < 4 * w; j++) mask[j] = z.lanes[j] < keep ? scale : 0.0f;
        mask += 4 * w;
        first += w;
        words -= w;
        u += 4 * w;
    }
#else
    for (uint64_t i = 0; i < words; i++) { /* whole words: this loop vectorises */
        const uint64_t z = mix64(key + (first + i) * golden);
        for (unsigned lane = 0; lane < 4; lane++)
            mask[4 * i + lane] = lane_mask(z, lane, keep, scale);
    }
    mask += 4 * words;
    u += 4 * words;
#endif
    for (; u < end; u++)
        *mask++ = lane_mask(mix64(key + (u >> 2) * golden), (unsigned)(u & 3), keep, scale);
    *ctr = end;
}

/* max(state, 1 if any of x[:n] is infinite, 2 if any is NaN), from the bits (vectorises). */
static int8_t worst(int8_t state, const float *restrict x, int64_t n) {
    uint32_t nonfinite = 0, nan = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        const uint32_t top = (u & 0x7f800000u) == 0x7f800000u;
        nonfinite |= top;
        nan |= top & ((u & 0x7fffffu) != 0);
    }
    const int8_t here = nan ? 2 : nonfinite ? 1 : 0;
    return here > state ? here : state;
}

/* out[j] = sum over k < in of w[k, j]^2 (w [in x ld], j < op, op a multiple of VL): each
 * column's squares summed in row order, strips of up to 8 vectors of columns side by side in
 * registers (independent sums, none waiting on another; summed through memory, each step
 * waited on the store of the one before). */
#define COLUMN_SQUARES(NV)                                                                   \
    static inline void column_squares_nv##NV(const float *restrict w, int64_t in, int64_t ld, \
                                             float *restrict out) {                          \
        vf s[NV];                                                                            \
        for (int u = 0; u < NV; u++) s[u] = (vf){0};                                         \
        for (int64_t k = 0; k < in; k++)                                                     \
            for (int u = 0; u < NV; u++) {                                                   \
                const vf x = vload(w + k * ld + VL * u);                                     \
                s[u] = fused_v(x, x, s[u]);                                                  \
            }                                                                                \
        for (int u = 0; u < NV; u++) vstore(out + VL * u, s[u]);                             \
    }
COLUMN_SQUARES(8)
COLUMN_SQUARES(4)
COLUMN_SQUARES(2)
COLUMN_SQUARES(1)

static void column_squares(const float *w, int64_t in, int64_t op, float *out) {
    int64_t j = 0;
    for (; j + 8 * VL <= op; j += 8 * VL) column_squares_nv8(w + j, in, op, out + j);
    if (j + 4 * VL <= op) { column_squares_nv4(w + j, in, op, out + j); j += 4 * VL; }
    if (j + 2 * VL <= op) { column_squares_nv2(w + j, in, op, out + j); j += 2 * VL; }
    if (j + VL <= op) column_squares_nv1(w + j, in, op, out + j);
}

/* A layer of one output (a sigmoid's): act^T d applied to its weights, column 0 of w and v
 * ([in x ld]), as the SGD product applies it, but with the layer's inputs across the vector,
 * not its one output: the product did VL lanes of work for one real column (4% of a Sonar
 * epoch, AVX-512). The same multiply-adds in the same order (each input's sum over the rows),
 * so the same bits; -DGENERAL_PRODUCTS builds the product instead (the tests compare). */
static void sgd_one_output(int64_t in, int64_t rows, const float *restrict act, int64_t ip,
                           const float *restrict d, int64_t ld, float *restrict w,
                           float *restrict v, float mo, float rate) {
    for (int64_t i0 = 0; i0 < in; i0 += VL) {
        vf s = {0};
        for (int64_t r = 0; r < rows; r++) s = fused(d[r * ld], vload(act + r * ip + i0), s);
        for (int64_t i = i0; i < in && i < i0 + VL; i++) {
            const float vv = mo * v[i * ld] - rate * s[i - i0];
            v[i * ld] = vv;
            w[i * ld] += vv;
        }
    }
}

/* A dense [rows x cols] matrix into rows padded to ld, and back (a model's weights and
 * velocities into its cache copies and out of them). */
static void pad_rows(float *restrict dst, const float *restrict src, int64_t rows, int64_t cols,
                     int64_t ld) {
    for (int64_t k = 0; k < rows; k++)
        for (int64_t j = 0; j < cols; j++) dst[k * ld + j] = src[k * cols + j];
}

static void unpad_rows(float *restrict dst, const float *restrict src, int64_t rows,
                       int64_t cols, int64_t ld) {
    for (int64_t k = 0; k < rows; k++)
        for (int64_t j = 0; j < cols; j++) dst[k * cols + j] = src[k * ld + j];
}

/* The keep probability as a multiple of 2^-16 (2^16 = keep every unit). */
static inline uint32_t keep16(float rate) {
    return (uint32_t)lrint((1.0 - (double)rate) * 65536.0);
}

/* For tests: n mask values for a dropout rate from (key, counter), as training draws them. */
void dropsweep_masks(float *out, int64_t n, uint64_t key, uint64_t ctr, float rate) {
    fill_mask(out, n, key, &ctr, keep16(rate), 1.0f / (1.0f - rate));
}

/* Epoch orders (dropsweep.train.loop.epoch_order): for each of `rows` rows of `width` uniform
 * float32 keys (torch.rand's: multiples of 2^-24), row r's positions sorted by key, ties by
 * position, padding positions (n_train[r] and after) last in order: what that function's
 * NumPy path gives. The key's 24 bits then the position make one unique int64; a counting
 * sort on the top bits (about one key a bucket), then an insertion sort of the nearly sorted
 * result: linear in the row, where the comparison sort of each short row, and the tensor
 * passes making the int64 keys, cost the search's Python thread ~1 s (Sonar, 64 trials).
 * Returns 0, or -1 when scratch memory is short. */
static inline int64_t bucket_of(int64_t bits, int lg, int64_t nb) {
    const int64_t b = bits >> (24 - lg);
    return b < nb ? b : nb; /* padding (2^25): the last bucket, nb */
}

int dropsweep_order(const float *keys, const int64_t *n_train, int64_t rows, int64_t width,
                    int64_t *out) {
    int lg = 0, shift = 1;
    while (lg < 20 && ((int64_t)1 << lg) < width) lg++;
    while (shift < 40 && ((int64_t)1 << shift) < width) shift++;
    const int64_t nb = (int64_t)1 << lg; /* buckets of real keys; bucket nb: padding */
    int64_t *count = (int64_t *)malloc((size_t)(nb + 2) * sizeof(int64_t));
    int64_t *tmp = (int64_t *)malloc((size_t)(width > 0 ? width : 1) * sizeof(int64_t));
    if (!count || !tmp) {
        free(count);
        free(tmp);
        return -1;
    }
    const int64_t mask = ((int64_t)1 << shift) - 1, padding = (int64_t)1 << 25;
    for (int64_t r = 0; r < rows; r++) {
        const float *k = keys + r * width;
        int64_t *t = out + r * width; /* the composite keys, before they are sorted into tmp */
        memset(count, 0, (size_t)(nb + 2) * sizeof(int64_t));
        for (int64_t i = 0; i < width; i++) {
            const float x = k[i] * 16777216.0f; /* torch.rand's: 0 <= x < 2^24, an integer */
            const int64_t bits = i >= n_train[r] ? padding : x >= 0.0f && x < 33554432.0f
                                 ? (int64_t)x : x >= 0.0f ? padding : 0; /* NaN, < 0: 0 */
            t[i] = bits << shift | i;
            count[bucket_of(bits, lg, nb) + 1]++;
        }
        for (int64_t b = 1; b <= nb + 1; b++) count[b] += count[b - 1];
        for (int64_t i = 0; i < width; i++) tmp[count[bucket_of(t[i] >> shift, lg, nb)]++] = t[i];
        for (int64_t i = 1; i < width; i++) { /* out of order only within a bucket */
            const int64_t x = tmp[i];
            int64_t j = i;
            for (; j > 0 && tmp[j - 1] > x; j--) tmp[j] = tmp[j - 1];
            tmp[j] = x;
        }
        for (int64_t i = 0; i < width; i++) t[i] = tmp[i] & mask;
    }
    free(count);
    free(tmp);
    return 0;
}

/* The largest of z[0..O) (softmax's shift; a NaN is passed over unless it is z[0]). */
static inline float row_max(const float *z, int64_t O) {
    float top = z[0];
    for (int64_t j = 1; j < O; j++) top = z[j] > top ? z[j] : top;
    return top;
}

/* Row `row` of a table into a: float32 already scaled (xf), or 8-bit values (xb) divided by
 * divisor as they are read. */
static inline void read_row(float *restrict a, int64_t row, int64_t F, const float *xf,
                            const uint8_t *xb, float divisor) {
    if (xb) {
        const uint8_t *restrict src = xb + row * F;
        for (int64_t k = 0; k < F; k++) a[k] = (float)src[k] / divisor;
    } else {
        memcpy(a, xf + row * F, (size_t)F * sizeof(float));
    }
}

/* Model m's score on rows idx[:count] (its held-out or its training rows), as the engine's
 * torch evaluation computes it (no dropout; ReLU keeps a NaN, as torch.relu does): rows
 * predicted right (a sigmoid's logit > 0, else the first largest logit, NaN first as
 * torch.argmax) and their summed loss (binary cross-entropy on the logit in torch's form,
 * (1 - y) z - log sigmoid(z), infinite logits included; else softmax cross-entropy), summed
 * in double (a float sum row by row drifted 2e-6 over 100,000 rows), into scores[m] and
 * scores[models + m]. A logit within rounding of the threshold may fall the other way than
 * in torch's product, which adds the bias last. Rows go through the forward products bs at a
 * time, with the parameters still in cache: at the end of a span this costs a fraction of a
 * percent of it, where the checkpoint's torch evaluation gathered every model's rows again
 * and read every weight from memory (~3% of a Sonar search). */
static void score_rows(int64_t m, int64_t models, int64_t L, const int64_t *n,
                       const int64_t *np, int64_t bs, float *const *w, float *const *b,
                       float *const *act, const float *xf, const uint8_t *xb, float divisor,
                       const int64_t *labels, const int64_t *idx, int64_t count,
                       float *scores, int tiles) {
    const int64_t F = n[0], O = n[L], opL = np[L];
    double correct = 0.0, loss = 0.0;
    for (int64_t start = 0; start < count; start += bs) {
        const int64_t rows = count - start < bs ? count - start : bs;
        for (int64_t r = 0; r < rows; r++)
            read_row(act[0] + r * np[0], idx[start + r], F, xf, xb, divisor);
        for (int64_t l = 0; l < L; l++)
            gemm(rows, np[l + 1], n[l], act[l], np[l], 1, w[l], np[l + 1], act[l + 1], b[l],
                 np[l + 1], l + 1 < L ? BIAS_RELU_NAN : BIAS, 0, 0, tiles);
        for (int64_t r = 0; r < rows; r++) {
            const float *z = act[L] + r * opL;
            const int64_t y = labels[idx[start + r]];
            int64_t predicted = 0;
            if (O == 1) {
                predicted = z[0] > 0.0f;
                const float log_sigmoid = fminf(z[0], 0.0f) - log1pf(expf(-fabsf(z[0])));
                loss += (1.0f - (float)y) * z[0] - log_sigmoid;
            } else {
                for (int64_t j = 0; j < O && !isnan(z[predicted]); j++)
                    if (isnan(z[j]) || z[j] > z[predicted]) predicted = j;
                const float top = row_max(z, O);
                float sum = 0.0f;
                for (int64_t j = 0; j < O; j++) sum += expf(z[j] - top);
                loss += logf(sum) - (z[y] - top);
            }
            correct += predicted == y;
        }
    }
    scores[m] = (float)correct;
    scores[models + m] = (float)loss;
}

/* Train models [m0, m1) of a batch of m1 models for `epochs` epochs, each model all of
 * them in a row while its parameters stay in cache (order and status hold a row of m1
 * models per epoch: a call over part of a batch passes m1 = the batch's size and, for
 * several epochs, m0 = 0; with `claim`, the threads take models m0 + claim++ below m1).
 * Returns 0, or -1 when scratch memory is short or the call is malformed.
 *
 * sizes[0..L]: layer widths (features, hidden..., outputs); W[l], B[l], VW[l], VB[l]: the
 * [models, in, out] / [models, 1, out] weights, biases and velocities of layer l, read;
 * WO, BO, VWO, VBO: where they are written after training, the same or other tensors of the
 * same shapes (then W... keep the parameters before the call: a span given back needs them).
 * Model m trains on fold f = fold_of[m]: at position i < n_train[m] of epoch e, row
 * idx[f, order[e, m, i]] of table table_of[m] (tables of n_rows rows of sizes[0] features: float32
 * already scaled, or, when u8, 8-bit values divided by divisor as they are read), with label
 * labels[row]; in minibatches of bs, minibatches [b0, b1) of each epoch only (the caller
 * looks at the clock and the stop flag in between). One sigmoid output for 2 classes, else softmax.
 * p_in/p_hid are dropout rates (0 = none), kept units scaled by 1/(1-rate), as Keras does;
 * cmax <= 0 or inf means no max-norm. ctr[m] (mask counter) advances by the units it draws.
 * status[e, m] becomes 0 when every parameter of model m is finite after epoch e, 1 when
 * one is infinite, 2 when one is NaN (checked while the parameters are in cache anyway); a
 * model trains no epoch after one that left it non-finite (its later entries repeat it).
 * With scores, each model is then scored on rows score_idx[f, :score_count[m]] (score_rows;
 * scores [2 x m1]): its held-out rows, or its training rows, as the caller passes them;
 * epochs 0 scores alone, reading the parameters and writing none back. tiles: how the
 * products are cut (NARROW or WIDE, below dropsweep_tile_plans()), the same numbers either way.
 *
 * Each model's parameters are copied into zero-padded rows (a multiple of VL wide) for its
 * epochs and back at their end; padded units stay exactly zero (zero weights in and out, zero
 * bias, so zero activation and zero gradient).
 */
int dropsweep_epoch(int64_t m0, int64_t m1, int64_t L, const int64_t *sizes, int64_t bs,
                    int64_t epochs, int64_t b0, int64_t b1, int64_t max_train,
                    const void *data, int64_t u8,
                    float divisor, int64_t n_rows, const int64_t *table_of,
                    const int64_t *labels, const int64_t *idx,
                    const int64_t *fold_of, const int64_t *order, const int64_t *n_train,
                    const float *const *W, const float *const *B, const float *const *VW,
                    const float *const *VB, float *const *WO, float *const *BO,
                    float *const *VWO, float *const *VBO,
                    const float *lr, const float *mom, const float *cmax, const float *p_in,
                    const float *p_hid, const uint64_t *key, uint64_t *ctr, int8_t *status,
                    const int64_t *score_idx, int64_t score_width,
                    const int64_t *score_count, float *scores, int64_t *claim,
                    int64_t tiles) {
    if (L < 1 || L > MAX_LAYERS || bs < 1 || epochs < 0 || (epochs == 0 && !scores) ||
        (epochs > 1 && m0 != 0) || tiles < 0 || tiles >= TILE_PLANS)
        return -1;
    const unsigned fp_mode = flush_subnormals();
    int64_t n[MAX_LAYERS + 1], np[MAX_LAYERS + 1];
    int64_t widest = 0;
    for (int64_t l = 0; l <= L; l++) {
        n[l] = sizes[l];
        np[l] = padded(sizes[l]);
        widest = np[l] > widest ? np[l] : widest;
    }
    const int64_t F = n[0], O = n[L];
    /* per layer l: w, v [n[l] x np[l+1]], wt [n[l+1] x np[l]], b, vb [np[l+1]];
     * per width l: act [bs x np[l], rows padded], mask [bs x n[l], dense]; then d, dp
     * [bs x widest] and gb [widest] */
    int64_t total = 0;
    for (int64_t l = 0; l < L; l++)
        total += 2 * n[l] * np[l + 1] + n[l + 1] * np[l] + 2 * np[l + 1];
    for (int64_t l = 0; l <= L; l++) total += 2 * bs * np[l];
    total += 2 * bs * widest + widest;
    float *scratch = (float *)calloc((size_t)total, sizeof(float));
    if (!scratch) {
        restore_mode(fp_mode);
        return -1;
    }
    float *w[MAX_LAYERS], *v[MAX_LAYERS], *wt[MAX_LAYERS], *b[MAX_LAYERS], *vb[MAX_LAYERS];
    float *act[MAX_LAYERS + 1], *mask[MAX_LAYERS + 1];
    float *p = scratch;
    for (int64_t l = 0; l < L; l++) {
        w[l] = p; p += n[l] * np[l + 1];
        v[l] = p; p += n[l] * np[l + 1];
        wt[l] = p; p += n[l + 1] * np[l];
        b[l] = p; p += np[l + 1];
        vb[l] = p; p += np[l + 1];
    }
    for (int64_t l = 0; l <= L; l++) {
        act[l] = p; p += bs * np[l];
        mask[l] = p; p += bs * np[l];
    }
    float *d = p; p += bs * widest;
    float *dp = p; p += bs * widest;
    float *gb = p;

    for (int64_t next = m0;; next++) {
        /* with a shared claim counter, threads take the next model as they come free (models
         * differ in cost: masks, max-norm); else this call's range in order */
        const int64_t m = claim ? m0 + __atomic_fetch_add(claim, 1, __ATOMIC_RELAXED) : next;
        if (m >= m1) break;
        const float rate = lr[m], mo = mom[m], c = cmax[m];
        const uint32_t keep_in = keep16(p_in[m]), keep_hid = keep16(p_hid[m]);
        const int use_in = keep_in < (1u << 16), use_hid = keep_hid < (1u << 16);
        const float s_in = 1.0f / (1.0f - p_in[m]), s_hid = 1.0f / (1.0f - p_hid[m]);
        const int limited = c > 0.0f && isfinite(c);
        const int64_t *idxf = idx + fold_of[m] * max_train;
        const size_t table = (size_t)table_of[m] * (size_t)n_rows * (size_t)F;
        const float *xf = u8 ? NULL : (const float *)data + table;
        const uint8_t *xb = u8 ? (const uint8_t *)data + table : NULL;
        const int64_t end = b1 * bs < n_train[m] ? b1 * bs : n_train[m];
        /* kept here, written back once: neighbouring models' counters share a cache line,
         * and the threads train neighbours at once */
        uint64_t counter = ctr[m];
        for (int64_t l = 0; l < L; l++) { /* into the padded copies (padding stays zero) */
            const int64_t in = n[l], out = n[l + 1];
            pad_rows(w[l], W[l] + m * in * out, in, out, np[l + 1]);
            pad_rows(v[l], VW[l] + m * in * out, in, out, np[l + 1]);
            memcpy(b[l], B[l] + m * out, (size_t)out * 4);
            memcpy(vb[l], VB[l] + m * out, (size_t)out * 4);
        }
        int8_t state = 0;
        for (int64_t e = 0; e < epochs && !state; e++) {
            const int64_t *ord = order + (e * m1 + m) * max_train;
            for (int64_t start = b0 * bs; start < end; start += bs) {
                const int64_t rows = end - start < bs ? end - start : bs;
                /* forward */
                /* masks: one draw per layer for all rows, dense [rows x width] */
                if (use_in) fill_mask(mask[0], rows * F, key[m], &counter, keep_in, s_in);
                for (int64_t r = 0; r < rows; r++) {
                    float *restrict a = act[0] + r * np[0];
                    read_row(a, idxf[ord[start + r]], F, xf, xb, divisor);
                    if (use_in) {
                        const float *restrict mk = mask[0] + r * F;
                        for (int64_t k = 0; k < F; k++) a[k] *= mk[k];
                    }
                }
                for (int64_t l = 0; l < L; l++) { /* z = bias + a w, through ReLU but the last */
                    const int64_t out = n[l + 1], op = np[l + 1];
                    float *z = act[l + 1];
                    gemm(rows, op, n[l], act[l], np[l], 1, w[l], op, z, b[l], op,
                         l + 1 < L ? BIAS_RELU : BIAS, 0, 0, tiles);
                    if (l + 1 < L && use_hid) {
                        fill_mask(mask[l + 1], rows * out, key[m], &counter, keep_hid, s_hid);
                        for (int64_t r = 0; r < rows; r++) {
                            float *restrict zr = z + r * op;
                            const float *restrict mk = mask[l + 1] + r * out;
                            for (int64_t j = 0; j < out; j++) zr[j] *= mk[j];
                        }
                    }
                }
                /* d(mean loss)/d(logits): sigmoid(z) - y, or softmax(z) - onehot(y) */
                const float inv = 1.0f / (float)rows;
                const int64_t opL = np[L];
                for (int64_t r = 0; r < rows; r++) {
                    const float *z = act[L] + r * opL;
                    float *dr = d + r * opL;
                    const int64_t y = labels[idxf[ord[start + r]]];
                    if (O == 1) {
                        dr[0] = (1.0f / (1.0f + expf(-z[0])) - (float)y) * inv;
                    } else {
                        const float top = row_max(z, O);
                        float sum = 0.0f;
                        for (int64_t j = 0; j < O; j++) { dr[j] = expf(z[j] - top); sum += dr[j]; }
                        for (int64_t j = 0; j < O; j++)
                            dr[j] = (dr[j] / sum - (j == y ? 1.0f : 0.0f)) * inv;
                    }
                    for (int64_t j = O; j < opL; j++) dr[j] = 0.0f;
                }
                /* backward, updating each layer as soon as its gradient is known */
                for (int64_t l = L - 1; l >= 0; l--) {
                    const int64_t in = n[l], out = n[l + 1], ip = np[l], op = np[l + 1];
                    if (l > 0) { /* gradient w.r.t. this layer's input, with the old weights,
                                  * through its ReLU and dropout (padded units: a = 0) */
                        transpose(w[l], in, op, wt[l], out, ip);
                        gemm(rows, ip, out, d, op, 1, wt[l], ip, dp, act[l], ip, RELU_BACK,
                             use_hid ? s_hid : 1.0f, 0, tiles);
                    }
                    /* the gradient act^T d, applied to w and v as it is computed */
#if !defined(GENERAL_PRODUCTS)
                    if (out == 1)
                        sgd_one_output(in, rows, act[l], ip, d, op, w[l], v[l], mo, rate);
                    else
#endif
                        gemm(in, op, rows, act[l], 1, ip, d, op, w[l], v[l], op, SGD, mo, rate,
                             tiles);
                    for (int64_t j = 0; j < op; j += VL) {
                        vf s = {0};
                        for (int64_t r = 0; r < rows; r++) s += vload(d + r * op + j);
                        vf vv = mo * vload(vb[l] + j) - rate * s;
                        vstore(vb[l] + j, vv);
                        vstore(b[l] + j, vload(b[l] + j) + vv);
                    }
                    if (limited && l + 1 < L) { /* Keras MaxNorm: w * clip(n, 0, c) / (eps + n) */
                        float *restrict wl = w[l];
                        column_squares(wl, in, op, gb);
                        for (int64_t j = 0; j < op; j++) {
                            const float nrm = sqrtf(gb[j]);
                            gb[j] = (nrm < c ? nrm : c) / (nrm + KERAS_EPSILON);
                        }
                        for (int64_t k = 0; k < in; k++)
                            for (int64_t j = 0; j < op; j += VL)
                                vstore(wl + k * op + j, vload(wl + k * op + j) * vload(gb + j));
                    }
                    float *t = d; d = dp; dp = t;
                }
            }
            /* the epoch's verdict while the parameters are in cache; a model that diverged
             * trains no further epochs (its batch leaves it there, and so does the caller) */
            for (int64_t l = 0; l < L; l++) {
                for (int64_t k = 0; k < n[l]; k++)
                    state = worst(state, w[l] + k * np[l + 1], n[l + 1]);
                state = worst(state, b[l], n[l + 1]);
            }
            for (int64_t f = e; f < epochs; f++) status[f * m1 + m] = state;
        }
        if (scores)
            score_rows(m, m1, L, n, np, bs, w, b, act, xf, xb, divisor, labels,
                       score_idx + fold_of[m] * score_width, score_count[m], scores,
                       (int)tiles);
        if (epochs == 0) /* scored alone: nothing changed, nothing to write back */
            continue;
        for (int64_t l = 0; l < L; l++) { /* back out of the padded copies */
            const int64_t in = n[l], out = n[l + 1];
            unpad_rows(WO[l] + m * in * out, w[l], in, out, np[l + 1]);
            unpad_rows(VWO[l] + m * in * out, v[l], in, out, np[l + 1]);
            memcpy(BO[l] + m * out, b[l], (size_t)out * 4);
            memcpy(VBO[l] + m * out, vb[l], (size_t)out * 4);
        }
        ctr[m] = counter;
    }
    free(scratch);
    restore_mode(fp_mode);
    return 0;
}
