"""Fig. 5: ResNet18 with kernel size k = 3, 7, 11, 15, β-LASSO vs SGD.

Its recipe is ``recipe.py``; its report section is in ``convemerge/report/section_figures.py``."""
