"""Part of Orchestra, installed as orchestra.routers."""
