"""The model being served: a version loaded (`loader`), held in memory (`loaded`), swapped by reloads
(`registry`)."""

from factory_anomaly.app.model.loaded import EXPLAINER_OUTPUTS, OUTPUTS, Assessment, LoadedModel
from factory_anomaly.app.model.loader import CPU, CUDA, ModelLoadError, load_model, select_providers

__all__ = [
    "CPU",
    "CUDA",
    "EXPLAINER_OUTPUTS",
    "OUTPUTS",
    "Assessment",
    "LoadedModel",
    "ModelLoadError",
    "load_model",
    "select_providers",
]
