"""Shared by the method benchmarks: the data they run on."""

from __future__ import annotations

from pathlib import Path

CPU_PHANTOM_CASES = 24
CPU_PHANTOM_SHAPE = (40, 80, 80)


def dataset_or_phantom(data: Path | None, tmp: str | Path) -> Path:
    """``data`` if given, else a new phantom like the README's CPU benchmark (24 cases, 40×80×80) in ``tmp``."""
    if data is not None:
        return data
    from avnbench.phantom import synthesize

    path = Path(tmp) / "phantom"
    synthesize(path, n_cases=CPU_PHANTOM_CASES, seed=0, shape=CPU_PHANTOM_SHAPE)
    return path


def method_bench_parser(description: str, fold_option: bool = True):
    """The options every method benchmark takes: ``--data``, ``--preset``, ``--fold``, ``--device``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, help="dataset folder (default: a new 24-case phantom)")
    parser.add_argument("--preset", default="quick", choices=["smoke", "quick", "paper"])
    if fold_option:
        parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return parser
