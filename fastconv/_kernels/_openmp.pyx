"""What the OpenMP runtime offers; serial answers when built without OpenMP."""
from fastconv._kernels._openmp cimport FASTCONV_OPENMP, omp_get_max_threads, omp_get_num_procs


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(FASTCONV_OPENMP)


def default_num_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return omp_get_max_threads()


def num_procs():
    """Processors OpenMP sees; 1 without OpenMP."""
    return omp_get_num_procs()
