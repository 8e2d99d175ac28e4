"""Factory anomaly detection, one namespace for the project's packages (so none collides with another
distribution's): the data flows plant -> training -> artifact -> app.

  plant     the synthetic plant (faults with exact truth) and the live simulator
  training  offline: data, scaling, models, one fit loop, thresholds, baselines, export, publish, card,
  evaluate
  artifact  the contract both sides import: version layout, manifest schema, verification, store
  app       serving: FastAPI + onnxruntime over the model store; never imports torch or `training`

The Python client is its own distribution, `factory_anomaly_client` (client/ in the repository).
"""
