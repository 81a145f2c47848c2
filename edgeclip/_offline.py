"""Offline by default: keep ONNX Runtime from phoning home.

onnxruntime (measured with 1.32 on Linux) looks up mobile.events.data.microsoft.com every 6-8 s once an
inference session exists. `onnxruntime.disable_telemetry_events()` does not stop it; the environment
variable ORT_DISABLE_TELEMETRY does, but only when it is set before onnxruntime is imported. edgeclip's
package imports this module first, so every path through edgeclip (the CLI, jobs, the server, Ray actors,
the converters) sets it in time, unless the user has set it already.
"""

from __future__ import annotations

import os
import sys
import warnings

TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"


def keep_onnxruntime_offline() -> None:
    if TELEMETRY_VARIABLE in os.environ:
        return  # the user's choice, either way
    os.environ[TELEMETRY_VARIABLE] = "1"  # inherited by subprocesses and Ray workers too
    if "onnxruntime" in sys.modules:
        warnings.warn("onnxruntime was imported before edgeclip, so its telemetry stays on for this process (it looks "
                      f"up Microsoft's telemetry host every few seconds); set {TELEMETRY_VARIABLE}=1 in the environment "
                      "or import edgeclip first", RuntimeWarning, stacklevel=3)


keep_onnxruntime_offline()
