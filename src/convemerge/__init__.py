"""convemerge: where does convolutional structure come from?

Subpackages follow the data path (see the README):
``data`` → ``layers`` → ``models`` / ``optim`` → ``train`` / ``kernels`` / ``analysis`` → ``experiments`` → ``report``.
Import what you need from them directly, e.g. ``from convemerge.models import create_model``.
"""

import os

# Large CPU tensors (kernel matrices, datasets, activations) on transparent huge pages: PyTorch's allocator asks for
# them (madvise) when this is set before torch is first imported. First-touch page faults otherwise dominate the
# cost of a fresh n×n matrix on some machines (measured: 2 GiB filled in 25 s with 4 KiB pages, 6.7 s with huge
# pages). Set THP_MEM_ALLOC_ENABLE=0 to opt out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
