"""Agents: one module per stage of the patch lifecycle (deterministic core + optional LLM)."""
