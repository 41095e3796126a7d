"""fastconv: fast convolution building blocks for plain NumPy arrays.

im2col / col2im, 1-D, 2-D and 3-D convolution on BLAS GEMM, space-to-batch and R-MAC, written
as Cython kernels (nogil, OpenMP) behind a validating NumPy API. The contract is docs/spec.md.
"""
from fastconv import reference
from fastconv._version import __version__
from fastconv.conv import Gradients, conv2d, conv2d_backward, conv_transpose2d
from fastconv.conv1d import Conv1D, conv1d, conv1d_backward, conv_transpose1d
from fastconv.conv3d import Conv3D, conv3d, conv3d_backward, conv_transpose3d
from fastconv.geometry import ConvGeometry
from fastconv.im2col import col2im, col2im_backward, im2col, im2col_backward
from fastconv.layers import Conv2D
from fastconv.rmac import rmac, rmac_regions, roi_max_pool
from fastconv.spacebatch import (
                                 atrous_conv2d,
                                 batch_to_space,
                                 batch_to_space_backward,
                                 space_to_batch,
                                 space_to_batch_backward,
)
from fastconv.threads import get_num_threads, set_num_threads, threads

__all__ = [
    "__version__", "ConvGeometry",
    "im2col", "col2im", "im2col_backward", "col2im_backward",
    "conv2d", "conv2d_backward", "conv_transpose2d", "Gradients", "Conv2D",
    "conv1d", "conv1d_backward", "conv_transpose1d", "Conv1D",
    "conv3d", "conv3d_backward", "conv_transpose3d", "Conv3D",
    "space_to_batch", "batch_to_space", "space_to_batch_backward", "batch_to_space_backward",
    "atrous_conv2d",
    "get_num_threads", "set_num_threads", "threads", "reference",
    "rmac_regions", "roi_max_pool", "rmac",
]
