"""plotting: functions that return matplotlib figures; they never choose a backend nor write files"""
