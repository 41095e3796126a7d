cdef extern from "omp_compat.h" nogil:
    int FASTCONV_OPENMP
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_procs()
