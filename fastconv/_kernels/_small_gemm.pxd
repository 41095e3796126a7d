cdef extern from "small_gemm.h" nogil:
    # 1 where the register-blocked float32 block below is compiled (AVX-512 builds).
    int FASTCONV_SMALL_GEMM
    int FASTCONV_PANEL_ROWS       # rows of a packed left-hand panel (at most, of one block)
    int FASTCONV_SMALL_GEMM_COLS  # columns of one block (at most)
    void fastconv_small_gemm_block(int depth, const float* panel, int rows,
                                   const float* const* b_rows, long offset,
                                   const float* row_bias, const float* col_bias, float* c,
                                   long ldc, int cols)
    void fastconv_small_gemm_block_rows(int depth, const float* const* a_rows, long a_offset,
                                        long a_stride, int rows, const float* const* b_rows,
                                        long offset, const float* row_bias,
                                        const float* col_bias, float* c, long ldc, int cols)
