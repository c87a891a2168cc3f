"""One module per op family: its autograd Function(s) beside the functional wrapper."""
