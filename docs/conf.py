"""Sphinx configuration of the fastconv documentation (scripts/docs.sh builds it).

The pages are Markdown (MyST); the API reference is generated from the numpydoc
docstrings. ``sphinx-build -b doctest`` runs every ``>>>`` example of the docstrings and
every ``{doctest}`` block of the pages, so neither can drift from the code.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # a checkout with an in-place build; an installed fastconv also works

import fastconv  # noqa: E402

project = "fastconv"
author = "the fastconv developers"
copyright = "the fastconv developers"  # noqa: A001
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

# Doctests: every example starts from these names; float output compared as printed.
doctest_global_setup = """
import numpy as np
import fastconv
np.set_printoptions(legacy=False)
"""
doctest_default_flags = (__import__("doctest").ELLIPSIS
                         | __import__("doctest").NORMALIZE_WHITESPACE
                         | __import__("doctest").DONT_ACCEPT_TRUE_FOR_1)

html_theme = "alabaster"
html_title = f"fastconv {release}"
html_theme_options = {"description": "Fast convolution building blocks for NumPy arrays"}
