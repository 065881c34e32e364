# Sphinx configuration of the course's website. `make book` (python -m minidiff.course.book) copies this
# file into the staged source folder beside the executed notebooks and the front page, then runs Sphinx.
# Nothing here is fetched at build time or at page-view time: MathJax is served from the site itself.
from minidiff.course import colab

project = "minidiff"
author = "the minidiff authors"
html_title = "minidiff: diffusion models, from the forward process to latent diffusion"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "_extra", "**.ipynb_checkpoints"]
root_doc = "index"

# The notebooks arrive executed (profile and machine on each page); myst-nb only renders them.
nb_execution_mode = "off"
nb_merge_streams = True
nb_ipywidgets_js = {}              # no widget JavaScript from a CDN: widget outputs are removed by the builder
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
myst_heading_slug_func = "github"   # the builder rewrites Jupyter-style links to these (book.site_links)
suppress_warnings = ["myst.header"]   # notebooks may step from # to ### on purpose

# MathJax 2.7 from the jupyter-server-mathjax wheel, copied by the builder into _static/mathjax/.
mathjax_path = "mathjax/MathJax.js"
mathjax2_config = {
    "config": ["TeX-AMS-MML_HTMLorMML-full.js"],
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "ignoreClass": "document", "processClass": "math|output_area"},
    "HTML-CSS": {"availableFonts": [], "imageFont": None, "preferredFont": None, "webFont": "STIX-Web",
                 "linebreaks": {"automatic": True},
                 # MathJax declares a fallback font whose file is about:blank, which Chromium refuses with a console
                 # error on every page: the same font, declared without a file to fetch
                 "styles": {"@font-face": {"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}},
    "showMathMenu": False, "messageStyle": "none", "menuSettings": {"zoom": "None"},
}

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_extra_path = ["_extra"]       # the student notebooks, downloadable at notebooks/NN_….ipynb
html_css_files = ["minidiff.css"]
html_favicon = "_static/favicon.svg"   # a page without one makes the browser ask for /favicon.ico, a 404
html_last_updated_fmt = None
html_context = {"default_mode": "light"}   # without it the theme logs "Got invalid theme mode" as a console error
html_theme_options = {
    "repository_url": colab.repository_url(),
    "repository_branch": colab.BRANCH,
    "use_repository_button": True,
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
