"""Averages the weights of saved emzoo models of one architecture, element by element.

The third bundled default is ``0.7 * runs/ft3_s2000 + 0.3 * runs/ft4_s100`` (two fine-tunings of
one parent; ``zoo_configs/default.json``, ``metadata.training``). Never run in CI. Example:
    python recipes/average_weights.py -o runs/default-v3 runs/ft3_s2000:0.7 runs/ft4_s100:0.3
"""

import argparse

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="FOLDER:WEIGHT (weights are normalised to sum 1)")
    parser.add_argument("-o", "--output", required=True, help="folder for the averaged model")
    args = parser.parse_args()

    import emzoo

    folders, shares = zip(*(item.rsplit(":", 1) for item in args.models))
    shares = np.asarray(shares, np.float64)
    shares = shares / shares.sum()
    models = [emzoo.load(folder, compile=False) for folder in folders]
    configs = {repr(model.get_config()) for model in models}
    if len(configs) != 1:
        raise SystemExit("the models differ in architecture or configuration; nothing written")
    averaged = [np.sum([share * np.asarray(w, np.float64) for share, w in zip(shares, weights)],
                       axis=0).astype(np.float32)
                for weights in zip(*(model.get_weights() for model in models))]
    models[0].set_weights(averaged)
    emzoo.save(models[0], args.output, metadata={"averaged": list(args.models)})
    print(f"Wrote {args.output}: " + " + ".join(f"{s:.3g} x {f}" for s, f in zip(shares, folders)))


if __name__ == "__main__":
    main()
