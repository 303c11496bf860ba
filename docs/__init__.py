"""The documentation site's generator (docs/gen.py); the pages themselves are Markdown."""
