"""Serving side: FastAPI + onnxruntime over the model store. Never imports torch or `training`.

onnxruntime (1.32 on Linux) sends usage telemetry to Microsoft (it looks up mobile.events.data.microsoft.com)
and keeps a device id and an event database under `$HOME/.cache/Microsoft`, unless ORT_DISABLE_TELEMETRY
is set before onnxruntime is first imported. A plant's scoring service must not phone home, and on a
read-only root filesystem the failed write prints a non-JSON warning; so the first code of any `app` import
sets it (a value already in the environment is left as it is). tests/app/test_security.py checks both.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
