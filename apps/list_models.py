"""``emzoo list [PATTERN]``: the named models, with architecture, parameters and weights source."""

import os

from absl import flags

_LONG = flags.DEFINE_boolean("long", False, "Also print each entry's paper, training data, "
                             "licence, where its weights come from and how to convert them.")


def main(argv):
    import emzoo
    from emzoo import weights as weights_lib

    pattern = argv[1] if len(argv) > 1 else "*"
    names = emzoo.list_models(pattern)
    if not names:
        print(f"No model matches {pattern!r}; `emzoo list` shows them all.")
        return
    rows = []
    for name in names:
        entry = emzoo.describe_model(name)
        meta = entry.get("metadata", {})
        source = weights_lib.source(entry.get("weights"), name,
                                    os.path.dirname(entry.get("_source", "")))
        params = meta.get("params")
        rows.append((name, entry["architecture"], f"{params:,}" if params else "?", source,
                     meta.get("description", "")))
    header = ("name", "architecture", "params", "weights", "description")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:4], widths)) + "  " + header[4])
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths)) + "  " + row[4])
        if _LONG.value:
            for label, text in _details(emzoo.describe_model(row[0]), row[3]):
                print(f"    {label}: {text}")


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
    return lines
