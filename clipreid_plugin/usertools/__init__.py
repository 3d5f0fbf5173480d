"""User tools: embed your own images and search a gallery, draw rank strips and training
curves, export the embedding model to ONNX. The command-line front ends live in ``tools/``
(``extract.py``, ``search.py``, ``visualize_ranks.py``, ``plot_curves.py``, ``export_onnx.py``);
see docs/TOOLS.md.
"""

from .export import EmbeddingModel, check_onnx, export_onnx
from .extract import FeatureExtractor, list_images, load_config, load_features, save_features, search
from .index import INDEX_KINDS, GalleryIndex
from .rank_strips import StripLayout, draw_rank_strips, load_ranking, query_scores, save_png, visualize_ranking
from .training_curves import curves_figure, plot_training_curves, read_metrics

__all__ = ["EmbeddingModel", "check_onnx", "export_onnx", "FeatureExtractor", "list_images", "load_config",
           "load_features", "save_features", "search", "INDEX_KINDS", "GalleryIndex", "StripLayout",
           "draw_rank_strips", "load_ranking", "curves_figure", "plot_training_curves", "query_scores", "read_metrics", "save_png", "visualize_ranking"]
