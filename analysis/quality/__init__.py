"""Sample quality: how readable generated images are and whether they copy training data.

Scores from a shipped MNIST classifier (:mod:`.scores`, :mod:`.classifier`) and nearest-neighbour
distances to the training set (:mod:`.memorization`); for any other data, a classifier
two-sample test (:mod:`.two_sample`), k-NN precision and recall (:mod:`.precision_recall`) and
the data's own classifier (:mod:`.data_classifier`), put together in :mod:`.data_quality`.

Every public name of the modules here is importable from the package itself; each is
imported on first use, so the package adds no import edge between its modules.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports

_EXPORTS = {
    "ClassifierConfig": "pyrovae.analysis.quality.classifier",
    "MNISTClassifier": "pyrovae.analysis.quality.classifier",
    "SHIPPED_PATH": "pyrovae.analysis.quality.classifier",
    "SHIPPED_SHA256": "pyrovae.analysis.quality.classifier",
    "classifier_path": "pyrovae.analysis.quality.classifier",
    "estimate_training_seconds": "pyrovae.analysis.quality.classifier",
    "evaluate_accuracy": "pyrovae.analysis.quality.classifier",
    "file_sha256": "pyrovae.analysis.quality.classifier",
    "load_classifier": "pyrovae.analysis.quality.classifier",
    "load_shipped_classifier": "pyrovae.analysis.quality.classifier",
    "read_classifier": "pyrovae.analysis.quality.classifier",
    "save_classifier": "pyrovae.analysis.quality.classifier",
    "train_classifier": "pyrovae.analysis.quality.classifier",
    "weights_sha256": "pyrovae.analysis.quality.classifier",
    "DataClassifier": "pyrovae.analysis.quality.data_classifier",
    "DataClassifierConfig": "pyrovae.analysis.quality.data_classifier",
    "data_classifier_path": "pyrovae.analysis.quality.data_classifier",
    "estimate_training": "pyrovae.analysis.quality.data_classifier",
    "load_data_classifier": "pyrovae.analysis.quality.data_classifier",
    "splits_digest": "pyrovae.analysis.quality.data_classifier",
    "train_data_classifier": "pyrovae.analysis.quality.data_classifier",
    "MNIST_DATASETS": "pyrovae.analysis.quality.data_quality",
    "DataQuality": "pyrovae.analysis.quality.data_quality",
    "data_quality": "pyrovae.analysis.quality.data_quality",
    "mnist_quality": "pyrovae.analysis.quality.data_quality",
    "two_sample_scores": "pyrovae.analysis.quality.data_quality",
    "sample_range": "pyrovae.analysis.quality.data_quality",
    "score_samples": "pyrovae.analysis.quality.data_quality",
    "score_sources": "pyrovae.analysis.quality.data_quality",
    "uses_mnist_classifier": "pyrovae.analysis.quality.data_quality",
    "format_label_error": "pyrovae.analysis.quality.label_classifier",
    "label_error": "pyrovae.analysis.quality.label_classifier",
    "Memorization": "pyrovae.analysis.quality.memorization",
    "nearest_distances": "pyrovae.analysis.quality.memorization",
    "AMBIGUOUS_THRESHOLD": "pyrovae.analysis.quality.scores",
    "FeatureStats": "pyrovae.analysis.quality.scores",
    "MAX_ENTROPY": "pyrovae.analysis.quality.scores",
    "SampleQuality": "pyrovae.analysis.quality.scores",
    "class_histogram": "pyrovae.analysis.quality.scores",
    "coverage_kl": "pyrovae.analysis.quality.scores",
    "feature_stats": "pyrovae.analysis.quality.scores",
    "frechet_distance": "pyrovae.analysis.quality.scores",
    "gaussian_frechet_distance": "pyrovae.analysis.quality.scores",
    "predictive_entropy": "pyrovae.analysis.quality.scores",
    "sample_quality": "pyrovae.analysis.quality.scores",
    "wilson_interval": "pyrovae.analysis.quality.scores",
    "TwoSampleTest": "pyrovae.analysis.quality.two_sample",
    "binomial_tail": "pyrovae.analysis.quality.two_sample",
    "classifier_two_sample_test": "pyrovae.analysis.quality.two_sample",
    "clopper_pearson_interval": "pyrovae.analysis.quality.two_sample",
    "MAX_RAW_DIM": "pyrovae.analysis.quality.precision_recall",
    "PROJECTED_DIM": "pyrovae.analysis.quality.precision_recall",
    "FeatureSpace": "pyrovae.analysis.quality.precision_recall",
    "PrecisionRecall": "pyrovae.analysis.quality.precision_recall",
    "knn_radii": "pyrovae.analysis.quality.precision_recall",
    "manifold_fraction": "pyrovae.analysis.quality.precision_recall",
    "precision_recall": "pyrovae.analysis.quality.precision_recall",
    "standardized_space": "pyrovae.analysis.quality.precision_recall",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
