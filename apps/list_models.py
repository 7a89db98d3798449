"""``emzoo list [PATTERN ...]``: the named models, with architecture, parameters and weights source.

Each PATTERN is a name or a shell-style pattern (``film*``); the models matching any of them are
listed, and each row fits in 100 columns (its description cut to fit; ``--long`` prints it whole,
with the paper, training data, licence and where the weights come from). ``flow``, the
optical-flow baseline that ``--model flow`` runs (no weights; needs ``emzoo[flow]``), is listed
with the models.

Example:
    emzoo list
    emzoo list default tsain
    emzoo list "film*" --long
"""

import fnmatch
import os
import textwrap

from absl import flags

_LONG = flags.DEFINE_boolean("long", False, "Also print each entry's full description, paper, "
                             "training data, licence, where its weights come from and how to "
                             "convert them.")

WIDTH = 100  # columns of a listing row
FLOW = "flow"  # the optical-flow baseline: a model name for every volume command, not a zoo entry
_FLOW_DESCRIPTION = ("Optical-flow baseline (OpenCV's DIS flow in both directions, each slice "
                     "warped halfway, the two blended): no weights to load or train; needs "
                     "emzoo[flow].")


def matching(patterns, names):
    """The names matching any of ``patterns`` (all names without patterns), in ``names``' order.

    Example:
        >>> matching(["default", "ts*"], ["dan", "default", "tsain"])
        ['default', 'tsain']
    """
    if not patterns:
        return list(names)
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def main(argv):
    import emzoo
    from emzoo import weights as weights_lib

    patterns = argv[1:]
    names = matching(patterns, sorted(emzoo.list_models() + [FLOW]))
    if not names:
        print(f"No model matches {' '.join(repr(p) for p in patterns)}; `emzoo list` shows them all.")
        return
    rows = []
    for name in names:
        if name == FLOW:
            rows.append((FLOW, "flow", "0", "none needed", _FLOW_DESCRIPTION))
            continue
        entry = emzoo.describe_model(name)
        meta = entry.get("metadata", {})
        source = weights_lib.source(entry.get("weights"), name,
                                    os.path.dirname(entry.get("_source", "")))
        params = meta.get("params")
        rows.append((name, entry["architecture"], f"{params:,}" if params else "?", source,
                     meta.get("description", "")))
    header = ("name", "architecture", "params", "weights", "description")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    room = max(20, WIDTH - sum(widths) - 2 * 4)
    print("  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4])
    for row in rows:
        print(("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths)) + "  "
               + textwrap.shorten(row[4], room, placeholder="...")).rstrip())
        if _LONG.value:
            details = ([("weights", "none needed: it computes optical flow with OpenCV "
                         "(pip install \"emzoo[flow]\")")] if row[0] == FLOW else
                       _details(emzoo.describe_model(row[0]), row[3]))
            for label, text in [("description", row[4])] + details:
                print(textwrap.fill(f"{label}: {text}", WIDTH, initial_indent="    ",
                                    subsequent_indent="      ", break_on_hyphens=False,
                                    break_long_words=False))


def _details(entry, source):
    """The ``--long`` lines of one entry: paper, training data, licence, where its weights come
    from and, for weights to convert, the command that installs them."""
    meta = entry.get("metadata", {})
    spec = entry.get("weights") or {}
    trained_on = meta.get("trained_on")
    if isinstance(trained_on, (list, tuple)):
        trained_on = "; ".join(str(item) for item in trained_on)
    where = {
        "bundled": f"bundled with emzoo ({spec.get('file', '')})",
        "cached": "in the weights cache ($EMZOO_HOME, default ~/.cache/emzoo)",
        "download": f"downloaded on first use from {spec.get('url', '')} (sha256 checked)",
        "convert": "converted locally from " + (spec.get("source") or meta.get("weights_source")
                                                or "the original release"),
        "none": f"none: no trained weights ship; train them with `emzoo train {entry['name']} "
                f"--data ... -o runs/{entry['name']}`",
    }.get(source, source)
    lines = [("paper", meta.get("paper") or "?"), ("trained on", trained_on or "not trained"),
             ("licence", meta.get("license") or "?"), ("weights", where)]
    command = spec.get("convert_command") or meta.get("convert_command")
    if command and source in ("convert", "cached"):
        lines.append(("convert", command))
    scores = zoo_row(entry)
    if scores:
        lines.append(("scores", scores))
    return lines


def zoo_row(entry):
    """The entry's row of the zoo table, as text: dB over linear on each held-out region and
    factor, then its costs (from ``metadata.evaluation.zoo``, which recipes/make_entry.py writes
    from benchmarks/bench_quality.py --zoo); ``None`` for an entry without it.

    Example:
        >>> zoo_row({"metadata": {"evaluation": {"zoo": {"psnr": {
        ...     "fibsem-val x2": {"model": 31.7, "linear": 31.5},
        ...     "fibsem-val x4": {"model": 29.8, "linear": 28.8}},
        ...     "costs": {"seconds_per_slice": 0.81, "training_cpu_hours": 4.0}}}}})
        'dB over linear: fibsem-val x2 +0.20, x4 +1.00; 0.81 s per 512 x 512 slice, trained 4.0 CPU-hours'
    """
    zoo = (entry.get("metadata", {}).get("evaluation") or {}).get("zoo")
    if not zoo:
        return None
    regions = {}
    for where, row in zoo.get("psnr", {}).items():
        region, _, factor = where.rpartition(" ")
        regions.setdefault(region, []).append(f"{factor} {row['model'] - row['linear']:+.2f}")
    text = "dB over linear: " + "; ".join(f"{region} {', '.join(cells)}"
                                          for region, cells in regions.items())
    costs = zoo.get("costs") or {}
    if costs.get("seconds_per_slice") is not None:
        text += f"; {costs['seconds_per_slice']:.2f} s per 512 x 512 slice"
    if costs.get("training_cpu_hours") is not None:
        text += f", trained {costs['training_cpu_hours']:.1f} CPU-hours"
    return text
