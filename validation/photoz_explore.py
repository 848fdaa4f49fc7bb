"""One exploration run of the photo-z recipe: a variant of an aion-finetune config, trained on the
exploration split (train and validation rows of the final split, no test rows: the test part is
never read while choosing), then evaluated on the validation rows; one line per run is appended
to validation/photoz/explore.jsonl (config, seed, wall and CPU time, metrics before and after the
temperature calibration). docs/finetune.md summarises the table.

    validation/.venv/bin/python validation/photoz_explore.py --name wide128 \
        --base configs/finetune/sdss-photoz-tiny.toml --set model.dim=128 --set train.steps=600

`--set KEY=VALUE` (dotted key, VALUE in TOML syntax; `*` for every table of an array, as in
`new_modality.*.codebook_size=64`) overrides the base config, `--unset KEY` removes a key. The
run goes to out/photoz/runs/NAME (its config: out/photoz/runs/NAME.toml); the validation catalogue
(`--val-catalog`, made by validation/split_catalog.py) is predicted with aion-predict
--save-logits --no-calibration, and the metrics are computed from the logits with temperature 1 and with the
temperature of the run's calibration.json (fitted on these same rows: optimistic, for reference).
"""

import argparse
import json
import os
import resource
import subprocess
import time
import tomllib

import h5py
import numpy as np

from photoz_baselines import codec_values
from photoz_metrics import Binned, Gaussian, distribution_metrics, point_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def dump_toml(d, prefix=""):
    """A TOML writer for the shapes of aion-finetune configs (tables, arrays of tables)."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict) and prefix + k not in ("data.split",):
            tables.append((k, v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {toml_value(v)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in tables:
        name = prefix + k
        if isinstance(v, list):
            for item in v:
                out += f"\n[[{name}]]\n" + dump_toml(item, name + ".")
        else:
            out += f"\n[{name}]\n" + dump_toml(v, name + ".")
    return out


def set_key(cfg, key, value):
    """Sets a dotted key; `*` stands for every table of an array of tables
    (`new_modality.*.codebook_size=128`)."""
    head, _, rest = key.partition(".")
    if not rest:
        cfg[head] = value
    elif rest.startswith("*."):
        for item in cfg[head]:
            set_key(item, rest[2:], value)
    else:
        set_key(cfg.setdefault(head, {}), rest, value)


def unset_key(cfg, key):
    *path, last = key.split(".")
    for p in path:
        cfg = cfg[p]
    del cfg[last]


def evaluate(pred_h5, model_dir, catalog, temperature):
    with h5py.File(pred_h5) as f:
        logits = f["logits/tok_z"][:, 0, :].astype(np.float64)
    with h5py.File(catalog) as f:
        z = f["Z"][:].astype(np.float64)
    values = codec_values(model_dir)
    out = {}
    for name, t in (("raw", 1.0), ("calibrated", temperature)):
        if t is None:
            continue
        l = logits[:, : len(values)] / t
        p = np.exp(l - l.max(1, keepdims=True))
        dist = Binned(p, values)
        m = {"temperature": t}
        for point in ("median", "mean"):
            est = dist.quantile(0.5) if point == "median" else dist.mean()
            m[point] = point_metrics(est, z)
        m.update(distribution_metrics(dist, z))
        out[name] = m
    return out


def evaluate_probe(pred_h5, catalog, target):
    """A probe head's Gaussian predictions (aion-predict --probe)."""
    with h5py.File(pred_h5) as f:
        mu, sd = f[f"probe/{target}/mean"][:], f[f"probe/{target}/std"][:]
    with h5py.File(catalog) as f:
        z = f["Z"][:].astype(np.float64)
    dist = Gaussian(mu, sd)
    m = {"temperature": None, "median": point_metrics(mu, z), "mean": point_metrics(mu, z)}
    m.update(distribution_metrics(dist, z))
    return {"raw": m}


def check_split(explore_path, final_path):
    """Refuses an exploration split that reads any held-out test row, or whose validation rows
    are not the final split's (the validation catalogue is made from those)."""
    explore, final = json.load(open(explore_path)), json.load(open(final_path))
    seen = set(explore["train"]) | set(explore["val"]) | set(explore.get("test", []))
    leaked = seen & set(final["test"])
    if leaked:
        raise SystemExit(f"{explore_path}: {len(leaked)} rows are test rows of {final_path} "
                         f"(e.g. row {min(leaked)}); the exploration may not read them")
    if sorted(explore["val"]) != sorted(final["val"]):
        raise SystemExit(f"{explore_path}: its validation rows are not those of {final_path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--base", default=os.path.join(ROOT, "configs/finetune/sdss-photoz-tiny.toml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--unset", action="append", default=[], metavar="KEY")
    ap.add_argument("--split", default=os.path.join(HERE, "photoz", "split-explore.json"))
    ap.add_argument("--val-catalog", default=os.path.join(ROOT, "out/photoz/val.h5"))
    ap.add_argument("--runs", default=os.path.join(ROOT, "out/photoz/runs"))
    ap.add_argument("--log", default=os.path.join(HERE, "photoz", "explore.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="")
    ap.add_argument("--final-split", default=os.path.join(ROOT, "data/models/sdss-photoz-tiny/split.json"),
                    help="the split whose test rows no exploration run may read; --split must be its "
                         "train and validation rows, and --val-catalog its validation part")
    a = ap.parse_args()
    check_split(a.split, a.final_split)

    with open(a.base, "rb") as f:
        cfg = tomllib.load(f)
    for kv in a.set:
        k, v = kv.split("=", 1)
        set_key(cfg, k, tomllib.loads(f"x = {v}")["x"])
    for k in a.unset:
        unset_key(cfg, k)
    # Paths in a config are relative to its file (docs/finetune.md); the variant is written elsewhere.
    here = os.path.dirname(os.path.abspath(a.base))
    cfg["catalog"] = [os.path.normpath(os.path.join(here, c)) for c in cfg["catalog"]]
    if "base" in cfg.get("model", {}):
        cfg["model"]["base"] = os.path.normpath(os.path.join(here, cfg["model"]["base"]))
    cfg["data"].pop("split", None)
    cfg["data"]["split_file"] = os.path.abspath(a.split)
    out = os.path.join(a.runs, a.name)
    cfg["output"] = out
    # The config goes beside the output: aion-finetune refuses an output directory it did not create.
    os.makedirs(a.runs, exist_ok=True)
    cfg_path = os.path.join(a.runs, f"{a.name}.toml")
    with open(cfg_path, "w") as f:
        f.write(dump_toml(cfg))

    rel = os.path.join(ROOT, "target", "release")
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["nice", "-n", "19", f"{rel}/aion-finetune", "--config", cfg_path, "--overwrite",
                    "--threads", str(a.threads), "--log-level", "warn"], check=True, cwd=ROOT)
    wall, r1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    pred = os.path.join(out, "val-pred.h5")
    what = ["--probe"] if cfg["mode"] == "probe" else ["--target", "tok_z", "--save-logits", "--no-calibration"]
    subprocess.run(["nice", "-n", "19", f"{rel}/aion-predict", "--model", out, "--catalog", a.val_catalog,
                    "--output", pred, *what, "--overwrite",
                    "--threads", str(a.threads), "--log-level", "warn"], check=True, cwd=ROOT)
    cal_path = os.path.join(out, "calibration.json")
    temperature = None
    if os.path.exists(cal_path):
        temperature = json.load(open(cal_path))["targets"]["tok_z"]["temperature"]
    if cfg["mode"] == "probe":
        metrics = evaluate_probe(pred, a.val_catalog, cfg["probe"]["target"])
    else:
        metrics = evaluate(pred, out, a.val_catalog, temperature)
    summary = json.load(open(os.path.join(out, "finetune.json")))
    rec = {"name": a.name, "base": os.path.relpath(a.base, ROOT), "set": a.set, "unset": a.unset,
           "note": a.note, "seed": cfg.get("seed", 0), "steps": summary["steps"], "best_step": summary["best_step"],
           "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "threads": a.threads,
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "val": metrics}
    with open(a.log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    r, c = metrics["raw"], metrics.get("calibrated", {})
    print(f"{a.name}: median σ_NMAD {r['median']['sigma_nmad']:.4f} out {100*r['median']['outliers']:.1f} % | "
          f"mean σ_NMAD {r['mean']['sigma_nmad']:.4f} out {100*r['mean']['outliers']:.1f} % | "
          f"cov68 {100*r['coverage_68']:.1f} % -> {100*c.get('coverage_68', float('nan')):.1f} % (T={temperature}) | "
          f"CRPS {r['crps_norm']:.5f} -> {c.get('crps_norm', float('nan')):.5f} | {wall:.0f} s wall, {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
