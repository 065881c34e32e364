"""The course's tooling: the profile switch, plots and widgets, exercise checks, and the generator of
student notebooks. The library does not import it; the notebooks and ``minidiff/__init__`` do."""
