r"""Automatic checks for the notebooks' exercises.

Each exercise cell defines a function; the cell after it hands that function to a check:

    q_step = mc.exercises.check_q_step(q_step)

The check runs the function and minidiff's own implementation on a few fixed inputs (several
shapes, a batch of t and a single int t, the edges t = 0 and t = T−1, explicit noise) and then

* all cases match          → prints one line and returns the learner's function;
* NotImplementedError      → the exercise is not attempted yet: prints a note and returns
                             minidiff's reference, so the rest of the notebook still runs (under
                             nbgrader's autograde, where NBGRADER_EXECUTION is set, it fails instead);
* a wrong result or error  → raises ``ExerciseError`` naming the case, what differs (shape, dtype or
                             values, expected vs got, at "image 2 (t = 999, step 1000), channel 0, row 3,
                             column 5"; t is a position, step t + 1),
                             the mistake when it is a common one, and the first hint.

For the learner:

    mc.exercises.hint("q_sample", level=1)      # 1: the idea, 2: the formula, 3: nearly the code
    q_sample = mc.exercises.use_reference("q_sample")   # minidiff's version, to run the rest first

For grading, ``check_q_sample(q_sample, hidden=True)`` runs further cases the notebook does not show
(nbgrader's hidden-tests region); there a function that is not attempted fails.

While a check runs the learner's function, minidiff's own implementation of that exercise raises
(``md.q_sample`` inside ``q_sample`` would pass without teaching anything). A failed check is
remembered: under IPython, an error in a later cell ends with a note naming the exercise it may
depend on, until a re-check passes.

Where things are: ``core`` holds the generic machinery (``check``, ``check_properties``, comparison,
feedback, ``EXERCISES`` and ``register``); one module per notebook (``nb01_forward_process`` …
``nb08_latent_diffusion``) holds that notebook's checks, hints and common mistakes.
"""
from .core import (EXERCISES, IMAGE_TOLERANCE, TIME_LIMIT_S, Case, Exercise, ExerciseError, Mistake, Property, _FAILED,
                   _install_note_handler, _ipython, check, check_properties, compare, compare_tensors, describe,
                   forbidden, hint, image_cases, later_cell_note, not_attempted, position, t_labels, use_reference)
from .nb01_forward_process import *  # noqa: F401,F403
from .nb02_closed_form import *  # noqa: F401,F403
from .nb03_schedules import *  # noqa: F401,F403
from .nb04_unet import *  # noqa: F401,F403
from .nb05_training import *  # noqa: F401,F403
from .nb06_sampling import *  # noqa: F401,F403
from .nb07_guidance import *  # noqa: F401,F403
from .nb08_latent_diffusion import *  # noqa: F401,F403
