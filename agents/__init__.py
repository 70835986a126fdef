"""Part of Orchestra, installed as orchestra.agents."""
