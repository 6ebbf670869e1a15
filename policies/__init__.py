"""Policies: SB3 agents trained in a world model's imagination, and their evaluation in the real task."""
