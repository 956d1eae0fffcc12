"""The GPU catalogue: dense peaks per class of card, found from the name torch reports, and
scaled to the share of a card actually lent (a MIG or ZeroGPU slice)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType


@dataclass(frozen=True)
class GpuClass:
    name: str
    half_tflops: float  # dense FP16/BF16 tensor-core peak (no sparsity)
    tf32_tflops: float  # dense TF32 peak: PyTorch lets cuDNN convolutions (the VAE) use it
    fp32_tflops: float  # plain FP32: PyTorch keeps TF32 off for matmuls by default
    memory_gb: float
    source: str


# Dense peaks (vendor sheets often quote twice these, "with sparsity").
GPU_CLASSES: Mapping[str, GpuClass] = MappingProxyType(
    {
        gpu.name: gpu
        for gpu in (
            GpuClass("H100 SXM", 989.4, 494.7, 66.9, 80, "NVIDIA H100 datasheet (SXM5)"),
            GpuClass(
                "H100 PCIe", 756.5, 378.0, 51.2, 80, "NVIDIA H100 datasheet (PCIe); also H100 NVL"
            ),
            GpuClass("H200", 989.4, 494.7, 66.9, 141, "NVIDIA H200 datasheet (SXM)"),
            GpuClass("A100 80GB", 312.0, 156.0, 19.5, 80, "NVIDIA A100 datasheet"),
            GpuClass("A100 40GB", 312.0, 156.0, 19.5, 40, "NVIDIA A100 datasheet"),
            GpuClass("L40S", 362.05, 183.0, 91.6, 48, "NVIDIA L40S datasheet"),
            GpuClass("L40", 181.05, 90.5, 90.5, 48, "NVIDIA L40 datasheet"),
            GpuClass("RTX A6000", 154.8, 77.4, 38.7, 48, "NVIDIA RTX A6000 datasheet"),
            GpuClass("RTX 4090", 165.2, 82.6, 82.6, 24, "NVIDIA Ada whitepaper, FP32 accumulate"),
            GpuClass("A10", 125.0, 62.5, 31.2, 24, "NVIDIA A10 datasheet"),
            GpuClass(
                "A10G", 70.0, 35.0, 35.0, 24, "approximate: AWS publishes none; third-party specs"
            ),
            GpuClass("L4", 121.0, 60.0, 30.3, 24, "NVIDIA L4 datasheet"),
            GpuClass("T4", 65.0, 8.1, 8.1, 16, "NVIDIA T4 datasheet: FP16 only, no BF16 or TF32"),
        )
    }
)
# For a GPU the table does not know: T4-class figures, so estimates err on the slow side.
UNKNOWN_GPU = GpuClass("unknown GPU", 65.0, 8.1, 8.1, 16, "conservative stand-in (T4 figures)")

# Searched in order on the upper-cased torch.cuda.get_device_name(); specific names first.
_GPU_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H200", "H200"),
    (r"H100.*(PCIE|NVL)", "H100 PCIe"),
    (r"H100", "H100 SXM"),
    (r"A100.*80\s?GB", "A100 80GB"),
    (r"A100", "A100 40GB"),
    (r"L40S", "L40S"),
    (r"\bL40\b", "L40"),
    (r"RTX A6000", "RTX A6000"),
    (r"RTX 4090", "RTX 4090"),
    (r"\bA10G\b", "A10G"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"\bT4\b", "T4"),
)


# Streaming multiprocessors of each whole card (vendor sheets). A MIG slice or a ZeroGPU
# slice reports the same name with fewer of them (spaces 0.51.3 zero/configs.json: "NVIDIA
# H200" with 60 of 132), so its speed is the class's scaled by the share it got.
FULL_CARD_MULTIPROCESSORS: Mapping[str, int] = MappingProxyType(
    {
        "H100 SXM": 132,
        "H100 PCIe": 114,
        "H200": 132,
        "A100 80GB": 108,
        "A100 40GB": 108,
        "L40S": 142,
        "L40": 142,
        "RTX A6000": 84,
        "RTX 4090": 128,
        "A10": 72,
        "A10G": 80,
        "L4": 58,
        "T4": 40,
    }
)


def gpu_class_for(device_name: str, multiprocessors: int | None = None) -> GpuClass:
    """Map e.g. "NVIDIA H100 80GB HBM3" to its class; unknown names get UNKNOWN_GPU. With
    ``multiprocessors`` (torch.cuda.get_device_properties().multi_processor_count) below the
    whole card's, the peaks are scaled down to the slice actually got."""
    name = device_name.upper()
    for pattern, gpu in _GPU_NAME_PATTERNS:
        if re.search(pattern, name):
            full = FULL_CARD_MULTIPROCESSORS[gpu]
            if multiprocessors and 0 < multiprocessors < full:
                return scaled_gpu_class(GPU_CLASSES[gpu], multiprocessors / full)
            return GPU_CLASSES[gpu]
    return UNKNOWN_GPU


def scaled_gpu_class(gpu: GpuClass, share: float) -> GpuClass:
    """The same class with ``share`` of its compute (a MIG or ZeroGPU slice)."""
    return replace(
        gpu,
        half_tflops=gpu.half_tflops * share,
        tf32_tflops=gpu.tf32_tflops * share,
        fp32_tflops=gpu.fp32_tflops * share,
    )


# H100/H200 MIG slices: "3g" is 3 of the 7 compute slices (ZeroGPU lends such slices).
_MIG_SLICE = re.compile(r"MIG\s+(\d)g\.", re.IGNORECASE)
MIG_SLICES = 7


def lent_gpu_class(device_name: str, multiprocessors: int | None = None) -> GpuClass:
    """The class of the GPU, scaled to the share of it this process got: from its
    multiprocessor count where known (ZeroGPU names the whole card), else from a MIG profile
    in its name."""
    if multiprocessors:
        return gpu_class_for(device_name, multiprocessors)
    gpu = gpu_class_for(device_name)
    match = _MIG_SLICE.search(device_name.upper())
    if match:
        gpu = scaled_gpu_class(gpu, int(match.group(1)) / MIG_SLICES)
    return gpu
