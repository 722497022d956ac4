"""convemerge: where does convolutional structure come from?

Subpackages follow the data path (see the README):
``data`` → ``layers`` → ``models`` / ``optim`` → ``train`` / ``kernels`` / ``analysis`` → ``experiments`` → ``report``.
Import what you need from them directly, e.g. ``from convemerge.models import create_model``.
"""

__version__ = "0.1.0"
