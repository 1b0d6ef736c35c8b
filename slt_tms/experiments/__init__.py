"""experiments: Config -> run(config) -> frozen Result, no files, no plots"""
