"""The CNFA experiment (Section 4.2): its recipe (``recipe.py``), the per-run analysis job (``jobs.py``), the run-level
library that loads a run's model and images (``run.py``) and the writer of the table, convergence and pictures
(``report_writer.py``). Its report section is ``convemerge/report/section_cnfa.py``."""

from convemerge.experiments.cnfa.jobs import cnfa_job
from convemerge.experiments.recipe import keep_job_name

# moved from convemerge/experiments/cnfa_jobs.py: the old name stays in the run ids of its finished runs
keep_job_name(cnfa_job, "convemerge.experiments.cnfa_jobs:cnfa_job")
