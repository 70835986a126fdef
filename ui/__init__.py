"""Part of Orchestra, installed as orchestra.ui."""
