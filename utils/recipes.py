"""The MoG40 experiments as recipes (method x flags), and the numbers the paper reports (its MoG40 table).

Shared by ``run_grid.py`` (launches a recipe) and ``plot_results.py`` (figures and the summary table).

Recipes:
    paper      the table's eight rows as the authors' code ran them: VarDiU with the batch-mean weight reduction
               and an uncapped power; Diff-Instruct with a fixed power of 2 and the reference generator input;
               sigma_max 20 and sigma2 weights everywhere (the published commands).
    matched    a fair comparison no published table has: every method with the same per-sample weight
               (uniform), the same annealed, uncapped sigma schedule and none of the reference code's quirks.
    published  the README's published commands verbatim (per-sample sigma2 weights, power capped at 2.0).
    highdim    MoG40 beyond 2-D (d = 2, 8, 32, 128), true score, VarDiU Gaussian and NSF with --precondition
               and prior proposals (--prior_proposals_sigma from HIGHDIM_PRIOR_PROPOSALS_SIGMA), Diff-Instruct
               score_step 1 and 10 (beyond 2-D from the teacher of their d, ``highdim_teacher``); every method of
               a d on one schedule: --weight sigma, uncapped power, --sigma_max from HIGHDIM_SIGMA_MAX.
    teacher_study
               the teacher-collapse study: VarDiU (Gaussian, NSF) and Diff-Instruct score_step 1 with the shipped
               teacher, the matched schedule (per-sample uniform weights, uncapped power; Diff-Instruct also
               --anneal_power), and the training noise floor --sigma_min raised from 0.1 to 2.0.
"""
from __future__ import annotations

from dataclasses import dataclass

from utils.registry import METHODS


@dataclass(frozen=True)
class RecipeMethod:
    """One curve of a figure: a training script, its flags, and the paper's legend name."""

    script: str
    flags: tuple[str, ...]
    label: str
    needs: tuple[tuple[str, str], ...] = ()  # (file the run reads, the command that makes it), checked by run_grid


SCORES = {"true": (("--true_score",), "*", ""), "teacher": ((), "", " (teacher)")}
SIGMA_RANGE = ("--sigma_min", "0.1", "--sigma_max", "20")
TEACHER_STUDY_SIGMA_MINS = ("0.1", "0.5", "1.0", "1.5", "2.0")


def vardiu(posterior: str, score: str, flags: tuple[str, ...]) -> tuple[str, RecipeMethod]:
    """('vardiu_gaussian_true', RecipeMethod) and the like, for posterior 'gaussian' or 'nsf'
    (utils.registry.METHODS)."""
    score_flags, star, suffix = SCORES[score]
    entry = METHODS[f"vardiu_{posterior}"]
    return (f"vardiu_{posterior}_{score}",
            RecipeMethod(entry.script, score_flags + flags + entry.flags, f"{entry.label}{star}{suffix}"))


def diff_instruct(score_step: int, score: str, flags: tuple[str, ...]) -> tuple[str, RecipeMethod]:
    """('di_ss10_true', RecipeMethod) and the like."""
    score_flags, star, suffix = SCORES[score]
    entry = METHODS["diff_instruct"]
    return (f"di_ss{score_step}_{score}",
            RecipeMethod(entry.script, score_flags + flags + entry.flags + ("--score_step", str(score_step)),
                   f"{entry.label}{star} score_step {score_step}{suffix}"))


# highdim: --sigma_max per dimension, near the largest distance between two MoG40 means (96, 147, 253, 417 at
# d = 2, 8, 32, 128), so that the top of the noise range merges every mode as sigma_max 20 does not beyond 2-D; in
# 2-D the paper's 20. The pilot (docs/high-dimensional.md) measures the alternative.
HIGHDIM_SIGMA_MAX = {2: 20, 8: 150, 32: 250, 128: 420}
# highdim's weight and bound, those that kept the most VarDiU modes at d = 8 (docs/high-dimensional.md):
# --weight sigma (sigma / sigma_max: the low-noise terms no longer dominate the batch's gradient) and the paper's
# bound with the batch's prior draws as importance proposals from the noise level S at which they count as many as
# K = 8's nine posterior draws (median effective sample size of results/highdim/proposal_ess: 12.4, 9.1, 9.0, 8.9
# at d = 2, 8, 32, 128); at d = 8 S = 5 beat K = 8 at a third of its step (1.50 against 5.15 ms, 5 seeds, H200).
# From S up the bound keeps 0.94 or more of the divergence's pull from 20 modes towards all 40
# (results/highdim/bound_vs_modes); well below S it keeps little of it.
HIGHDIM_PRIOR_PROPOSALS_SIGMA = {2: 2, 8: 5, 32: 10, 128: 20}
# highdim's Diff-Instruct students start from an EDM teacher of their d, as the paper's baseline does (with
# --true_score the teacher only initialises the student's score network): the 40,000-iteration teacher of
# docs/high-dimensional.md, sampled from twice --sigma_max, written by train_teacher.py to runs/; d = 2 takes the
# shipped MoG40 teacher
HIGHDIM_TEACHER_ITERATIONS = 40_000


def highdim_teacher(dim: int, sigma_max: int) -> tuple[str, str]:
    """(the teacher file highdim's Diff-Instruct rows at ``dim`` read, the command that trains it)."""
    name = f"teacher_d{dim}_{HIGHDIM_TEACHER_ITERATIONS // 1000}k"
    return (f"runs/{name}/teacher.pt",
            f"python train_teacher.py --dim {dim} --sigma_max {sigma_max} --sampler_sigma_max {2 * sigma_max} "
            f"--max_iter {HIGHDIM_TEACHER_ITERATIONS} --show_iter 10000 --eval_samples 5000 --name {name}")


def _recipes() -> dict[str, dict[str, RecipeMethod]]:
    paper_vardiu = SIGMA_RANGE + ("--weight", "sigma2", "--weight_reduction", "batch", "--power_uncapped")
    paper_di = SIGMA_RANGE + ("--weight", "sigma2", "--power", "2.0", "--reference_generator_input")
    paper = dict([vardiu("gaussian", "true", paper_vardiu), vardiu("nsf", "true", paper_vardiu),
                  diff_instruct(10, "true", paper_di), diff_instruct(5, "true", paper_di),
                  diff_instruct(1, "true", paper_di), vardiu("nsf", "teacher", paper_vardiu),
                  vardiu("gaussian", "teacher", paper_vardiu), diff_instruct(10, "teacher", paper_di)])
    matched_flags = SIGMA_RANGE + ("--weight", "uniform", "--power_uncapped")
    matched = dict([vardiu(post, score, matched_flags) for score in SCORES for post in ("gaussian", "nsf")] +
                   [diff_instruct(k, score, matched_flags + ("--anneal_power",)) for score in SCORES
                    for k in (10, 5, 1)])
    published_flags = SIGMA_RANGE + ("--power", "2.0", "--weight", "sigma2")
    published = dict([vardiu("gaussian", "true", published_flags), vardiu("nsf", "true", published_flags)])
    teacher_study = {}
    for sigma_min in TEACHER_STUDY_SIGMA_MINS:
        flags = ("--sigma_min", sigma_min, "--sigma_max", "20", "--weight", "uniform", "--power_uncapped")
        for key, method in (vardiu("gaussian", "teacher", flags), vardiu("nsf", "teacher", flags),
                            diff_instruct(1, "teacher", flags + ("--anneal_power",))):
            teacher_study[f"{key}_smin{sigma_min}"] = RecipeMethod(method.script, method.flags,
                                                             f"{method.label}, sigma_min {sigma_min}")
    highdim = {}
    for dim, sigma_max in HIGHDIM_SIGMA_MAX.items():
        flags = ("--dim", str(dim), "--sigma_min", "0.1", "--sigma_max", str(sigma_max), "--weight", "sigma",
                 "--power_uncapped")
        vardiu_flags = flags + ("--precondition", "--prior_proposals_sigma", str(HIGHDIM_PRIOR_PROPOSALS_SIGMA[dim]))
        teacher = () if dim == 2 else (highdim_teacher(dim, sigma_max),)
        di_flags = flags + ("--anneal_power",) + tuple(f for path, _ in teacher for f in ("--teacher_ckpt", path))
        for key, method in (vardiu("gaussian", "true", vardiu_flags), vardiu("nsf", "true", vardiu_flags),
                            diff_instruct(1, "true", di_flags), diff_instruct(10, "true", di_flags)):
            highdim[f"{key}_d{dim}"] = RecipeMethod(method.script, method.flags, f"{method.label}, d = {dim}",
                                                    teacher if key.startswith("di_") else ())
    return {"paper": paper, "matched": matched, "published": published, "teacher_study": teacher_study,
            "highdim": highdim}


RECIPES = _recipes()
RECIPE_SUMMARIES = {
    "paper": "the paper's table as the authors' code ran it (VarDiU: -mean(w)*mean(L), uncapped power; "
             "Diff-Instruct: fixed power 2, reference generator input)",
    "matched": "every method with per-sample uniform weights and the same annealed uncapped sigma schedule",
    "published": "the README's published commands verbatim (per-sample sigma2, power capped at 2.0)",
    "teacher_study": "VarDiU and Diff-Instruct score_step 1 with the shipped teacher, matched schedule, training noise "
                     "floor sigma_min 0.1 to 2.0",
    "highdim": "MoG40 in d = 2, 8, 32, 128, true score: VarDiU Gaussian and NSF (--precondition, prior proposals "
               "from sigma 2, 5, 10, 20), "
               "Diff-Instruct score_step 1 and 10, one matched schedule per d (sigma weights, uncapped annealing)",
}
LABELS = {key: m.label for methods in RECIPES.values() for key, m in methods.items()}
METHOD_ORDER = list(dict.fromkeys(key for methods in RECIPES.values() for key in methods))

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
    """The method key of a run from its config.json (e.g. vardiu_nsf_true, di_ss5_teacher)."""
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
