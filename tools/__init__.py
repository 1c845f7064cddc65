"""Typed tools with no decisions: transports, facts, versions and validation.

Feeds, the store, the LLM client and the vector memory join them in later issues.
"""
