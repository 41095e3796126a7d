/* fastconv's own float32 GEMM for AVX-512: C = A·B or C += A·B, row-major, where A is
   read as stored (m×k, or its transpose k×m) and B is k×n as stored.

   c[r·ldc + t] (+)= Σ_k A(r, k) · b[k·ldb + t],  A(r, k) = a[r·a_row + k·a_col]
   (a_row = lda, a_col = 1 for A as stored; a_row = 1, a_col = lda for Aᵀ as stored).

   Why not BLAS: on the AMD Zen 4 this project measures on, OpenBLAS's sgemm reaches
   65–100 GFLOP/s per core on convolution shapes, where this kernel's 12×32 tile
   (24 accumulators: per k, 2 vector loads of B, 12 broadcasts of A, 24 fused
   multiply-adds) runs at 85–110 with no packing of B at all: B's rows are read in
   place, 32 columns at a time, and stay in L2 while every 12-row sliver of A passes over
   them (docs/performance.md#own-gemm). A sliver is copied into a 12-wide stack panel when
   it is reused by many tiles, or is shorter than 12 rows (the copy is zero-padded, so the
   tile never reads past A).

   Blocking: columns in blocks of NC (B's kc×NC block sized to stay in L2), depth in
   blocks of KC (the A panel, 12·KC floats, stays in L1). The sums for every output run
   k = 0, 1, 2, ... whatever the blocking, so results do not depend on how callers cut
   the work (thread-count bit-identity).

   Only AVX-512 builds define FASTCONV_F32_GEMM as 1; elsewhere BLAS serves. */
#ifndef FASTCONV_F32_GEMM_12X32_AVX512_H
#define FASTCONV_F32_GEMM_12X32_AVX512_H

#define FASTCONV_GEMM_MR 12   /* rows of A per tile */
#define FASTCONV_GEMM_NR 32   /* columns of B per tile: two 16-float vectors */
#define FASTCONV_GEMM_KC 256  /* depth per block: the A panel (12 KB) stays in L1 */
#define FASTCONV_GEMM_NC 512  /* columns per block: B's KC×NC block (512 KB) stays in L2 */
/* When fastconv_f32_gemm runs instead of sgemm (fastconv_f32_gemm_pays): with fewer columns
   than MIN_N, not a multiple of 16, the narrow tile that ends each block costs as much as a
   full one; it still pays from MIN_N_NARROW columns (at most a ninth of the work wasted)
   with MIN_M_NARROW rows and a depth from MIN_DEPTH_NARROW, below MAX_DEPTH_NARROW unless
   the rows are at most MAX_M_NARROW_DEEP (smaller products, and a whole NCHW image's 196
   columns against 256 or 512 output channels at depth 1024: sgemm, 0.95×) ... */
#define FASTCONV_GEMM_MIN_N 256
#define FASTCONV_GEMM_MIN_N_NARROW 128
#define FASTCONV_GEMM_MIN_M_NARROW 64
#define FASTCONV_GEMM_MIN_DEPTH_NARROW 256
#define FASTCONV_GEMM_MAX_DEPTH_NARROW 1024
#define FASTCONV_GEMM_MAX_M_NARROW_DEEP 128
/* An A sliver serving at least this many tiles of a block is copied into a panel first ... */
#define FASTCONV_GEMM_PACK_TILES 8
/* ... and so is one whose rows are a multiple of this many floats (4 KB) apart: read in
   place, its 12 rows would fall in one 8-way set of L1 (512×196×1024: 92 GFLOP/s in place,
   sgemm 100). */
#define FASTCONV_GEMM_ALIASED_ROW 1024
/* B's rows are read in place: when they are a multiple of ALIASED_ROW floats apart (NHWC
   weights of 1024 or 2048 output channels) and at least MIN_M_ALIASED_B rows of A pass
   over each block, sgemm, which packs B. The KC rows a tile reads then share a few sets of
   L1 and of L2 (a 16-way L2 holds 16 rows 8 KB apart): 392×2048×512 ran 93 GFLOP/s,
   392×2064×512 145, sgemm 151 (Intel Xeon, model 207). With fewer rows B is read about
   once anyway (49 rows × 512 of 2048 columns: own 1.1-1.15× sgemm). */
#define FASTCONV_GEMM_MIN_M_ALIASED_B 96
/* ... and with fewer rows than MIN_M_WIDE, more columns than one block and a depth of
   MAX_DEPTH_WIDE or more: sgemm. B may come from memory, and that many rows of B, ldb
   apart, defeat the hardware prefetcher on the first sliver's pass, which too few slivers
   follow to amortise it (sgemm streams B as it packs it). */
#define FASTCONV_GEMM_MIN_M_WIDE 128
#define FASTCONV_GEMM_MAX_DEPTH_WIDE 256
/* For A·Bᵀ (each tile's Bᵀ copied by 16×16 register transposes): fastconv_f32_gemm_nt from
   this depth whatever the shape, and from this many rows when the columns are as above;
   below, sgemm (a transposed copy of B shared by too few slivers, or a tiny product). */
#define FASTCONV_GEMM_MIN_DEPTH_NT 1024
#define FASTCONV_GEMM_MIN_M_NT 64

#ifdef __AVX512F__
#define FASTCONV_F32_GEMM 1

/* Python's CFLAGS carry -fwrapv into extension builds; with it, the product below measured
   20% slower on large memory-bound shapes (e.g. 25088×256×64); nothing here relies on
   signed overflow wrapping. (A push/pop pragma instead slowed the rest of the module.) */
#define FASTCONV_NO_WRAPV __attribute__((optimize("no-wrapv")))

#include <string.h>

#include "simd.h"
#include "transpose.h"

/* One full tile: R rows × V vectors of accumulators (R, V constants after inlining, so the
   accumulators are registers): c[r·ldc + t] (+)= Σ_k A(r, k)·b[k·ldb + t] for r < rows,
   t < 16·V. PACKED (constant): A is a panel of fastconv_f32_gemm_pack (a_row 1, a_col MR),
   read at constant offsets; else a_row and a_col hold. */
static inline __attribute__((always_inline)) void fastconv_f32_gemm_tile(
        const int R, const int V, const int PACKED, int depth, const float* a, long a_row,
        long a_col, const float* b, long ldb, float* c, long ldc, int rows, int accumulate) {
    fastconv_f32x16 acc[FASTCONV_GEMM_MR][2];
    fastconv_f32x16 bk[2];
    long r, v, k;
    for (r = 0; r < R; ++r)
        for (v = 0; v < V; ++v)
            acc[r][v] = (fastconv_f32x16){0};
    if (PACKED) {
        a_row = 1;
        a_col = FASTCONV_GEMM_MR;
    }
    for (k = 0; k < depth; ++k) {
        const float* a_k = a + k * a_col;
        for (v = 0; v < V; ++v)
            bk[v] = fastconv_load(b + k * ldb + 16 * v);
        for (r = 0; r < R; ++r)
            for (v = 0; v < V; ++v)
                acc[r][v] += a_k[r * a_row] * bk[v];
    }
    for (r = 0; r < R && r < rows; ++r) {
        for (v = 0; v < V; ++v) {
            if (accumulate)
                acc[r][v] += fastconv_load(c + (long)r * ldc + 16 * v);
            fastconv_store(c + (long)r * ldc + 16 * v, acc[r][v]);
        }
    }
}

/* The full tile with the fewest rows (4, 8 or 12) that cover `rows`, for V vectors. */
static inline __attribute__((always_inline)) void fastconv_f32_gemm_tile_rows_of(
        const int V, const int PACKED, int depth, const float* a, long a_row, long a_col,
        const float* b, long ldb, float* c, long ldc, int rows, int accumulate) {
    if (rows > 8)
        fastconv_f32_gemm_tile(12, V, PACKED, depth, a, a_row, a_col, b, ldb, c, ldc, rows,
                               accumulate);
    else if (rows > 4)
        fastconv_f32_gemm_tile(8, V, PACKED, depth, a, a_row, a_col, b, ldb, c, ldc, rows,
                               accumulate);
    else
        fastconv_f32_gemm_tile(4, V, PACKED, depth, a, a_row, a_col, b, ldb, c, ldc, rows,
                               accumulate);
}

/* The tile for V vectors, A packed (a_row 1, a_col MR) or not: one out-of-line copy each. */
static __attribute__((noinline)) void fastconv_f32_gemm_tile_rows(
        const int V, int depth, const float* a, long a_row, long a_col, const float* b,
        long ldb, float* c, long ldc, int rows, int accumulate) {
    if (a_row == 1 && a_col == FASTCONV_GEMM_MR) {
        if (V == 2)
            fastconv_f32_gemm_tile_rows_of(2, 1, depth, a, 1, FASTCONV_GEMM_MR, b, ldb, c, ldc,
                                           rows, accumulate);
        else
            fastconv_f32_gemm_tile_rows_of(1, 1, depth, a, 1, FASTCONV_GEMM_MR, b, ldb, c, ldc,
                                           rows, accumulate);
    } else {
        if (V == 2)
            fastconv_f32_gemm_tile_rows_of(2, 0, depth, a, a_row, a_col, b, ldb, c, ldc, rows,
                                           accumulate);
        else
            fastconv_f32_gemm_tile_rows_of(1, 0, depth, a, a_row, a_col, b, ldb, c, ldc, rows,
                                           accumulate);
    }
}

/* panel[k·MR + r] = A(r, k) for r < rows, 0 for rows ≤ r < MR; k < depth. Row by row
   (A as stored: each row read in order) or k by k (Aᵀ as stored: rows are consecutive). */
static inline void fastconv_f32_gemm_pack(int depth, const float* a, long a_row, long a_col,
                                          int rows, float* panel) {
    long r, k;
    if (a_row == 1) {
        for (k = 0; k < depth; ++k) {
            memcpy(panel + k * FASTCONV_GEMM_MR, a + k * a_col, (size_t)rows * sizeof(float));
            for (r = rows; r < FASTCONV_GEMM_MR; ++r)
                panel[k * FASTCONV_GEMM_MR + r] = 0.0f;
        }
        return;
    }
    for (r = 0; r < FASTCONV_GEMM_MR; ++r) {
        const float* a_r = a + r * a_row;
        if (r < rows)
            for (k = 0; k < depth; ++k)
                panel[k * FASTCONV_GEMM_MR + r] = a_r[k * a_col];
        else
            for (k = 0; k < depth; ++k)
                panel[k * FASTCONV_GEMM_MR + r] = 0.0f;
    }
}

/* Sliver m0 (its `rows` rows) of A at depth block k0 (kc deep): read in place, or, when
   `pack` or its row count is not a tile's (4, 8 or 12; a smaller tile would read past A),
   copied into `panel`. Returns where the tiles read it and sets their strides. */
static inline const float* fastconv_f32_gemm_sliver(const float* a, long a_row, long a_col,
                                                    long m0, long k0, int kc, int rows,
                                                    int pack, float* panel, long* s_row,
                                                    long* s_col) {
    const float* sliver = a + m0 * a_row + k0 * a_col;
    if (!pack && (rows == 4 || rows == 8 || rows == 12)) {
        *s_row = a_row;
        *s_col = a_col;
        return sliver;
    }
    fastconv_f32_gemm_pack(kc, sliver, a_row, a_col, rows, panel);
    *s_row = 1;
    *s_col = FASTCONV_GEMM_MR;
    return panel;
}

/* The rows of C of one tile whose columns are narrower than its vectors (cols < 16·V):
   computed into c_tile from B's columns copied into b_padded (zero past cols; row
   stride 16·V), then stored, so nothing past cols is read or written. (Masked loads in
   the tiles' k loop made GCC keep the accumulators on the stack.) */
static inline void fastconv_f32_gemm_narrow_tile(int depth, const float* a, long a_row,
                                                 long a_col, const float* b_padded, float* c,
                                                 long ldc, int rows, int cols,
                                                 int accumulate) {
    float c_tile[FASTCONV_GEMM_MR * FASTCONV_GEMM_NR] __attribute__((aligned(64)));
    long r, t;
    if (cols > 16)
        fastconv_f32_gemm_tile_rows(2, depth, a, a_row, a_col, b_padded, 32, c_tile,
                                    FASTCONV_GEMM_NR, rows, 0);
    else
        fastconv_f32_gemm_tile_rows(1, depth, a, a_row, a_col, b_padded, 16, c_tile,
                                    FASTCONV_GEMM_NR, rows, 0);
    for (r = 0; r < rows; ++r)
        for (t = 0; t < cols; ++t)
            c[(long)r * ldc + t] = (accumulate ? c[(long)r * ldc + t] : 0.0f)
                                   + c_tile[r * FASTCONV_GEMM_NR + t];
}

/* Whether fastconv_f32_gemm (fastconv_f32_gemm_nt when trans_b) measured faster than sgemm
   for an m×n product (see the constants above; docs/performance.md#own-gemm). */
static inline int fastconv_f32_gemm_pays(int m, int n, int depth, long ldb, int trans_b) {
    if (trans_b)
        return depth >= FASTCONV_GEMM_MIN_DEPTH_NT
               || (m >= FASTCONV_GEMM_MIN_M_NT && (n % 16 == 0 || n >= FASTCONV_GEMM_MIN_N));
    if (ldb % FASTCONV_GEMM_ALIASED_ROW == 0 && m >= FASTCONV_GEMM_MIN_M_ALIASED_B)
        return 0;
    if (n % 16 != 0 && n < FASTCONV_GEMM_MIN_N)
        return n >= FASTCONV_GEMM_MIN_N_NARROW && m >= FASTCONV_GEMM_MIN_M_NARROW
               && depth >= FASTCONV_GEMM_MIN_DEPTH_NARROW
               && (depth < FASTCONV_GEMM_MAX_DEPTH_NARROW || m <= FASTCONV_GEMM_MAX_M_NARROW_DEEP);
    return m >= FASTCONV_GEMM_MIN_M_WIDE || n <= FASTCONV_GEMM_NC
           || depth < FASTCONV_GEMM_MAX_DEPTH_WIDE;
}

/* C(m×n) = A·B (accumulate 0) or C += A·B (accumulate 1); A(r, k) = a[r·a_row + k·a_col].
   Needs 12·KC + 32·KC floats of stack. */
static inline FASTCONV_NO_WRAPV void fastconv_f32_gemm(
        int m, int n, int depth, const float* a, long a_row, long a_col, const float* b,
        long ldb, float* c, long ldc, int accumulate) {
    float panel[FASTCONV_GEMM_KC * FASTCONV_GEMM_MR] __attribute__((aligned(64)));
    float b_padded[FASTCONV_GEMM_KC * FASTCONV_GEMM_NR] __attribute__((aligned(64)));
    long n0, k0, m0, j, k, t, nc, kc, rows, full, narrow, width;
    int pack, add;
    for (n0 = 0; n0 < n; n0 += FASTCONV_GEMM_NC) {
        nc = n - n0 < FASTCONV_GEMM_NC ? n - n0 : FASTCONV_GEMM_NC;
        pack = (nc + FASTCONV_GEMM_NR - 1) / FASTCONV_GEMM_NR >= FASTCONV_GEMM_PACK_TILES
               || (a_col == 1 && a_row % FASTCONV_GEMM_ALIASED_ROW == 0);
        /* the block's columns: full tiles of 32, then one of 16, then `narrow` left over */
        full = nc / FASTCONV_GEMM_NR * FASTCONV_GEMM_NR;
        if (nc - full >= 16)
            full += 16;
        narrow = nc - full;
        width = narrow > 16 ? 32 : 16;
        for (k0 = 0; k0 < depth; k0 += FASTCONV_GEMM_KC) {
            kc = depth - k0 < FASTCONV_GEMM_KC ? depth - k0 : FASTCONV_GEMM_KC;
            add = accumulate || k0 > 0;
            if (narrow)
                for (k = 0; k < kc; ++k)
                    for (t = 0; t < width; ++t)
                        b_padded[k * width + t] =
                            t < narrow ? b[(long)(k0 + k) * ldb + n0 + full + t] : 0.0f;
            for (m0 = 0; m0 < m; m0 += FASTCONV_GEMM_MR) {
                long s_row, s_col;
                rows = m - m0 < FASTCONV_GEMM_MR ? m - m0 : FASTCONV_GEMM_MR;
                const float* sliver = fastconv_f32_gemm_sliver(a, a_row, a_col, m0, k0, kc,
                                                               rows, pack, panel, &s_row,
                                                               &s_col);
                for (j = 0; j + FASTCONV_GEMM_NR <= full; j += FASTCONV_GEMM_NR)
                    fastconv_f32_gemm_tile_rows(2, kc, sliver, s_row, s_col,
                                                b + (long)k0 * ldb + n0 + j, ldb,
                                                c + (long)m0 * ldc + n0 + j, ldc, rows, add);
                if (j < full)
                    fastconv_f32_gemm_tile_rows(1, kc, sliver, s_row, s_col,
                                                b + (long)k0 * ldb + n0 + j, ldb,
                                                c + (long)m0 * ldc + n0 + j, ldc, rows, add);
                if (narrow)
                    fastconv_f32_gemm_narrow_tile(kc, sliver, s_row, s_col, b_padded,
                                                  c + (long)m0 * ldc + n0 + full, ldc, rows,
                                                  narrow, add);
            }
        }
    }
}

/* C(m×n) = A·Bᵀ (accumulate 0) or C += A·Bᵀ (accumulate 1), B stored n×depth (row t of B
   is column t of the product's right operand); A(r, k) = a[r·a_row + k·a_col]. Each tile's
   32 columns of Bᵀ are copied (16×16 register transposes, transpose.h) once per depth
   block into a zero-padded panel that every sliver of A then reads (16 or 32 floats a
   row), so no tile reads past B. A is read in place unless a sliver is short. Needs
   12·KC + 32·KC floats of stack. */
static inline FASTCONV_NO_WRAPV void fastconv_f32_gemm_nt(
        int m, int n, int depth, const float* a, long a_row, long a_col, const float* b,
        long ldb, float* c, long ldc, int accumulate) {
    float panel[FASTCONV_GEMM_KC * FASTCONV_GEMM_MR] __attribute__((aligned(64)));
    float b_panel[FASTCONV_GEMM_KC * FASTCONV_GEMM_NR] __attribute__((aligned(64)));
    long j, k0, m0, k, t, kc, cols, width, rows;
    int add;
    for (j = 0; j < n; j += FASTCONV_GEMM_NR) {
        cols = n - j < FASTCONV_GEMM_NR ? n - j : FASTCONV_GEMM_NR;
        width = cols > 16 ? 32 : 16;
        for (k0 = 0; k0 < depth; k0 += FASTCONV_GEMM_KC) {
            kc = depth - k0 < FASTCONV_GEMM_KC ? depth - k0 : FASTCONV_GEMM_KC;
            add = accumulate || k0 > 0;
            fastconv_transpose_f32(b + j * ldb + k0, ldb, b_panel, width, cols, kc);
            for (k = 0; k < kc; ++k)
                for (t = cols; t < width; ++t)
                    b_panel[k * width + t] = 0.0f;
            for (m0 = 0; m0 < m; m0 += FASTCONV_GEMM_MR) {
                long s_row, s_col;
                rows = m - m0 < FASTCONV_GEMM_MR ? m - m0 : FASTCONV_GEMM_MR;
                const float* sliver = fastconv_f32_gemm_sliver(a, a_row, a_col, m0, k0, kc,
                                                               rows, 0, panel, &s_row, &s_col);
                if (cols == 32)
                    fastconv_f32_gemm_tile_rows(2, kc, sliver, s_row, s_col, b_panel, 32,
                                                c + m0 * ldc + j, ldc, rows, add);
                else if (cols == 16)
                    fastconv_f32_gemm_tile_rows(1, kc, sliver, s_row, s_col, b_panel,
                                                width, c + m0 * ldc + j, ldc, rows, add);
                else
                    fastconv_f32_gemm_narrow_tile(kc, sliver, s_row, s_col, b_panel,
                                                  c + m0 * ldc + j, ldc, rows, cols, add);
            }
        }
    }
}

/* C(r, t) = Σ_k A(r, k)·B(k, t) for rows gathered from several matrices (one per image):
   A's row r at a_rows[r] (A(r, k) = a_rows[r][k·a_col]), C's row r at c_rows[r]
   (C(r, t) = c_rows[r][t·c_col], e.g. a transposed NCHW image), B as stored (depth × n,
   ldb); n a multiple of 16. Each sliver of 12 rows is gathered into a panel, each tile is
   computed into a local 12 × 32 block and added into C per depth block of
   GATHERED_KC. Needs 12·GATHERED_KC + 12·32 floats of stack. */
#define FASTCONV_GEMM_GATHERED_KC 512
#define FASTCONV_GEMM_GATHERED_NC 256
static inline FASTCONV_NO_WRAPV void fastconv_f32_gemm_gathered(
        int m, int n, int depth, const float* const* a_rows, long a_col, const float* b,
        long ldb, float* const* c_rows, long c_col) {
    float panel[FASTCONV_GEMM_GATHERED_KC * FASTCONV_GEMM_MR] __attribute__((aligned(64)));
    float c_tile[FASTCONV_GEMM_MR * FASTCONV_GEMM_NR] __attribute__((aligned(64)));
    long n0, k0, m0, j, k, r, t, nc, kc, rows, cols;
    for (n0 = 0; n0 < n; n0 += FASTCONV_GEMM_GATHERED_NC) {
        nc = n - n0 < FASTCONV_GEMM_GATHERED_NC ? n - n0 : FASTCONV_GEMM_GATHERED_NC;
        for (k0 = 0; k0 < depth; k0 += FASTCONV_GEMM_GATHERED_KC) {
            kc = depth - k0 < FASTCONV_GEMM_GATHERED_KC ? depth - k0 : FASTCONV_GEMM_GATHERED_KC;
            for (m0 = 0; m0 < m; m0 += FASTCONV_GEMM_MR) {
                rows = m - m0 < FASTCONV_GEMM_MR ? m - m0 : FASTCONV_GEMM_MR;
                for (k = 0; k < kc; ++k)
                    for (r = 0; r < FASTCONV_GEMM_MR; ++r)
                        panel[k * FASTCONV_GEMM_MR + r] =
                            r < rows ? a_rows[m0 + r][(k0 + k) * a_col] : 0.0f;
                for (j = 0; j < nc; j += FASTCONV_GEMM_NR) {
                    cols = nc - j < FASTCONV_GEMM_NR ? nc - j : FASTCONV_GEMM_NR;
                    fastconv_f32_gemm_tile_rows(cols > 16 ? 2 : 1, kc, panel, 1,
                                                FASTCONV_GEMM_MR, b + k0 * ldb + n0 + j, ldb,
                                                c_tile, FASTCONV_GEMM_NR, (int)rows, 0);
                    for (r = 0; r < rows; ++r) {
                        float* c_r = c_rows[m0 + r] + (n0 + j) * c_col;
                        for (t = 0; t < cols; ++t)
                            c_r[t * c_col] = (k0 > 0 ? c_r[t * c_col] : 0.0f)
                                             + c_tile[r * FASTCONV_GEMM_NR + t];
                    }
                }
            }
        }
    }
}

#else
#define FASTCONV_F32_GEMM 0

/* Where FASTCONV_F32_GEMM is 0, BLAS serves every product. */
static inline int fastconv_f32_gemm_pays(int m, int n, int depth, long ldb, int trans_b) {
    (void)m; (void)n; (void)depth; (void)ldb; (void)trans_b;
    return 0;
}

/* Never called where FASTCONV_F32_GEMM is 0. */
static inline void fastconv_f32_gemm_gathered(int m, int n, int depth,
                                              const float* const* a_rows, long a_col,
                                              const float* b, long ldb, float* const* c_rows,
                                              long c_col) {
    (void)m; (void)n; (void)depth; (void)a_rows; (void)a_col; (void)b; (void)ldb;
    (void)c_rows; (void)c_col;
}

static inline void fastconv_f32_gemm_nt(int m, int n, int depth, const float* a, long a_row,
                                        long a_col, const float* b, long ldb, float* c,
                                        long ldc, int accumulate) {
    (void)m; (void)n; (void)depth; (void)a; (void)a_row; (void)a_col; (void)b; (void)ldb;
    (void)c; (void)ldc; (void)accumulate;
}

static inline void fastconv_f32_gemm(int m, int n, int depth, const float* a, long a_row,
                                     long a_col, const float* b, long ldb, float* c, long ldc,
                                     int accumulate) {
    (void)m; (void)n; (void)depth; (void)a; (void)a_row; (void)a_col; (void)b; (void)ldb;
    (void)c; (void)ldc; (void)accumulate;
}
#endif

#endif
