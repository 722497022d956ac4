"""Fig. 4: first-layer filters of S-FC/SGD, S-FC/β-LASSO and S-LOCAL/SGD, and their locality measures.

Its recipe is ``recipe.py``; its report section is in ``convemerge/report/section_filters.py``."""
