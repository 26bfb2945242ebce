"""Where the target score comes from: the analytic mixture score, a trained EDM teacher, a KDE teacher, or the
authors' teacher file.

Teacher checkpoints (written by train_teacher.py) hold the denoiser's weights and sizes, the target it was
trained on, and how it was made. ``teachers/`` ships one for MoG40. ``--teacher authors`` reads instead the
authors' own teacher, ``edm_network.pth`` of Leyangw/VarDiU at bf35f42 (a bare state dict; not shipped here, never
downloaded: the user passes the path of a copy with --teacher_ckpt).
"""
from __future__ import annotations

from pathlib import Path

import torch

from losses.vardiu import ScoreFn
from models.denoiser import Denoiser, EDMDenoiser, ReferenceDenoiser
from utils.errors import UsageError
from utils.targets import GaussianMixture

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_TEACHERS = {"mog40": ROOT / "teachers" / "mog40_edm.pt"}
TEACHER_KIND = "vardiu-edm-teacher"


def save_teacher(path: str | Path, denoiser: EDMDenoiser, target: str, info: dict) -> None:
    """Write a weights-only teacher checkpoint."""
    torch.save({"kind": TEACHER_KIND, "target": target, "dim": denoiser.dim, "width": denoiser.width,
                "depth": denoiser.depth, "sigma_data": denoiser.sigma_data,
                "state_dict": {k: v.detach().cpu() for k, v in denoiser.state_dict().items()}, "info": info}, path)


def teacher_path(path: str | Path | None, target: GaussianMixture) -> Path:
    """The teacher file a --teacher_ckpt value names: the value itself, or (None) the teacher shipped for
    ``target``; a target without one is a UsageError."""
    if path is not None:
        return Path(path)
    if target.name not in SHIPPED_TEACHERS:
        raise UsageError(f"no teacher ships for --target {target.name}; train one with python train_teacher.py "
                         f"--dim {target.dim} and pass its teacher.pt as --teacher_ckpt (VarDiU can use --true_score "
                         "or --teacher kde instead; Diff-Instruct's student always starts from a teacher)")
    return SHIPPED_TEACHERS[target.name]


def load_teacher(path: str | Path | None, target: GaussianMixture, device: torch.device) -> EDMDenoiser:
    """Load a frozen teacher for ``target``; a missing, corrupt or mismatched file is a UsageError."""
    path = teacher_path(path, target)
    if not path.is_file():
        raise UsageError(f"--teacher_ckpt {path}: no such file; train one with train_teacher.py")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"--teacher_ckpt {path}: not a readable checkpoint ({type(err).__name__}); "
                         "it may be corrupt or truncated") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != TEACHER_KIND:
        raise UsageError(f"--teacher_ckpt {path}: not a teacher checkpoint (write one with train_teacher.py; "
                         "a run's teacher.pt, not its checkpoints/last.pt)")
    if ckpt["dim"] != target.dim or ckpt["target"] != target.name:
        raise UsageError(f"--teacher_ckpt {path}: trained for {ckpt['target']} (dim {ckpt['dim']}), "
                         f"not for --target {target.name} (dim {target.dim})")
    denoiser = EDMDenoiser(ckpt["dim"], ckpt["width"], ckpt["depth"], ckpt["sigma_data"])
    try:
        denoiser.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UsageError(f"--teacher_ckpt {path}: weights do not fit the stated network "
                         f"({str(err).splitlines()[0]})") from None
    return denoiser.to(device).eval().requires_grad_(False)


def load_reference_teacher(path: str | Path | None, target: GaussianMixture, device: torch.device) -> ReferenceDenoiser:
    """Load the authors' teacher file (``edm_network.pth``, a state dict of their MLP) for ``target``; a missing or
    unreadable file, or one of another network, is a UsageError. The width and depth are read from the weights."""
    if path is None:
        raise UsageError("--teacher authors needs --teacher_ckpt PATH: a copy of the authors' edm_network.pth "
                         "(Leyangw/VarDiU at bf35f42; not shipped here)")
    if not Path(path).is_file():
        raise UsageError(f"--teacher_ckpt {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        linears = sum(k.startswith("net.") and k.endswith(".weight") for k in state)  # depth hidden layers + output
        width, depth = state["net.0.weight"].shape[0], linears - 1
        denoiser = ReferenceDenoiser(target.dim, width, depth)
        denoiser.load_state_dict(state)
    except Exception as err:  # unreadable, not a dict, or the weights of another network
        first = str(err).splitlines()[0] if str(err) else ""
        raise UsageError(f"--teacher_ckpt {path}: not the authors' edm_network.pth for --target {target.name} "
                         f"({type(err).__name__}: {first[:120]})") from None
    return denoiser.to(device).eval().requires_grad_(False)


def teacher_network(kind: str, path: str | Path | None, target: GaussianMixture, device: torch.device) -> Denoiser:
    """The teacher denoiser of ``kind`` (--teacher) in ``path`` (--teacher_ckpt): the authors' file for
    ``authors``, else a checkpoint of train_teacher.py (the shipped one when ``path`` is None; Diff-Instruct starts
    its student from it)."""
    if kind == "authors":
        return load_reference_teacher(path, target, device)
    return load_teacher(path, target, device)


def kde_teacher(target: GaussianMixture, num_samples: int, seed: int) -> GaussianMixture:
    """The diffused empirical distribution of num_samples target samples: a mixture of point masses at the
    samples, so at noise level sigma it is (1/N) sum_i N(x; x_i, sigma^2 I) and its score is exact."""
    samples = target.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    return GaussianMixture(samples, std=0.0, name=f"kde{num_samples}")


def target_score(target: GaussianMixture, device: torch.device, true_score: bool, teacher: str,
                 teacher_ckpt: str | Path | None, kde_samples: int, seed: int) -> ScoreFn:
    """The score s_d(x_t, sigma) the generator follows: the target's own (``true_score``), or the ``teacher``'s
    (edm / authors: the denoiser in ``teacher_ckpt``; kde: the diffused empirical distribution of ``kde_samples``
    target samples drawn with ``seed``)."""
    if true_score:
        return target.score
    if teacher == "kde":
        return kde_teacher(target, kde_samples, seed).to(device).score
    return teacher_network(teacher, teacher_ckpt, target, device).score


# the lowest --sigma_min at which the shipped MoG40 teacher kept every mode (docs/teacher-study.md)
TEACHER_NOISE_FLOOR = 2.0


def teacher_training_range(kind: str, path: str | Path | None, target: GaussianMixture) -> tuple[float, float] | None:
    """The noise range (sigma_min, sigma_max) a train_teacher.py teacher (--teacher edm) was trained on, read from
    its file; None for the authors' teacher, the KDE score or a file that does not record it."""
    if kind != "edm":
        return None
    try:
        config = torch.load(teacher_path(path, target), map_location="cpu", weights_only=True)["info"]["config"]
        return float(config["sigma_min"]), float(config["sigma_max"])
    except Exception:  # load_teacher reports a bad file; here an unknown range only means no note
        return None


def teacher_notes(true_score: bool, sigma_min: float, sigma_max: float,
                  trained_range: tuple[float, float] | None = None) -> tuple[str, ...]:
    """The notes (``Method.notes``, printed once when the run starts) of a distillation with the score chosen by
    --true_score / --teacher: one line when a teacher is distilled below the noise floor that kept every mode in
    the teacher study (there the teacher's score error can pull the generator onto a few modes once the sigma
    schedule concentrates on small noise), one when [sigma_min, sigma_max] leaves ``trained_range``, the noise
    levels the teacher was trained on (its score there is extrapolated); none otherwise."""
    if true_score:
        return ()
    notes = []
    if sigma_min < TEACHER_NOISE_FLOOR:
        notes.append(f"note: teacher mode with --sigma_min {sigma_min:g}: below sigma {TEACHER_NOISE_FLOOR:g} the "
                     "teacher's score error can pull the generator onto a few modes as the schedule concentrates "
                     f"there; --sigma_min {TEACHER_NOISE_FLOOR:g} kept all modes with the shipped MoG40 teacher "
                     "(docs/teacher-study.md; experiments/teacher_collapse.py --teacher_ckpt gives a lower bound for "
                     "yours)")
    if trained_range is not None and (sigma_min < trained_range[0] or sigma_max > trained_range[1]):
        notes.append(f"note: --sigma_min {sigma_min:g} --sigma_max {sigma_max:g} leave the noise range the teacher "
                     f"was trained on (sigma {trained_range[0]:g} to {trained_range[1]:g}): its score outside it is "
                     "extrapolated, not learned; narrow the range or train a teacher on it (train_teacher.py "
                     "--sigma_min, --sigma_max)")
    return tuple(notes)


def use_control_variate(setting: str, true_score: bool) -> bool:
    """--control_variate ``setting``: on, off, or auto (on with a teacher, off with the analytic score, as the
    reference repo)."""
    return setting == "on" or (setting == "auto" and not true_score)
