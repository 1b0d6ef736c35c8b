"""Figures: functions that take results and return matplotlib Figures; they never choose a backend and
never write files (the commands do both)."""
