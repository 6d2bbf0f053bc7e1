"""Orchestration: the weak-supervision run over its stages (`runner`) and the Ray helpers the stages use
(`parallel`)."""
