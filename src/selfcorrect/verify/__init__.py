"""Feedback sources: answer checks, code extraction and execution results."""
