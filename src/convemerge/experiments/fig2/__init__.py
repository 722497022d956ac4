"""Fig. 2: test accuracy against parameter count as α grows, and description length against generalisation.

Its recipe is ``recipe.py``; its report section is in ``convemerge/report/section_figures.py``."""
