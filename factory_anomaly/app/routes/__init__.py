"""The HTTP layer: thin routes that translate bodies and call the inference core.

scoring.py  POST /v1/score, POST /v1/score/batch
model.py    GET /v1/model
health.py   GET /healthz, GET /readyz
admin.py    POST /v1/admin/reload
deps.py     typed dependencies, authentication, body reading
errors.py   the error handlers (one response shape)
"""
