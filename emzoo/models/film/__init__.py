"""FILM (Reda et al., ECCV 2022): film_net, its paper losses, and import of original SavedModels.

Files: ``model.py`` (the network: feature pyramid, flow estimation, fusion; feature reuse for the
volume engine), ``loss.py`` (the Style / VGG / L1 losses), ``saved_model.py`` (reading Google's and
the Z-upscaling authors' SavedModels variable by variable, and writing the original layout).
"""

from emzoo.models.film.loss import paper_loss
from emzoo.models.film.model import FILM, FilmFeatureExtractor, FilmFlowPredictor, FilmFusion

ARCHITECTURES = (FILM,)

__all__ = ["ARCHITECTURES", "FILM", "FilmFeatureExtractor", "FilmFlowPredictor", "FilmFusion",
           "paper_loss"]
