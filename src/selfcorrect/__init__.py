"""selfcorrect: make language models correct and improve themselves, and measure honestly
whether they did."""

__version__ = "0.1.0"
