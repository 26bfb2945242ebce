import csv, sys
a, b = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    ra = list(csv.DictReader(open(f"{a}/{name}/metrics.csv")))
    rb = list(csv.DictReader(open(f"{b}/{name}/metrics.csv")))
    cols = [c for c in ra[0] if c in rb[0] and c not in ("wall_time", "train_time")]
    diffs = [(i, c, x[c], y[c]) for i, (x, y) in enumerate(zip(ra, rb)) for c in cols if x[c] != y[c]]
    print(name, len(ra), len(rb), "rows; columns compared:", cols, "-> differing cells:", len(diffs), diffs[:4])
