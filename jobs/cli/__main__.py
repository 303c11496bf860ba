"""``python -m jobs.cli``: the same app as the ``facewatch`` console script."""

from jobs.cli.app import app

app()
