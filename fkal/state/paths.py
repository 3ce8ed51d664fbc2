"""Where a run's files are: ``RunPaths`` (the one place that names them) and ``Cell``, one configuration's run
(run, imbalance ratio, initial model, configuration) with the paths of its files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..data import DatasetSpec


@dataclass(frozen=True)
class RunPaths:
    root: Path          # {out}/{DATASET}/run{r}

    @classmethod
    def of(cls, out: str | Path, spec: DatasetSpec, run: int) -> "RunPaths":
        return cls(Path(out) / spec.folder / f"run{run}")

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    def ir(self, imbalance_ratio: float) -> Path:
        return self.root / f"ir{imbalance_ratio:g}"

    def split(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / "split.npz"

    def initial(self, imbalance_ratio: float, unsupervised: int, member: int = 0) -> Path:
        kind = "rotation" if unsupervised else "random"
        return self.ir(imbalance_ratio) / f"init_{kind}{'' if member == 0 else f'_e{member}'}.pt"

    def initial_info(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / "initial.json"

    def config(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        kind = "rotation" if unsupervised else "random"
        return self.ir(imbalance_ratio) / kind / config

    def state(self, imbalance_ratio: float, unsupervised: int, config: str, iteration: int) -> Path:
        return self.config(imbalance_ratio, unsupervised, config) / f"state_b{iteration:02d}.pt"

    def config_settings(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        return self.config(imbalance_ratio, unsupervised, config) / "settings.json"

    def config_lock(self, imbalance_ratio: float, unsupervised: int, config: str) -> Path:
        folder = self.config(imbalance_ratio, unsupervised, config)
        return folder.parent / f".{folder.name}.lock"

    def initial_lock(self, imbalance_ratio: float) -> Path:
        return self.ir(imbalance_ratio) / ".initial.lock"


@dataclass(frozen=True)
class Cell:
    """One configuration's run: the unit the loop iterates, resumes and records. ``paths`` names its files."""

    paths: RunPaths
    run: int
    ir: float                   # the imbalance ratio
    unsupervised: int           # 1: from the rotation-pretrained initial model, 0: from random weights
    cfg: Config

    @classmethod
    def of(cls, out: str | Path, spec: DatasetSpec, run: int, ir: float, unsupervised: int, cfg: Config) -> "Cell":
        return cls(RunPaths.of(out, spec, run), run, ir, unsupervised, cfg)

    @property
    def folder(self) -> Path:
        return self.paths.config(self.ir, self.unsupervised, self.cfg.name)

    def state(self, iteration: int) -> Path:
        return self.paths.state(self.ir, self.unsupervised, self.cfg.name, iteration)

    @property
    def settings_file(self) -> Path:
        return self.paths.config_settings(self.ir, self.unsupervised, self.cfg.name)

    @property
    def lock(self) -> Path:
        return self.paths.config_lock(self.ir, self.unsupervised, self.cfg.name)

    @property
    def results(self) -> Path:
        return self.paths.results

    def initial(self, member: int = 0) -> Path:
        return self.paths.initial(self.ir, self.unsupervised, member)

    def __str__(self) -> str:
        return f"{self.cfg.name} of run{self.run} at IR={self.ir:g}"
