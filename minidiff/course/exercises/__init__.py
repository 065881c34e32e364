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

For grading, ``check_q_sample(q_sample, hidden=True)`` runs further cases the notebook does not show, drawn
from the course's secret seed (``core.hidden_rng``; the package stores none, only what each must cover);
nbgrader's hidden-tests region runs them through ``minidiff.course.grade`` (below). There a function that
is not attempted fails.

While a check runs the learner's function it watches the calls the function makes (a profile hook;
no module is patched): a call into minidiff's own answer to that exercise, at any depth and by any
route, fails the check and names it (``md.q_sample`` inside ``q_sample`` would pass without teaching
anything). Each case has a time limit (``TIME_LIMIT_S``); an input overwritten in place and an escape
such as ``sys.exit`` fail the check saying so. An exercise that calls an earlier one (``forward_chain``
calls ``q_step``) runs with minidiff's reference for the earlier one, so it is graded on its own. The
graded hidden cases run through ``minidiff.course.grade``, a fresh copy of these checks that no
notebook cell can have changed.

A failed check is remembered: under IPython, an error in a later cell ends with a note naming the
exercise it may depend on, until a re-check passes.

Where things are: ``core`` holds the generic machinery (``check``, ``check_properties``, comparison,
feedback, ``EXERCISES`` and ``register``); one module per notebook (``nb01_forward_process`` …
``nb08_latent_diffusion``, ``nb09_flow_matching``) holds that notebook's checks, hints and common mistakes.
"""
from . import (
                   nb01_forward_process,
                   nb02_closed_form,
                   nb03_schedules,
                   nb04_unet,
                   nb05_training,
                   nb06_sampling,
                   nb07_guidance,
                   nb08_latent_diffusion,
                   nb09_flow_matching,
)

# From core: the public names, listed in ``__all__`` below, and (``X as X``: re-exported on purpose) the
# comparison helpers, a tolerance, and the private state and hooks that the tests and ``minidiff.course.grade``
# reach as ``mc.exercises.NAME``.
from .core import _FAILED as _FAILED
from .core import (
                   EXERCISES,
                   TIME_LIMIT_S,
                   Case,
                   Exercise,
                   ExerciseError,
                   Mistake,
                   check,
                   check_properties,
                   forbidden,
                   hint,
                   later_cell_note,
                   use_reference,
)
from .core import IMAGE_TOLERANCE as IMAGE_TOLERANCE
from .core import Property as Property
from .core import _install_note_handler as _install_note_handler
from .core import _ipython as _ipython
from .core import compare as compare
from .core import compare_tensors as compare_tensors
from .core import describe as describe
from .core import image_cases as image_cases
from .core import not_attempted as not_attempted
from .core import position as position
from .core import t_labels as t_labels
from .nb01_forward_process import *  # noqa: F401,F403
from .nb02_closed_form import *  # noqa: F401,F403
from .nb03_schedules import *  # noqa: F401,F403
from .nb04_unet import *  # noqa: F401,F403
from .nb05_training import *  # noqa: F401,F403
from .nb06_sampling import *  # noqa: F401,F403
from .nb07_guidance import *  # noqa: F401,F403
from .nb08_latent_diffusion import *  # noqa: F401,F403
from .nb09_flow_matching import *  # noqa: F401,F403

# What ``mc.exercises`` offers a notebook: the checks (``check_NAME``), hints and the reference, the error
# a check raises, and the registry; ``core`` and the notebook modules hold the rest.
__all__ = [
    "EXERCISES", "TIME_LIMIT_S", "ExerciseError", "hint", "use_reference", "later_cell_note",
    "Case", "Exercise", "Mistake", "check", "check_properties", "forbidden",
]
__all__ += [n for module in (nb01_forward_process, nb02_closed_form, nb03_schedules, nb04_unet, nb05_training,
                             nb06_sampling, nb07_guidance, nb08_latent_diffusion, nb09_flow_matching)
            for n in module.__all__]
__all__.sort()
