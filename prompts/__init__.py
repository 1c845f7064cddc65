"""Prompt templates, one file per LLM task (added with the LLM-assistance issue)."""
