"""pure analysis: no sampling, no files, no plots"""
