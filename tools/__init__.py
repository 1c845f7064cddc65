"""Typed tools with no decisions: transports, facts, versions, validation (later: feeds, store, llm, memory)."""
