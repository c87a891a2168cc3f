"""pynn vs torch speed comparison: python -m pynn.bench (see __main__.py, benchmarks/README.md).

case.py      what a benchmark is (Case) and the case-file contract
cases/       one module per op family, each with cases() -> list[Case]
network.py   helpers for whole-network cases (training step, inference)
machine.py   machine description and measured ceilings (copy bandwidth, best GEMM)
timing.py    interleaved, warmed-up, rotated-input timing (CUDA events on the GPU)
runner.py    runs cases into result rows; report.py writes CSV, markdown and charts
"""
from .case import Case, time_pair

__all__ = ["Case", "time_pair"]
