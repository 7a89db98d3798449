"""Import of original film_net SavedModels (Google's L1 / VGG / Style releases, Z-upscaling fine-tunes).

An original SavedModel folder holds ``saved_model.pb`` (whose object graph names every variable,
e.g. ``feat_net/sub_extractor/cfeat_conv_0/kernel``) and ``variables/variables.{index,data-*}``
(a TF checkpoint keyed ``variables/<N>/.ATTRIBUTES/VARIABLE_VALUE``). Nothing is executed: the
object graph gives each variable's name and checkpoint key, and the values are read with
``tf.train.load_checkpoint``. Each name is mapped onto :meth:`emzoo.models.film.FILM.original_variables`
(the same names as the original); the fusion convs, auto-named ``conv2d``, ``conv2d_1``, ... by a
process-global counter in the original, are matched in the order of their numeric suffixes, so a
model built after other convs (``conv2d_13`` ...) still maps. Missing, extra or mis-shaped
variables raise a :class:`~emzoo.errors.WeightsError` that names them.

Example:
    >>> model = emzoo.load("film-vimeo", weights=None)                       # doctest: +SKIP
    >>> load_film_saved_model(model, "film_net/Style/saved_model")          # doctest: +SKIP
    >>> emzoo.load("film-vimeo", weights="film_net/Style/saved_model")      # the same  # doctest: +SKIP
"""

import pathlib
import re

import numpy as np

from emzoo.errors import WeightsError, describe, one_line

_SCOPES = ("feat_net/", "predict_flow/", "fusion/")
# Variables a training run may leave in a SavedModel that are not part of the network.
_NOT_MODEL = re.compile(r"^(adam|sgd|rmsprop|optimizer|iter|step|epoch|training_finished|"
                        r"save_counter|learning_rate|decay|beta_1|beta_2|loss_scale)", re.I)
_FUSION = re.compile(r"^fusion/conv2d(?:_(\d+))?/(kernel|bias)$")
_EXPECTED = "an original film_net SavedModel folder (saved_model.pb and variables/)"


def _short_list(names, limit=8):
    names = sorted(names)
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _truncated(path, error):
    return WeightsError(describe(
        f"The variables of the SavedModel {path} are truncated or corrupt ({one_line(error, 200)}).",
        "complete variables/variables.index and variables.data-* files (download them again)",
        path=str(path)))


def _normalise(name):
    """``.../feat_net/sub_extractor/cfeat_conv_0/kernel:0`` -> ``feat_net/.../kernel``."""
    name = re.sub(r":\d+$", "", name)
    for scope in _SCOPES:
        at = name.find(scope)
        if at == 0 or (at > 0 and name[at - 1] == "/"):
            return name[at:]
    return name


def read_saved_model_variables(path):
    """``{variable name: checkpoint key}`` and a checkpoint reader for a SavedModel folder.

    Raises :class:`WeightsError` when the folder is missing, is not a SavedModel, or its
    variables cannot be read.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2, trackable_object_graph_pb2

    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise WeightsError(describe(f"The FILM SavedModel folder {path} does not exist.",
                                    _EXPECTED, path=str(path)))
    if not path.is_dir() or not (path / "saved_model.pb").is_file():
        raise WeightsError(describe(f"{path} is not a TensorFlow SavedModel (no saved_model.pb).",
                                    _EXPECTED, path=str(path)))
    prefix = path / "variables" / "variables"
    if not prefix.with_suffix(".index").is_file():
        raise WeightsError(describe(f"The SavedModel {path} has no variables/variables.index.",
                                    _EXPECTED + " with its variables folder", path=str(path)))
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as error:  # protobuf DecodeError
        raise WeightsError(describe(f"Cannot read the SavedModel {path}: its saved_model.pb is "
                                    f"corrupt ({one_line(error, 200)}).", _EXPECTED,
                                    path=str(path))) from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except Exception as error:  # tf.errors.OpError (DataLoss, OutOfRange, NotFound), DecodeError
        raise _truncated(path, error) from None
    if not saved.meta_graphs:
        raise WeightsError(describe(f"The SavedModel {path} holds no graph.", _EXPECTED,
                                    path=str(path)))
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    keys = {}
    for index, node in enumerate(nodes):
        if node.WhichOneof("kind") != "variable" or index >= len(graph.nodes):
            continue
        for attribute in graph.nodes[index].attributes:
            if attribute.name == "VARIABLE_VALUE":
                keys.setdefault(node.variable.name, attribute.checkpoint_key)
    return keys, reader


def _match(model_names, saved_names):
    """``{model name: saved name}``; fusion convs matched by the order of their suffixes."""
    saved_by_normal = {}
    for saved in saved_names:
        saved_by_normal.setdefault(_normalise(saved), saved)
    mapping = {name: saved_by_normal[name] for name in model_names if name in saved_by_normal}
    model_fusion = sorted((n for n in model_names if _FUSION.match(n)), key=_fusion_order)
    saved_fusion = sorted((n for n in saved_by_normal if _FUSION.match(n)), key=_fusion_order)
    if set(model_fusion) != set(saved_fusion) and len(model_fusion) == len(saved_fusion) and all(
            _FUSION.match(a).group(2) == _FUSION.match(b).group(2)
            for a, b in zip(model_fusion, saved_fusion)):
        # Shifted auto-names (conv2d_13 ...): the creation order is what identifies a conv.
        for ours, theirs in zip(model_fusion, saved_fusion):
            mapping[ours] = saved_by_normal[theirs]
    return mapping


def _fusion_order(name):
    match = _FUSION.match(name)
    return (int(match.group(1) or 0), match.group(2) == "bias")


def load_film_saved_model(model, path):
    """Copies every variable of the original film_net SavedModel at ``path`` into ``model``.

    Args:
        model: an emzoo FILM model (``emzoo.load("film-vimeo", weights=None)``) whose
            configuration matches the SavedModel (the released models use the default one).
        path: the SavedModel folder (the one holding ``saved_model.pb``).

    Returns:
        ``model``, with the original weights.

    Raises:
        WeightsError: the folder is missing or not a SavedModel, its variables file is truncated
            or corrupt, it holds another architecture, or variables are missing, extra or of
            another shape (each named).
    """
    if getattr(model, "architecture", None) != "film" or not hasattr(model, "original_variables"):
        raise WeightsError(describe("Original FILM SavedModels load only into FILM models.",
                                    "an emzoo `film` model",
                                    architecture=getattr(model, "architecture", None)))
    path = pathlib.Path(path).expanduser()
    keys, reader = read_saved_model_variables(path)
    if (path / "assets" / "emzoo_model.json").is_file():
        raise WeightsError(describe(
            f"{path} is a SavedModel exported by emzoo, not an original film_net one.",
            "an original FILM SavedModel, or the .weights.h5 of the emzoo model that was exported",
            path=str(path)))
    targets = model.original_variables()
    mapping = _match(list(targets), list(keys))
    used = set(mapping.values())
    extra = [name for name in keys if name not in used and not _NOT_MODEL.match(_normalise(name))]
    missing = [name for name in targets if name not in mapping]
    if missing and len(missing) == len(targets):
        raise WeightsError(describe(
            f"{path} is not a film_net SavedModel: none of its {len(keys)} variables has a film_net "
            f"name (e.g. {_short_list(keys, 3) or 'no variables at all'}).",
            "variables named feat_net/..., predict_flow/..., fusion/...",
            path=str(path)))
    problems = []
    if missing:
        problems.append(f"missing: {_short_list(missing)}")
    if extra:
        problems.append(f"unexpected: {_short_list(extra)}")
    shapes = reader.get_variable_to_shape_map()
    wrong = []
    for name, saved in mapping.items():
        have = tuple(shapes.get(keys[saved], ()))
        want = tuple(targets[name].shape)
        if have != want:
            wrong.append(f"{saved} {have} vs emzoo {want}")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:6])
                        + (f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""))
    if problems:
        raise WeightsError(describe(
            f"The SavedModel {path} does not match this FILM configuration ("
            + " | ".join(problems) + ").",
            f"the {len(targets)} variables of film_net with config {model.get_config()}",
            path=str(path)))

    values = {}
    for name, saved in mapping.items():
        try:
            values[name] = np.asarray(reader.get_tensor(keys[saved]))
        except Exception as error:  # tf.errors.DataLossError / OutOfRangeError on truncation
            raise _truncated(path, error) from None
    for name, value in values.items():  # assign only once everything was read
        targets[name].assign(value.astype(targets[name].dtype))
    return model


def infer_config(path, base_config=None):
    """The FILM constructor arguments implied by a SavedModel's variable shapes.

    ``pyramid_levels`` cannot be read from weights (the shared predictor serves every coarse
    level); it is taken from ``base_config`` (default 7). Useful to convert fine-tunes whose
    configuration differs from the released one.

    Example:
        >>> infer_config("film_net/Style/saved_model")["filters"]     # doctest: +SKIP
        64
    """
    keys, reader = read_saved_model_variables(path)
    shapes = {_normalise(name): tuple(reader.get_variable_to_shape_map()[key])
              for name, key in keys.items()}
    config = dict(base_config or {})
    try:
        first = shapes["feat_net/sub_extractor/cfeat_conv_0/kernel"]
        sub_convs = [n for n in shapes if re.match(r"^feat_net/sub_extractor/cfeat_conv_\d+/kernel$", n)]
        predictors = sorted({n.split("/")[1] for n in shapes if n.startswith("predict_flow/")})
        specialised = sorted(p for p in predictors if p != "flow_predictor_shared")
        ordered = specialised + (["flow_predictor_shared"] if "flow_predictor_shared" in predictors
                                 else [])
        flow_convs, flow_filters = [], []
        for predictor in ordered:
            convs = [n for n in shapes if n.startswith(f"predict_flow/{predictor}/") and
                     n.endswith("/kernel")]
            flow_convs.append(len(convs) - 2)
            flow_filters.append(shapes[f"predict_flow/{predictor}/conv_0/kernel"][3])
        fusion_convs = [n for n in shapes if _FUSION.match(n) and n.endswith("/kernel")]
    except (KeyError, IndexError):
        raise WeightsError(describe(f"{path} is not a film_net SavedModel.",
                                    "variables named feat_net/..., predict_flow/..., fusion/...",
                                    path=str(path))) from None
    config.update(channels=int(first[2]), filters=int(first[3]), sub_levels=len(sub_convs) // 2,
                  specialized_levels=len(specialised), flow_convs=flow_convs,
                  flow_filters=flow_filters,
                  fusion_pyramid_levels=(len(fusion_convs) - 1) // 3 + 1)
    config.setdefault("pyramid_levels", 7)
    return config


def write_original_layout(path, named_values):
    """Writes ``(name, array)`` pairs as a SavedModel laid out like an original film_net one.

    The inverse of the import's reading side: a root object whose ``variables`` list holds
    ``tf.Variable``s with the given names (checkpoint keys ``variables/<N>/.ATTRIBUTES/...``)
    and a trivial ``serving_default`` signature. ``write_original_layout(path,
    model.original_variables().items())`` hands emzoo-trained FILM weights to tools that read the
    original variable names; the tests use it to build stand-ins for Google's SavedModels.

    Example:
        >>> write_original_layout("film_names", model.original_variables().items())  # doctest: +SKIP
    """
    import tensorflow as tf

    root = tf.__internal__.tracking.AutoTrackable()
    root.variables = [tf.Variable(np.asarray(value), name=name) for name, value in named_values]
    first = root.variables[0]

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
    def serve(time):
        return {"image": time * tf.reduce_sum(first)}

    root.serve = serve
    tf.saved_model.save(root, str(path), signatures={"serving_default": serve})
    return pathlib.Path(path)
