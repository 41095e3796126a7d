cdef extern from "small_gemm.h" nogil:
    # 1 where the register-blocked float32 block below is compiled (AVX-512 builds).
    int FASTCONV_SMALL_GEMM
    int FASTCONV_SMALL_GEMM_ROWS  # rows (output channels) of one block
    int FASTCONV_SMALL_GEMM_COLS  # columns (output positions) of one block
    void fastconv_small_gemm_block(int depth, const float* a, int lda,
                                   const float* const* b_rows, long offset,
                                   const float* row_bias, const float* col_bias, float* c,
                                   int ldc, int cols)
