"""Sphinx configuration of the course website (staged by docs/site/build.py; see there)."""

project = "medcl_lite"
author = "the medcl_lite maintainers"
copyright = "medcl_lite maintainers"

extensions = [
    "myst_nb",  # Markdown pages and notebooks (with their stored outputs)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # Google-style Args / Returns / Raises
    "sphinx.ext.mathjax",  # equations typeset in the browser (MathJax, loaded when a page opens)
]

nb_execution_mode = "off"  # never execute: the outputs are those of the recorded reference runs
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 4  # GitHub-style anchors, as the notebooks' links to docs/methods.md use
autosummary_generate = True
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # torchvision's docstrings link to its own gallery
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" as fields, not a second description of each
exclude_patterns = ["_build", "**.ipynb_checkpoints", "chapters.json"]
html_theme = "furo"
html_title = "medcl_lite: contrastive pretraining for medical image segmentation"
