/* OpenMP when the compiler has it; serial stand-ins otherwise, so every kernel builds. */
#ifndef FASTCONV_OMP_COMPAT_H
#define FASTCONV_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#define FASTCONV_OPENMP 1
#else
#define FASTCONV_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_procs(void) { return 1; }
#endif
#endif
