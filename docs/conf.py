"""Sphinx configuration of the fastconv documentation (scripts/docs.sh builds it).

The pages are Markdown (MyST); the API reference is generated from the numpydoc
docstrings. ``sphinx-build -b doctest`` runs every ``>>>`` example of the docstrings and
every ``{doctest}`` block of the pages, so neither can drift from the code.
"""
import doctest
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Document this checkout when its kernels are built in place (setup.py build_ext --inplace,
# pip install -e .); otherwise the installed fastconv.
if glob.glob(os.path.join(ROOT, "fastconv", "_kernels", "_openmp*.so")):
    sys.path.insert(0, ROOT)

import fastconv  # noqa: E402

project = "fastconv"
author = "the fastconv developers"
copyright = "the fastconv developers"
version = release = fastconv.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: GitHub-style heading anchors, so the code's `docs/performance.md#anchor` citations
# and the pages' own `#anchor` links resolve on the site as on GitHub.
myst_heading_anchors = 4
myst_enable_extensions = ["dollarmath"]

# autodoc + numpydoc
autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# With -W these fail the build: an undocumented or unknown parameter, a missing Returns
# (Yields for generators) or Examples section in any documented function, method or class.
numpydoc_validation_checks = {"PR01", "PR02", "RT01", "EX01"}

# Doctests: every example starts from these names (as NumPy's docstrings assume np).
doctest_global_setup = """
import numpy as np
import fastconv
"""
doctest_default_flags = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
                         | doctest.DONT_ACCEPT_TRUE_FOR_1)

html_theme = "alabaster"
html_title = f"fastconv {release}"
html_theme_options = {"description": "Fast convolution building blocks for NumPy arrays"}
