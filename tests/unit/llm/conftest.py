"""Fixtures for the LLM client and simulated-model tests (defined in llm_helpers)."""

from __future__ import annotations

from llm_helpers import hooks, sim_server

__all__ = ["hooks", "sim_server"]
