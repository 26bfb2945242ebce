"""Benchmarks of the training step (bench_step.py), of whole runs (bench_wall.py), of two modes' curves
(equality_study.py) and of a teacher's samples (teacher_quality.py)."""
