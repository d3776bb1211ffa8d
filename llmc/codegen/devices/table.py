"""Data-sheet specs of the devices llmc targets or plans for.

Figures are dense (no 2:4 sparsity) peaks from the vendors' data sheets; each entry names its
source. ``peak`` holds matrix-unit throughput per compute dtype (tensor cores, the HTP's matrix
engine, DSP arrays); ``vector`` is what everything else runs at (CUDA-core float32). Where a
vendor publishes no figure the entry says how it was estimated. A dtype a device cannot compute
in is absent from ``peak``.
"""

from __future__ import annotations

from llmc.codegen.devices.spec import Device

T, G, MB, GB = 1e12, 1e9, 2**20, 2**30

DEVICES: dict[str, Device] = {d.name: d for d in [
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): FP32 67 TF, FP16/BF16 tensor 1979 TF with
    # sparsity (989.4 dense), FP8/INT8 3958 with sparsity; HBM3 3.35 TB/s; 50 MB L2.
    Device("h100", "NVIDIA H100 SXM5 80GB (sm_90)", "gpu",
           peak={"f32": 66.9 * T, "f16": 989.4 * T, "bf16": 989.4 * T, "fp8": 1978.9 * T, "int8": 1978.9 * T},
           vector=66.9 * T, bandwidth=3.35 * T, onchip=50 * MB, memory=80 * GB, launch=4e-6,
           source="NVIDIA H100 datasheet (SXM5), dense figures"),
    # NVIDIA H200 datasheet: the H100 SXM's compute with 141 GB of HBM3e at 4.8 TB/s.
    Device("h200", "NVIDIA H200 SXM 141GB (sm_90)", "gpu",
           peak={"f32": 66.9 * T, "f16": 989.4 * T, "bf16": 989.4 * T, "fp8": 1978.9 * T, "int8": 1978.9 * T},
           vector=66.9 * T, bandwidth=4.8 * T, onchip=50 * MB, memory=141 * GB, launch=4e-6,
           source="NVIDIA H200 datasheet, dense figures"),
    # NVIDIA A100 datasheet (80GB SXM): FP32 19.5 TF, FP16/BF16 tensor 312 TF, INT8 624 TOPS
    # (dense); HBM2e 2039 GB/s; 40 MB L2. No FP8.
    Device("a100", "NVIDIA A100 SXM4 80GB (sm_80)", "gpu",
           peak={"f32": 19.5 * T, "f16": 312 * T, "bf16": 312 * T, "int8": 624 * T},
           vector=19.5 * T, bandwidth=2039 * G, onchip=40 * MB, memory=80 * GB, launch=4e-6,
           source="NVIDIA A100 datasheet (80GB SXM), dense figures"),
    # NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090): FP32 82.6 TF; FP16 tensor
    # with FP32 accumulate 165.2 TF, FP8 with FP32 accumulate 330.3 TF, INT8 660.6 TOPS (dense);
    # GDDR6X 1008 GB/s; 72 MB L2.
    Device("rtx4090", "NVIDIA GeForce RTX 4090 24GB (sm_89)", "gpu",
           peak={"f32": 82.6 * T, "f16": 165.2 * T, "bf16": 165.2 * T, "fp8": 330.3 * T, "int8": 660.6 * T},
           vector=82.6 * T, bandwidth=1008 * G, onchip=72 * MB, memory=24 * GB, launch=4e-6,
           source="NVIDIA Ada Lovelace whitepaper, RTX 4090, dense, FP32 accumulate"),
    # NVIDIA L4 datasheet: FP32 30.3 TF; FP16/BF16 tensor 242 TF and FP8/INT8 485 with sparsity
    # (121 / 242.5 dense); GDDR6 300 GB/s; 48 MB L2.
    Device("l4", "NVIDIA L4 24GB (sm_89)", "gpu",
           peak={"f32": 30.3 * T, "f16": 121 * T, "bf16": 121 * T, "fp8": 242.5 * T, "int8": 242.5 * T},
           vector=30.3 * T, bandwidth=300 * G, onchip=48 * MB, memory=24 * GB, launch=4e-6,
           source="NVIDIA L4 datasheet, dense figures"),
    # Qualcomm publishes no TOPS for the Snapdragon 8 Gen 3; 45 TOPS INT8 is the figure third
    # parties quote, FP16 taken at half of it. LPDDR5X-4800 (9600 MT/s) x 64 bit = 76.8 GB/s
    # (Qualcomm product brief). VTCM (the HTP's on-chip memory) 8 MiB and the per-op overhead
    # are estimates.
    Device("sd8gen3", "Qualcomm Snapdragon 8 Gen 3, Hexagon NPU (HTP)", "npu",
           peak={"f16": 22.5 * T, "int8": 45 * T},
           vector=0.5 * T, bandwidth=76.8 * G, onchip=8 * MB, memory=16 * GB, launch=20e-6,
           source="Qualcomm product brief (memory); third-party 45 TOPS INT8; FP16, VTCM, vector, launch estimated"),
    # AMD/Xilinx Alveo U280 data sheet (DS963): INT8 24.5 TOPS peak, HBM2 8 GB at 460 GB/s,
    # 41 MB on-chip (BRAM + UltraRAM). Float32: 9024 DSPs / 5 per FMA x 2 flops x 300 MHz
    # (estimate). Launch: one XRT kernel start (estimate).
    Device("u280", "AMD Alveo U280 (HBM2)", "fpga",
           peak={"f32": 1.08 * T, "int8": 24.5 * T},
           vector=1.08 * T, bandwidth=460 * G, onchip=41 * MB, memory=8 * GB, launch=50e-6,
           source="Alveo U280 data sheet DS963; float32 and launch estimated"),
    # Alveo U250 data sheet (DS962): INT8 33.3 TOPS peak, DDR4 64 GB at 77 GB/s, 54 MB on-chip.
    # Float32: 12288 DSPs / 5 x 2 x 300 MHz (estimate).
    Device("u250", "AMD Alveo U250 (DDR4)", "fpga",
           peak={"f32": 1.47 * T, "int8": 33.3 * T},
           vector=1.47 * T, bandwidth=77 * G, onchip=54 * MB, memory=64 * GB, launch=50e-6,
           source="Alveo U250 data sheet DS962; float32 and launch estimated"),
    # ZCU102 (Zynq UltraScale+ ZU9EG, UG1182; DS891): 2520 DSPs, 32.1 Mb BRAM, PS DDR4 64-bit
    # at 2400 MT/s = 19.2 GB/s. INT8: 2520 DSPs x 2 MACs (packed) x 2 x 300 MHz; float32: / 5
    # DSPs per FMA (estimates).
    Device("zcu102", "AMD Zynq UltraScale+ ZCU102 (ZU9EG)", "fpga",
           peak={"f32": 0.30 * T, "int8": 3.0 * T},
           vector=0.30 * T, bandwidth=19.2 * G, onchip=4 * MB, memory=4 * GB, launch=20e-6,
           source="ZCU102 UG1182 / Zynq UltraScale+ DS891; compute and launch estimated from DSP counts"),
]}

# cuda --arch -> the device a report assumes (sm_86 and others have no entry).
ARCH_DEVICES = {"sm_80": "a100", "sm_89": "rtx4090", "sm_90": "h100", "sm_90a": "h100"}
