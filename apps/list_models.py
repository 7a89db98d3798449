"""``emzoo list [PATTERN]``: the named models, with architecture, parameters and weights source."""

import os

from absl import flags

_LONG = flags.DEFINE_boolean("long", False, "Also print each entry's description and paper.")


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
            meta = emzoo.describe_model(row[0]).get("metadata", {})
            print(f"    paper: {meta.get('paper', '')}")
