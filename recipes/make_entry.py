"""Turns finished `emzoo train` runs into a zoo entry: bundled weights plus its zoo_configs JSON.

The run folder's own record (config.json's ``metadata.training``: the command, steps, optimiser,
seed, data) is kept as the entry's stages, with the wall time each stage took; the data paths are
written relative to the folder ``recipes/train_zoo.py --out`` made (``DATA/``), so the commands
can be rerun on another machine. Scores come from ``benchmarks/bench_quality.py --zoo --json``.

Example (after ``python recipes/train_zoo.py --out /work/zoo_data`` and the printed commands):

    python recipes/make_entry.py --name dan-em --run runs/dan-em-stage1:10779 \\
        --data-dir /work/zoo_data --scores zoo.json:runs/dan-em-stage1
    python recipes/make_entry.py --name default --scores zoo.json --scores-only

Hand-written because no library knows emzoo's entry format; it only copies and records.
"""

import argparse
import hashlib
import json
import pathlib
import shutil
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
HELD_OUT = ["FlyEM medulla FIB-SEM z 78..96 (the validation block), and its binnings",
            "FlyEM medulla FIB-SEM training cube 2, whole, and its binnings",
            "ISBI 2012 z 24..29"]


def _stage(run_dir, seconds, data_dir):
    """One stage's record from the run folder ``run_dir`` (its saved ``config.json``)."""
    metadata = json.loads((run_dir / "config.json").read_text())["metadata"]
    training = dict(metadata["training"])
    command = training.pop("command")
    if data_dir:
        command = command.replace(str(data_dir.resolve()) + "/", "DATA/")
    command = command.replace(str(run_dir.resolve().parent) + "/", "runs/")
    return {"command": command, "run": run_dir.name, "wall_seconds": seconds,
            "validation": metadata.get("validation"), **training}


def make_entry(name, runs, data_dir=None, scores=None, description=None, out_configs=None,
               out_weights=None):
    """Writes ``zoo_configs/NAME.json`` and ``emzoo/pretrained/NAME.weights.h5`` from ``runs``
    (``[(run folder, wall seconds), ...]``, the last one's weights are the entry's)."""
    out_configs = pathlib.Path(out_configs or REPO / "zoo_configs")
    out_weights = pathlib.Path(out_weights or REPO / "emzoo" / "pretrained")
    last = pathlib.Path(runs[-1][0])
    saved = json.loads((last / "config.json").read_text())
    weights = out_weights / f"{name}.weights.h5"
    shutil.copyfile(last / "model.weights.h5", weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    metadata = saved["metadata"]
    stages = [_stage(pathlib.Path(run), seconds, data_dir) for run, seconds in runs]
    hours = sum(stage["wall_seconds"] or 0 for stage in stages) / 3600
    entry = {
        "name": name,
        "architecture": saved["architecture"],
        "config": saved["config"],
        "weights": {"file": f"emzoo:pretrained/{name}.weights.h5", "sha256": digest,
                    "format": "keras"},
        "metadata": {
            "description": description or metadata["description"],
            "paper": metadata.get("paper"),
            "trained_on": ["../shared/data at several pixel sizes: "
                           "python recipes/train_zoo.py --out DATA (its docstring lists them)"],
            "license": "Apache-2.0 (emzoo); trained on FlyEM data (CC BY: Janelia/HHMI FlyEM) and "
                       "the ISBI 2012 challenge data (research use)",
            "params": metadata.get("params"),
            "size_multiple": metadata.get("size_multiple"),
            "training_loss": stages[-1].get("loss"),
            "training": {
                "data_preparation": "python recipes/train_zoo.py --out DATA",
                "hardware": "2-core CPU without AVX512-BF16 (float32), shared with other work",
                "cpu_hours": round(2 * hours, 1),
                "wall_hours": round(hours, 2),
                "stages": stages,
            },
            "held_out": HELD_OUT,
        },
    }
    if scores:
        if scores.get("costs") is not None:
            scores["costs"]["training_cpu_hours"] = entry["metadata"]["training"]["cpu_hours"]
            scores["costs"]["weights_mb"] = round(weights.stat().st_size / 1e6, 2)
        entry["metadata"]["evaluation"] = {"zoo": scores}
    path = out_configs / f"{name}.json"
    path.write_text(json.dumps(entry, indent=2) + "\n")
    return path, weights


def _scores_of(spec):
    """From ``FILE[:KEY]`` (a ``bench_quality.py --zoo --json`` file and the model's name in it),
    the model's PSNR (as ``model``) beside the baselines' on every region and factor, and its
    measured costs: the entry's ``metadata.evaluation.zoo`` (``emzoo list --long`` shows it)."""
    path, _, key = spec.partition(":")
    measured = json.loads(pathlib.Path(path).read_text())
    rows = [row for row in measured["rows"] if key in row["psnr"]]
    if not rows:
        sys.exit(f"--scores {spec}: no model {key!r} in {path}")
    return {"protocol": "python benchmarks/bench_quality.py --zoo --model NAME --regions "
                        + " ".join(dict.fromkeys(row["region"] for row in rows))
                        + " (PSNR in dB of the dropped slices, float32; held-out regions, never "
                        "read in training)",
            "psnr": {f"{row['region']} x{row['factor']}": {
                ("model" if k == key else k): round(v, 3) for k, v in row["psnr"].items()
                if k in (key, "linear", "cubic", "flow")} for row in rows},
            "costs": measured["costs"].get(key)}


def add_scores(entry_path, scores):
    """Writes ``scores`` (:func:`_scores_of`) as the ``metadata.evaluation.zoo`` of an existing
    entry JSON, leaving the rest as it is."""
    entry = json.loads(pathlib.Path(entry_path).read_text())
    costs = scores.get("costs")
    if costs is not None:
        costs["training_cpu_hours"] = (entry["metadata"].get("training") or {}).get("cpu_hours")
        bundled = (entry.get("weights") or {}).get("file", "")
        if bundled.startswith("emzoo:"):
            path = REPO / "emzoo" / bundled.removeprefix("emzoo:")
            costs["weights_mb"] = round(path.stat().st_size / 1e6, 2)
    entry["metadata"].setdefault("evaluation", {})["zoo"] = scores
    pathlib.Path(entry_path).write_text(json.dumps(entry, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the entry's name, e.g. dan-em")
    parser.add_argument("--run", action="append",
                        help="RUN_FOLDER:WALL_SECONDS, one per stage, in order (repeatable)")
    parser.add_argument("--data-dir", type=pathlib.Path, help="train_zoo.py's --out folder")
    parser.add_argument("--scores", help="FILE[:KEY]: a bench_quality.py --zoo --json file and the "
                                         "model's name in it (default: --name)")
    parser.add_argument("--scores-only", action="store_true",
                        help="only write --scores into the existing zoo_configs/NAME.json")
    parser.add_argument("--description")
    args = parser.parse_args(argv)
    scores = None
    if args.scores:
        scores = _scores_of(args.scores if ":" in args.scores else f"{args.scores}:{args.name}")
    if args.scores_only:
        if scores is None:
            parser.error("--scores-only needs --scores")
        path = REPO / "zoo_configs" / f"{args.name}.json"
        add_scores(path, scores)
        print(f"wrote the scores into {path}")
        return
    if not args.run:
        parser.error("--run RUN_FOLDER:WALL_SECONDS is required (one per stage)")
    runs = []
    for text in args.run:
        run, _, seconds = text.rpartition(":")
        if not run or not seconds.replace(".", "", 1).isdigit():
            sys.exit(f"--run {text}: expected RUN_FOLDER:WALL_SECONDS, e.g. runs/dan-em:10779")
        runs.append((run, float(seconds)))
    for path in make_entry(args.name, runs, args.data_dir, scores, args.description):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
