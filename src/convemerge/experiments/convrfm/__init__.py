"""The ConvRFM experiment (kernel machines vs a CNN at small n): its recipe (``recipe.py``), the kernel job
(``jobs.py``) and the orchestration that loads arrays, fits an estimator and saves its run (``kernel_fit.py``).
Its report section is ``convemerge/report/section_convrfm.py``."""

from convemerge.experiments.convrfm.jobs import kernel_job
from convemerge.experiments.recipe import keep_job_name

# moved from convemerge/experiments/kernel_jobs.py: the old name stays in the run ids of its finished runs
keep_job_name(kernel_job, "convemerge.experiments.kernel_jobs:kernel_job")
