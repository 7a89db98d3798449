"""Per-model caches kept beside a model (never on it), shared by the policy and precision modules.

A cache is a :class:`weakref.WeakKeyDictionary` from model to a dict: what is computed for a
model (compiled calls, bfloat16 clones) goes with the model when it is dropped.
"""


def model_cache(caches, model):
    """``model``'s own dict in the weak-keyed ``caches`` (a fresh, unkept dict for an object that
    cannot be weakly referenced).

    Example:
        >>> import weakref
        >>> class Model: pass
        >>> caches, model = weakref.WeakKeyDictionary(), Model()
        >>> model_cache(caches, model)["call"] = "compiled"
        >>> model_cache(caches, model), len(caches)
        ({'call': 'compiled'}, 1)
        >>> del model; len(caches)
        0
    """
    try:
        return caches.setdefault(model, {})
    except TypeError:
        return {}
