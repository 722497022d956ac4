"""Table 2: S-FC trained with β-LASSO against SGD-trained S-CONV, S-LOCAL, 3-FC and S-FC.

Its recipe is ``recipe.py``; its report sections are ``convemerge/report/section_tables.py`` and, at the ``seed``
scale, ``convemerge/report/section_table2_seed.py``."""
