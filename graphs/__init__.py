"""LangGraph state machines wiring the agents (the first graph lands with the assessment issue)."""
