"""Evaluation of trained checkpoints (`gpt4video eval`)."""
