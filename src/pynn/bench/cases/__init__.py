"""Benchmark cases by op family; every module here exposes cases() -> list[Case].

A case module that fails to load (say, it names an op that is not merged yet) does not stop the
suite: it becomes one case that fails, so the run records it as an error row.
"""
import importlib
import pkgutil

from ..case import Case


def _broken(module: str, exc: Exception) -> Case:
    def make(device, dtype):
        raise RuntimeError(f"case file pynn/bench/cases/{module}.py failed to load: "
                           f"{type(exc).__name__}: {exc}") from exc
    return Case(group=module, name="case-file", mode="load", make=make, quick=True)


def all_cases():
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        try:
            mod = importlib.import_module(f"{__name__}.{info.name}")
            out.extend(mod.cases())
        except Exception as exc:  # noqa: BLE001 - reported as an error row instead
            out.append(_broken(info.name, exc))
    return out
