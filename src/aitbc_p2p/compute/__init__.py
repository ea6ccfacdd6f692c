"""L3 compute adapter: capability detection, workloads, executor. torch is optional."""

from aitbc_p2p.compute.capability import ACCEL_MODES, DeviceInfo, detect
from aitbc_p2p.compute.executor import Execution, Executor
from aitbc_p2p.compute.workloads import WORKLOADS, Workload, available_workloads, get_workload, torch_available

__all__ = [
    "ACCEL_MODES",
    "WORKLOADS",
    "DeviceInfo",
    "Execution",
    "Executor",
    "Workload",
    "available_workloads",
    "detect",
    "get_workload",
    "torch_available",
]
