"""One file per schema revision, hand-written and reviewed; never edit a released revision, add a new one."""
