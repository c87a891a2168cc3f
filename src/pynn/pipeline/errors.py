class PipelineError(Exception):
    """A problem with the user's data, flags or files: the CLI prints it as one line and exits 2."""
