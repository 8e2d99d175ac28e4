"""Offline side: synthetic plant, data loading, autoencoder training, threshold calibration, evaluation."""
