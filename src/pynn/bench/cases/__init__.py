"""Benchmark cases by op family; every module here exposes cases() -> list[Case]."""
import importlib
import pkgutil


def all_cases():
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        out.extend(mod.cases())
    return out
