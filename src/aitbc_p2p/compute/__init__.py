"""L3 compute adapter: capability detection, workloads, and an executor of worker processes.

torch, transformers and the embedding model are optional extras, imported lazily and
only inside worker processes; without them the package imports, reports CPU only and
runs ``echo``.
"""

from aitbc_p2p.compute.capability import ACCEL_MODES, PEAK_TFLOPS, DeviceInfo, detect, peak_tflops
from aitbc_p2p.compute.context import RunContext, model_digest, torch_available
from aitbc_p2p.compute.executor import Execution, Executor, open_executor
from aitbc_p2p.compute.workloads import WORKLOADS, Workload, available_workloads, check_params, get_workload

__all__ = [
    "ACCEL_MODES",
    "PEAK_TFLOPS",
    "WORKLOADS",
    "DeviceInfo",
    "Execution",
    "Executor",
    "RunContext",
    "Workload",
    "available_workloads",
    "check_params",
    "detect",
    "get_workload",
    "model_digest",
    "open_executor",
    "peak_tflops",
    "torch_available",
]
