"""Fig. 3: non-zero weights per S-FC layer per epoch under β-LASSO, with S-CONV and S-LOCAL as reference lines.

Its recipe is ``recipe.py``; its report section is in ``convemerge/report/section_figures.py``."""
