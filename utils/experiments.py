"""The paper's experiment grid (methods x seeds on MoG40) and the numbers it reports (DESIGN.md section 4).

Shared by ``run_grid.py`` (launches the grid) and ``plot_results.py`` (figures and the summary table).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One curve of the paper's figures: a training script, its flags, and the paper's legend name."""

    script: str
    flags: tuple[str, ...]
    label: str


def _grid() -> dict[str, Method]:
    methods: dict[str, Method] = {}
    for score, flags, star, suffix in [("true", ("--true_score",), "*", ""), ("teacher", (), "", " (teacher)")]:
        methods[f"vardiu_gaussian_{score}"] = Method("train_upper_diffusion.py", flags, f"VarDiU Gaussian{star}{suffix}")
        methods[f"vardiu_nsf_{score}"] = Method("train_upper_flow.py", flags + ("--flow_type", "NSF"),
                                                f"VarDiU NSF{star}{suffix}")
        for k in (10, 5, 1):
            methods[f"di_ss{k}_{score}"] = Method("train_diff_instruct.py", flags + ("--score_step", str(k)),
                                                  f"Diff-Instruct{star} score_step {k}{suffix}")
    return methods


GRID = _grid()

# label -> (log density mean, std, log MMD mean, std): the authors' notebook, 10 seeds, last 50 evaluations
PAPER_NUMBERS = {
    "VarDiU Gaussian*": (-7.001, 0.022, -6.87, 0.29),
    "VarDiU NSF*": (-7.000, 0.016, -7.33, 0.18),
    "Diff-Instruct* score_step 10": (-7.86, 0.57, -5.79, 0.37),
    "Diff-Instruct* score_step 5": (-8.10, 0.87, -6.09, 0.41),
    "Diff-Instruct* score_step 1": (-10.18, 1.77, -5.60, 0.36),
    "VarDiU NSF (teacher)": (-7.89, 0.16, -5.68, 0.30),
    "VarDiU Gaussian (teacher)": (-8.13, 0.20, -5.65, 0.25),
    "Diff-Instruct score_step 10 (teacher)": (-8.48, 0.57, -5.83, 0.27),
}


def method_key(config: dict) -> str:
    """The grid key of a run from its config.json (e.g. vardiu_nsf_true, di_ss5_teacher)."""
    script = config.get("script", "")
    if script == "train_upper_flow.py":
        base = f"vardiu_{str(config.get('flow_type', 'nsf')).lower()}"
    elif script == "train_diff_instruct.py":
        base = f"di_ss{config.get('score_step')}"
    elif script == "train_upper_diffusion.py":
        base = "vardiu_gaussian"
    else:
        return script.removesuffix(".py") or "run"
    return f"{base}_{'true' if config.get('true_score') else 'teacher'}"
