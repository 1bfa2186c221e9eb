"""Pipelines over the stages: recipes and the latency-budget search."""
