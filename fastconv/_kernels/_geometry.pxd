# One image's convolution geometry, already validated by fastconv.geometry.
# Bottom/right padding never appears: it only decides out_h/out_w.
ctypedef struct Geometry:
    Py_ssize_t channels
    Py_ssize_t height
    Py_ssize_t width
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t pad_top
    Py_ssize_t pad_left
    Py_ssize_t dilation_h
    Py_ssize_t dilation_w
    Py_ssize_t out_h
    Py_ssize_t out_w
