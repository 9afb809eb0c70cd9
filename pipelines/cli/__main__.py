"""`python -m pipelines.cli`: the same as the `summarize` command."""

from pipelines.cli import main

main()
