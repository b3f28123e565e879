"""`python -m selfcorrect.cli` (as `accelerate launch -m selfcorrect.cli fit ...` runs it)."""

from selfcorrect.cli import main

main()
