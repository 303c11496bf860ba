"""The ``facewatch`` command line: ``app`` (the root command) and one module per command group.

Commands parse their options, call the archive services (jobs/archive/) or the core
(pipelines/), and print. This package's ``__init__`` stays empty so that importing one
command module (or ``common``) does not build the whole app.
"""
