"""Table 1: test accuracy of the seven architectures trained with SGD.

Its recipe is ``recipe.py``; its report section is in ``convemerge/report/section_tables.py``."""
