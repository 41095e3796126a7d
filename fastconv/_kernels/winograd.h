/* Transform matrices of Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016), row-major, alpha = m + 2:
 *   Bᵀ (alpha × alpha) input tiles, G (alpha × 3) filters, Aᵀ (m × alpha) outputs;
 *   Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A.
 * F(2×2, 3×3) interpolates at 0, ±1, ∞; F(4×4, 3×3) at 0, ±1, ±2, ∞. */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H

static const double fastconv_winograd_bt2[16] = {
    1,  0, -1,  0,
    0,  1,  1,  0,
    0, -1,  1,  0,
    0,  1,  0, -1,
};
static const double fastconv_winograd_g2[12] = {
    1.0,  0.0, 0.0,
    0.5,  0.5, 0.5,
    0.5, -0.5, 0.5,
    0.0,  0.0, 1.0,
};
static const double fastconv_winograd_at2[8] = {
    1, 1,  1,  0,
    0, 1, -1, -1,
};

static const double fastconv_winograd_bt4[36] = {
    4,  0, -5,  0, 1, 0,
    0, -4, -4,  1, 1, 0,
    0,  4, -4, -1, 1, 0,
    0, -2, -1,  2, 1, 0,
    0,  2, -1, -2, 1, 0,
    0,  4,  0, -5, 0, 1,
};
static const double fastconv_winograd_g4[18] = {
     1.0 / 4,        0.0,       0.0,
    -1.0 / 6,  -1.0 / 6,  -1.0 / 6,
    -1.0 / 6,   1.0 / 6,  -1.0 / 6,
     1.0 / 24,  1.0 / 12,  1.0 / 6,
     1.0 / 24, -1.0 / 12,  1.0 / 6,
     0.0,       0.0,       1.0,
};
static const double fastconv_winograd_at4[24] = {
    1, 1,  1, 1,  1, 0,
    0, 1, -1, 2, -2, 0,
    0, 1,  1, 4,  4, 0,
    0, 1, -1, 8, -8, 1,
};

/* The matrices of F(m×m, 3×3) for m = 2 or 4 (NULL otherwise). */
static inline const double* fastconv_winograd_bt(long m) {
    return m == 2 ? fastconv_winograd_bt2 : m == 4 ? fastconv_winograd_bt4 : 0;
}
static inline const double* fastconv_winograd_g(long m) {
    return m == 2 ? fastconv_winograd_g2 : m == 4 ? fastconv_winograd_g4 : 0;
}
static inline const double* fastconv_winograd_at(long m) {
    return m == 2 ? fastconv_winograd_at2 : m == 4 ? fastconv_winograd_at4 : 0;
}

#endif
