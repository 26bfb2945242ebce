"""plot_results.py and run_grid.py: aggregates of fake run folders with known numbers, every figure written, the
launcher's commands, and a tiny end-to-end grid on the CPU."""
import csv
import json
import math

import numpy as np
import pytest

import plot_results
import run_grid
from conftest import read_metrics, run_script
from utils.recipes import HIGHDIM_PRIOR_PROPOSALS_SIGMA, RECIPES, method_key
from utils.run_io import METRIC_COLUMNS

RNG = np.random.default_rng(0)


def fake_our_run(root, name, seed, logpd, log_mmd, script="train_upper_diffusion.py", modes=None, near=None,
                 recipe=None):
    run = root / f"{name}_seed{seed}"
    run.mkdir(parents=True)
    modes = [40] * len(logpd) if modes is None else modes
    near = [0.9] * len(logpd) if near is None else near
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS + ["loss", "bound", "score_loss", "power"])
        writer.writeheader()
        for i, (lp, lm, md, nm) in enumerate(zip(logpd, log_mmd, modes, near)):
            writer.writerow({"iteration": 1000 * i, "wall_time": 2.0 * i, "train_time": 1.5 * i, "logpd": lp,
                             "mmd": math.exp(lm), "log_mmd": lm, "modes": md, "near_mode": nm, "loss": 0.1,
                             "bound": "", "score_loss": "", "power": 2.0})
    (run / "config.json").write_text(json.dumps({"name": name, "script": script, "true_score": True, "seed": seed,
                                                 "target": "mog40", "recipe": recipe}))
    np.save(run / "samples.npy", RNG.normal(size=(300, 2)) * 20)
    return run


def fake_reference_run(root, name, seed, logpd, mmd, times):
    lists = root / name / f"seed{seed}" / "lists"
    lists.mkdir(parents=True)
    for fname, values in [("logpd_list", logpd), ("MMD_list", mmd), ("time_list", times)]:
        (lists / f"{fname}.json").write_text(json.dumps(list(values)))


def test_summary_table_and_figures_from_known_numbers(tmp_path):
    ours = {seed: (RNG.normal(-7, 0.5, 6), RNG.normal(-6, 0.3, 6)) for seed in range(3)}
    for seed, (lp, lm) in ours.items():
        fake_our_run(tmp_path / "runs", "vardiu_gaussian_true", seed, lp, lm)
    ref = {seed: (RNG.normal(-8, 0.5, 7), np.exp(RNG.normal(-5, 0.3, 7)), np.arange(7) * 3.0) for seed in range(2)}
    for seed, (lp, mmd, times) in ref.items():
        fake_reference_run(tmp_path / "reference", "inf_power_Gaussian_true_score", seed, lp, mmd, times)
    out = tmp_path / "figs"
    plot_results.main([str(tmp_path / "runs"), str(tmp_path / "reference"), "--out", str(out), "--last", "4",
                       "--pdf"])

    with open(out / "summary.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"VarDiU Gaussian*", "inf_power_Gaussian_true_score"}
    per_run_lp = [lp[-4:].mean() for lp, _ in ours.values()]
    per_run_lm = [lm[-4:].mean() for _, lm in ours.values()]
    row = rows["VarDiU Gaussian*"]
    assert int(row["seeds"]) == 3 and int(row["evaluations"]) == 6 and int(row["last_iteration"]) == 5000
    assert float(row["logpd_mean"]) == pytest.approx(np.mean(per_run_lp))
    assert float(row["logpd_std"]) == pytest.approx(np.std(per_run_lp))
    assert float(row["log_mmd_mean"]) == pytest.approx(np.mean(per_run_lm))
    assert float(row["log_mmd_std"]) == pytest.approx(np.std(per_run_lm))
    assert row["paper_logpd"] == "-7.001 ± 0.022" and row["paper_log_mmd"] == "-6.87 ± 0.29"
    ref_row = rows["inf_power_Gaussian_true_score"]
    ref_lm = [np.log(mmd[-4:]).mean() for _, mmd, _ in ref.values()]
    assert int(ref_row["seeds"]) == 2 and int(ref_row["last_iteration"]) == 6000  # 7 evaluations x --eval_every
    assert float(ref_row["log_mmd_mean"]) == pytest.approx(np.mean(ref_lm))
    assert float(ref_row["logpd_std"]) == pytest.approx(np.std([lp[-4:].mean() for lp, _, _ in ref.values()]))
    md = (out / "summary.md").read_text()
    assert f"{np.mean(per_run_lp):.3f} ± {np.std(per_run_lp):.3f}" in md and "-7.001 ± 0.022" in md
    for stem in ["mmd_vs_time", "logpd_vs_time", "metrics_vs_iterations", "samples_grid"]:
        for ext in ["png", "pdf"]:
            assert (out / f"{stem}.{ext}").stat().st_size > 2000, stem


def test_aligned_curves_average_over_seeds(tmp_path):
    for seed, shift in [(0, 0.0), (1, 2.0)]:
        fake_our_run(tmp_path, "m", seed, np.array([-9.0, -8.0, -7.0]) + shift, np.array([-4.0, -5.0, -6.0]))
    (group,) = plot_results.group_methods([plot_results.read_run(p, 1000) for p in sorted(tmp_path.iterdir())])
    time, iters, mean, std = plot_results.aligned(group, "logpd")
    np.testing.assert_allclose(mean, [-8.0, -7.0, -6.0])
    np.testing.assert_allclose(std, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(time, [0.0, 1.5, 3.0])
    np.testing.assert_allclose(iters, [0, 1000, 2000])


def test_method_keys_name_every_grid_method():
    assert method_key({"script": "train_upper_flow.py", "flow_type": "NSF", "true_score": True}) == "vardiu_nsf_true"
    assert method_key({"script": "train_diff_instruct.py", "score_step": 5, "true_score": False}) == "di_ss5_teacher"
    assert RECIPES["paper"]["di_ss10_teacher"].label == "Diff-Instruct score_step 10 (teacher)"


def flags_of(recipe: str, method: str) -> str:
    return " ".join(RECIPES[recipe][method].flags)


def test_recipes_hold_the_stated_flags():
    """paper: the table's eight rows as the authors ran them; matched: one weight and schedule for all;
    published: the README's commands."""
    assert list(RECIPES["paper"]) == ["vardiu_gaussian_true", "vardiu_nsf_true", "di_ss10_true", "di_ss5_true",
                                      "di_ss1_true", "vardiu_nsf_teacher", "vardiu_gaussian_teacher",
                                      "di_ss10_teacher"]
    for key in RECIPES["paper"]:
        flags = flags_of("paper", key)
        assert "--sigma_max 20" in flags and "--weight sigma2" in flags
        if key.startswith("vardiu"):
            assert "--weight_reduction batch" in flags and "--power_uncapped" in flags
        else:
            assert "--reference_generator_input" in flags and "--power 2.0" in flags and "--anneal_power" not in flags
    assert len(RECIPES["matched"]) == 10
    for key in RECIPES["matched"]:
        flags = flags_of("matched", key)
        assert "--weight uniform" in flags and "--power_uncapped" in flags and "reference" not in flags
        assert ("--anneal_power" in flags) == key.startswith("di_")
    assert flags_of("published", "vardiu_gaussian_true") == \
        "--true_score --sigma_min 0.1 --sigma_max 20 --power 2.0 --weight sigma2"
    # teacher_study: the matched schedule with the shipped teacher, one run per training noise floor
    assert len(RECIPES["teacher_study"]) == 15
    scripts = {"vardiu_gaussian": "train_upper_diffusion.py", "vardiu_nsf": "train_upper_flow.py",
               "di_ss1": "train_diff_instruct.py"}
    for key, method in RECIPES["teacher_study"].items():
        sigma_min = key.rsplit("_smin", 1)[1]
        flags = flags_of("teacher_study", key)
        assert flags.startswith(f"--sigma_min {sigma_min} --sigma_max 20 --weight uniform --power_uncapped")
        assert "--true_score" not in flags and method.label.endswith(f"(teacher), sigma_min {sigma_min}")
        assert method.script == scripts[key.split("_teacher")[0]]
        # Diff-Instruct anneals its power as in the matched recipe, so only the noise floor differs from it
        assert ("--anneal_power" in flags) == key.startswith("di_")
    # highdim: one weight and schedule for every method of a d; VarDiU with prior proposals (their threshold per d)
    # and preconditioning
    assert len(RECIPES["highdim"]) == 16
    for key in RECIPES["highdim"]:
        flags = flags_of("highdim", key)
        dim = int(key.rsplit("_d", 1)[1])
        assert "--weight sigma " in flags + " " and "--power_uncapped" in flags and "--true_score" in flags
        assert f"--dim {dim} " in flags
        prior = f"--prior_proposals_sigma {HIGHDIM_PRIOR_PROPOSALS_SIGMA[dim]}"
        assert (prior in flags) == ("--precondition" in flags) == key.startswith("vardiu")
        assert "--iw_samples" not in flags
        # Diff-Instruct beyond 2-D starts from a teacher of its d, which run_grid checks for (d = 2: the shipped one)
        needs = RECIPES["highdim"][key].needs
        if key.startswith("di_") and dim > 2:
            (path, command), = needs
            assert f"--teacher_ckpt {path}" in flags and f"--dim {dim} " in command + " "
        else:
            assert not needs and "--teacher_ckpt" not in flags


def test_run_grid_refuses_a_highdim_grid_whose_teacher_is_missing_and_runs_once_it_exists(tmp_path):
    grid = ["run_grid.py", "--recipe", "highdim", "--methods", "di_ss1_true_d8", "--seeds", "0", "--gpus", ""]
    res = run_script(*grid, "--out_dir", str(tmp_path / "grid"), cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "runs/teacher_d8_40k/teacher.pt: missing" in res.stderr and "train_teacher.py --dim 8 " in res.stderr
    assert not (tmp_path / "grid").exists()
    res = run_script(*grid, "--dry_run", cwd=tmp_path)
    assert res.returncode == 0
    assert "# first (runs/teacher_d8_40k/teacher.pt is missing): python train_teacher.py" in res.stdout
    # a tiny teacher at the recipe's path (the command's flags, small networks): the grid then trains from it
    tiny = ["--width", "16", "--depth", "1", "--batch_size", "32", "--eval_samples", "100", "--show_iter", "5",
            "--device", "cpu", "--plot_every", "0"]
    res = run_script("train_teacher.py", "--dim", "8", "--sigma_max", "150", "--max_iter", "5", "--name",
                     "teacher_d8_40k", *tiny, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_script(*grid, "--dry_run", cwd=tmp_path)
    assert res.returncode == 0 and "# first" not in res.stdout
    res = run_script(*grid, "--max_iter", "5", "--out_dir", str(tmp_path / "grid"), "--", *tiny, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    config = json.loads((tmp_path / "grid" / "highdim" / "di_ss1_true_d8_seed0" / "config.json").read_text())
    assert config["teacher_ckpt"] == "runs/teacher_d8_40k/teacher.pt" and config["dim"] == 8
    # once its runs are at --max_iter, --resume has nothing to run and no longer needs the teacher
    (tmp_path / "runs" / "teacher_d8_40k" / "teacher.pt").unlink()
    res = run_script(*grid, "--max_iter", "5", "--out_dir", str(tmp_path / "grid"), "--resume", "--", *tiny, cwd=tmp_path)
    assert res.returncode == 0 and "already at --max_iter 5; nothing to do" in res.stdout, res.stdout + res.stderr
    res = run_script(*grid, "--max_iter", "10", "--out_dir", str(tmp_path / "grid"), "--resume", "--", *tiny, cwd=tmp_path)
    assert res.returncode == 2 and "runs/teacher_d8_40k/teacher.pt: missing" in res.stderr


def test_summary_compares_seeds_of_different_lengths_at_their_common_iterations(tmp_path):
    # seed 0 finished (8 evaluations), seed 1 is still being relayed (5): the row must describe iteration 4000 for
    # both, not mix seed 0's late numbers with seed 1's early ones
    long_lp, short_lp = [-9.0, -8.5, -8.0, -7.5, -7.2, -7.0, -6.9, -6.8], [-9.1, -8.6, -8.1, -7.6, -7.3]
    fake_our_run(tmp_path, "vardiu_gaussian_true", 0, long_lp, [-6.0] * 8)
    fake_our_run(tmp_path, "vardiu_gaussian_true", 1, short_lp, [-6.0] * 5)
    out = tmp_path / "figs"
    plot_results.main([str(tmp_path), "--out", str(out), "--last", "2"])
    with open(out / "summary.csv") as f:
        row, = csv.DictReader(f)
    assert int(row["evaluations"]) == 5 and int(row["last_iteration"]) == 4000
    assert float(row["logpd_mean"]) == pytest.approx(np.mean([(-7.5 - 7.2) / 2, (-7.6 - 7.3) / 2]))


def test_summary_groups_by_recipe_and_reports_modes(tmp_path):
    for recipe, modes in [("paper", [40, 30, 20, 10]), ("matched", [40, 40, 40, 39])]:
        for seed in range(2):
            fake_our_run(tmp_path / recipe, "vardiu_gaussian_true", seed, [-8.0, -7.5, -7.2, -7.0],
                         [-5.0, -6.0, -6.5, -7.0], modes=[m - 2 * seed for m in modes],
                         near=[0.5, 0.6, 0.7, 0.8 + 0.1 * seed], recipe=recipe)
    out = tmp_path / "figs"
    plot_results.main([str(tmp_path / "paper"), str(tmp_path / "matched"), "--out", str(out), "--last", "2"])
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["recipe"], r["method"]) for r in rows] == [("paper", "VarDiU Gaussian* [paper]"),
                                                          ("matched", "VarDiU Gaussian* [matched]")]
    assert float(rows[0]["modes_mean"]) == pytest.approx(np.mean([15, 13]))  # last 2 of each seed, then seeds
    assert float(rows[0]["modes_min"]) == pytest.approx(13)
    assert float(rows[1]["modes_mean"]) == pytest.approx(np.mean([39.5, 37.5]))
    assert float(rows[0]["near_mode_mean"]) == pytest.approx(np.mean([0.75, 0.8]))
    assert "| 14.0 / 13.0 |" in (out / "summary.md").read_text()


def test_plot_results_bad_input_is_one_line(tmp_path):
    res = run_script("plot_results.py", str(tmp_path / "missing"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr and "Traceback" not in res.stderr
    res = run_script("plot_results.py", str(tmp_path))
    assert res.returncode == 2 and "no run folders" in res.stderr


@pytest.mark.parametrize("recipe,count", [("paper", 8), ("matched", 10), ("published", 2), ("teacher_study", 15)])
def test_run_grid_dry_run_prints_one_vectorised_job_per_method(recipe, count, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    res = run_script("run_grid.py", "--recipe", recipe, "--dry_run", "--gpus", "0,1", "--max_iter", "500", "--",
                     "--show_iter", "100")
    assert res.returncode == 0, res.stderr
    header, *lines = res.stdout.strip().splitlines()
    assert header.startswith(f"# recipe {recipe}:") and len(lines) == count
    assert lines[0].startswith("CUDA_VISIBLE_DEVICES=0 ") and lines[1].startswith("CUDA_VISIBLE_DEVICES=1 ")
    for line, (key, method) in zip(lines, RECIPES[recipe].items()):
        assert method.script in line and f"--name {key}" in line and "--seeds 0-9" in line
        assert " ".join(method.flags) in line and f"--recipe {recipe}" in line
        assert f"--out_dir runs/grid/{recipe}" in line
        assert line.endswith("--show_iter 100") and "--max_iter 500" in line


def test_run_grid_method_selection_and_listing():
    res = run_script("run_grid.py", "--dry_run", "--method_index", "4")  # default recipe: paper
    assert res.stdout.count("\n") == 2 and "--name di_ss1_true" in res.stdout and "--recipe paper" in res.stdout
    res = run_script("run_grid.py", "--list")
    assert res.returncode == 0 and all(f"recipe {r}:" in res.stdout for r in RECIPES)
    res = run_script("run_grid.py", "--methods", "vardiu_bogus")
    assert res.returncode == 2 and "unknown method" in res.stderr


def test_run_grid_seeds_per_job_splits_the_seeds_into_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    res = run_script("run_grid.py", "--recipe", "paper", "--methods", "vardiu_gaussian_true", "--seeds", "0-4",
                     "--seeds_per_job", "2", "--gpus", "0,1,2", "--dry_run")
    lines = res.stdout.strip().splitlines()[1:]
    assert [line.split(" --seeds ")[1].split()[0] for line in lines] == ["0,1", "2,3", "4"]
    assert [line.split()[0] for line in lines] == [f"CUDA_VISIBLE_DEVICES={g}" for g in (0, 1, 2)]
    # a job of one seed names its folder after the seed itself, as vectorised runs do
    assert "--name vardiu_gaussian_true " in lines[0] and "--name vardiu_gaussian_true_seed4 " in lines[2]
    tiny = ["--width", "16", "--depth", "1", "--batch_size", "32", "--eval_samples", "100", "--show_iter", "5",
            "--device", "cpu"]
    grid = ["run_grid.py", "--recipe", "published", "--methods", "vardiu_gaussian_true", "--seeds", "0-2",
            "--seeds_per_job", "1", "--out_dir", str(tmp_path), "--gpus", ""]
    res = run_script(*grid, "--max_iter", "5", "--", *tiny)
    assert res.returncode == 0, res.stdout + res.stderr
    for seed in range(3):
        run = tmp_path / "published" / f"vardiu_gaussian_true_seed{seed}"
        assert json.loads((run / "config.json").read_text())["seed"] == seed
        assert (tmp_path / "published" / "logs" / f"vardiu_gaussian_true_seed{seed}.log").is_file()
    res = run_script(*grid, "--max_iter", "10", "--resume", "--dry_run")
    loads = [line.split(" --load ")[1].split(" --max_iter")[0] for line in res.stdout.strip().splitlines()[1:]]
    assert loads == [str(tmp_path / "published" / f"vardiu_gaussian_true_seed{seed}") for seed in range(3)]
    assert run_script(*grid, "--seeds_per_job", "-1", "--dry_run").returncode == 2


def test_tiny_grid_end_to_end_on_cpu(tmp_path):
    tiny = ["--width", "16", "--depth", "1", "--batch_size", "32", "--eval_samples", "200", "--show_iter", "5",
            "--device", "cpu"]
    res = run_script("run_grid.py", "--recipe", "paper", "--methods", "vardiu_gaussian_true,di_ss1_true",
                     "--seeds", "0-1", "--max_iter", "10", "--out_dir", str(tmp_path / "grid"), "--gpus", "", "--",
                     *tiny)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run_script("plot_results.py", str(tmp_path / "grid"), "--out", str(tmp_path / "figs"), "--last", "2")
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "figs" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["VarDiU Gaussian*", "Diff-Instruct* score_step 1"]
    assert all(r["recipe"] == "paper" for r in rows)
    assert all(int(r["seeds"]) == 2 and int(r["last_iteration"]) == 10 for r in rows)
    config = json.loads((tmp_path / "grid" / "paper" / "di_ss1_true_seed1" / "config.json").read_text())
    assert config["recipe"] == "paper" and config["reference_generator_input"] and config["seed"] == 1


def test_half_written_rows_and_runs_without_evaluations_are_skipped_with_a_warning(tmp_path, capsys):
    for seed in range(2):
        fake_our_run(tmp_path / "runs", "m", seed, [-9.0, -8.0, -7.0], [-4.0, -5.0, -6.0])
    cut = tmp_path / "runs" / "m_seed1" / "metrics.csv"
    cut.write_text(cut.read_text() + "3000,6.0,4.5,-6.5,0.001,-6.9")  # a row cut mid-field, no line end
    empty = fake_our_run(tmp_path / "runs", "m", 2, [], [])  # header only: no evaluation yet
    assert empty.exists()
    out = tmp_path / "figs"
    plot_results.main([str(tmp_path / "runs"), "--out", str(out), "--last", "2"])
    err = capsys.readouterr().err
    assert "m_seed1/metrics.csv: the last row is incomplete" in err and "m_seed2: no evaluations yet; skipped" in err
    with open(out / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["seeds"]) == 2 and int(row["last_iteration"]) == 2000
    assert float(row["logpd_mean"]) == pytest.approx(-7.5)


@pytest.mark.parametrize("argv,message", [
    (["--out", "AFILE"], "is a file, not a folder"),
    (["--out", "AFILE/figs"], "is a file, not a folder"),
])
def test_plot_results_output_path_errors_are_one_line(tmp_path, argv, message):
    fake_our_run(tmp_path / "runs", "m", 0, [-9.0], [-4.0])
    (tmp_path / "afile").write_text("x")
    res = run_script("plot_results.py", str(tmp_path / "runs"), *[a.replace("AFILE", str(tmp_path / "afile"))
                                                                   for a in argv])
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_run_grid_counts_gpus_within_an_inherited_cuda_visible_devices(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=2,3 --gpus 0,1 means GPUs 2 and 3 (as torch counts them), never GPU 0."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    res = run_script("run_grid.py", "--recipe", "paper", "--methods", "vardiu_gaussian_true,vardiu_nsf_true",
                     "--gpus", "0,1", "--dry_run")
    assert res.returncode == 0, res.stderr
    assert [line.split()[0] for line in res.stdout.strip().splitlines()[1:]] == \
        ["CUDA_VISIBLE_DEVICES=2", "CUDA_VISIBLE_DEVICES=3"]
    res = run_script("run_grid.py", "--recipe", "paper", "--gpus", "2", "--dry_run")
    assert res.returncode == 2 and "outside the 2 GPU(s)" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # the default (every GPU this process sees) under CUDA_VISIBLE_DEVICES=1 is GPU 1
    monkeypatch.setattr(run_grid, "visible_gpus", lambda: ["0"])
    assert run_grid.parse_gpus(None, "1") == ["1"] and run_grid.parse_gpus("", "1") == []
    assert run_grid.parse_gpus("0,1", None) == ["0", "1"]
    assert run_grid.parse_gpus(" 1, 0,", "4, 5") == ["5", "4"]  # spaces and a trailing comma are ignored


@pytest.mark.parametrize("argv,message", [
    (["--methods", ","], "names no method"),
    (["--gpus", "x"], "expected comma-separated GPU indices"),
    (["--seeds", ""], "expected a range like 0-9"),
])
def test_run_grid_bad_input_is_one_line(argv, message):
    res = run_script("run_grid.py", "--dry_run", *argv)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_run_grid_resume_continues_the_runs_it_finds(tmp_path):
    tiny = ["--width", "16", "--depth", "1", "--batch_size", "32", "--eval_samples", "100", "--show_iter", "5",
            "--device", "cpu"]
    grid = ["run_grid.py", "--recipe", "published", "--methods", "vardiu_gaussian_true", "--seeds", "0-1",
            "--out_dir", str(tmp_path), "--gpus", ""]
    assert run_script(*grid, "--max_iter", "5", "--", *tiny).returncode == 0
    res = run_script(*grid, "--max_iter", "10", "--resume", "--dry_run")
    assert "--load" in res.stdout and "--max_iter 10" in res.stdout and "--seeds" not in res.stdout
    res = run_script(*grid, "--max_iter", "10", "--resume")
    assert res.returncode == 0, res.stdout + res.stderr
    for seed in (0, 1):
        assert [r["iteration"] for r in read_metrics(tmp_path / "published" / f"vardiu_gaussian_true_seed{seed}")] \
            == ["0", "5", "10"]
    log = (tmp_path / "published" / "logs" / "vardiu_gaussian_true.log").read_text()
    assert log.count("train_upper_diffusion.py") >= 2  # the log is appended to, not overwritten
    res = run_script(*grid, "--max_iter", "10", "--resume")
    assert res.returncode == 0 and "already at --max_iter 10" in res.stdout
