#!/usr/bin/env python3
"""Peak GPU memory of a command, measured from outside it: the same way for kiln and for
PyTorch, not by either framework's own counter. Runs the command as a child and samples
NVML (libnvidia-ml.so.1, which ships with the driver; loaded through ctypes) every
--interval-ms: the memory NVML charges to the child's process tree
(nvmlDeviceGetComputeRunningProcesses_v3, else _v2, matched by pid), and the device's used
memory (nvmlDeviceGetMemoryInfo) as a cross-check.

    python3 benchmarks/gpu_peak_memory.py [--gpu 0] [--interval-ms 5] [--json OUT] -- COMMAND ARGS...

Prints one line and writes JSON (--json): the child's peak in MiB, how it was found
(peak_source), the device's used memory before the child started (the baseline) and its
peak, the sample count and the achieved interval, the child's exit status and wall time.

peak_source:
  child_pid           the child's process tree appeared in NVML's list (the normal case)
  all_processes       no listed pid was the child's (a PID namespace hides host pids, as in
                      some containers): the sum over all listed processes, when none was
                      listed before the child started
  device_used_delta   neither: the device's used memory minus the baseline (includes any
                      other process that allocated meanwhile; the JSON keeps all three)

What NVML charges a process is its device allocations, the CUDA context included (a few
hundred MiB), as reserved by its allocator (PyTorch's caching allocator, kiln's pool):
what another job on the same GPU could not have. A spike shorter than the interval can be
missed; both frameworks keep freed blocks cached, so their peaks persist.

Exit status: the child's; 77 (after printing "skipped: no NVML") where NVML cannot be
loaded or initialised, unless --allow-missing, which then runs the command unmeasured.
"""
import argparse
import ctypes
import json
import os
import struct
import subprocess
import sys
import time

NVML_SUCCESS = 0
NVML_ERROR_INSUFFICIENT_SIZE = 7
NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE for usedGpuMemory
MIB = 1 << 20


class Memory(ctypes.Structure):  # nvmlMemory_t
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


# nvmlProcessInfo_t starts with pid (uint32, then 4 bytes of padding) and usedGpuMemory
# (uint64) in every layout, but its size is 24 bytes (v2: + gpuInstanceId, computeInstanceId)
# or 32 (R535's v3: + usedGpuCcProtectedMemory), and which one a driver's _v3 fills is not
# told by the symbol's name: the stride is read off the bytes the driver wrote (below).
STRIDES = (24, 32)


class Nvml:
    """The few NVML calls needed, or an OSError/RuntimeError saying why not."""

    def __init__(self, index):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        rc = self.lib.nvmlInit_v2()
        if rc != NVML_SUCCESS:
            raise RuntimeError(f"nvmlInit_v2 returned {rc}")
        self.handle = ctypes.c_void_p()
        rc = self.lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(self.handle))
        if rc != NVML_SUCCESS:
            raise RuntimeError(f"nvmlDeviceGetHandleByIndex_v2({index}) returned {rc}")
        self.procs_fn, self.procs_name = None, None
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"):
            if hasattr(self.lib, name):
                self.procs_fn, self.procs_name = getattr(self.lib, name), name
                break
        if self.procs_fn is None:
            raise RuntimeError("this driver's NVML has neither nvmlDeviceGetComputeRunningProcesses_v3 nor _v2")
        self.capacity = 64
        self.stride = None  # bytes per entry, once seen

    def name(self):
        buf = ctypes.create_string_buffer(96)
        if self.lib.nvmlDeviceGetName(self.handle, buf, ctypes.c_uint(96)) != NVML_SUCCESS:
            return "?"
        return buf.value.decode(errors="replace")

    def used(self):
        m = Memory()
        rc = self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m))
        return m.used if rc == NVML_SUCCESS else None

    def processes(self):
        """{pid: bytes} of the compute processes on the device (bytes None: not available)."""
        while True:
            size = self.capacity * max(STRIDES)
            buf = ctypes.create_string_buffer(b"\xaa" * size, size)  # a sentinel, to see what is written
            count = ctypes.c_uint(self.capacity)
            rc = self.procs_fn(self.handle, ctypes.byref(count), buf)
            if rc == NVML_ERROR_INSUFFICIENT_SIZE:
                self.capacity = 2 * max(count.value, self.capacity)
                continue
            if rc != NVML_SUCCESS or count.value == 0:
                return {}
            raw = buf.raw
            written = len(raw.rstrip(b"\xaa"))  # the last entry ends in a field the driver wrote
            self.stride = next((s for s in STRIDES if count.value * s >= written), max(STRIDES))
            out = {}
            for i in range(count.value):
                pid, used = struct.unpack_from("<I4xQ", raw, i * self.stride)
                out[pid] = None if used == NOT_AVAILABLE else used
            return out


def descendants(pid):
    """pid and every process below it (DataLoader workers, a shell's children), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def gpu_index(arg):
    if arg is not None:
        return arg
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def measure(nvml, command, interval_s):
    base_used = nvml.used()
    base_procs = nvml.processes()
    t0 = time.time()
    child = subprocess.Popen(command)
    tree, tree_at = {child.pid}, 0.0
    peak = {"child": 0, "all": 0, "used": base_used or 0}
    samples, matched = 0, False
    while True:
        done = child.poll() is not None
        now = time.time()
        if now - tree_at > 0.25:  # refresh the process tree 4x a second (a /proc walk)
            tree, tree_at = descendants(child.pid) if not done else tree, now
        procs = nvml.processes()
        used = nvml.used()
        mine = [b for p, b in procs.items() if p in tree and b is not None]
        if mine:
            matched = True
            peak["child"] = max(peak["child"], sum(mine))
        peak["all"] = max(peak["all"], sum(b for b in procs.values() if b is not None))
        if used is not None:
            peak["used"] = max(peak["used"], used)
        samples += 1
        if done:
            break
        time.sleep(max(0.0, interval_s - (time.time() - now)))
    wall = time.time() - t0
    if matched:
        source, value = "child_pid", peak["child"]
    elif not base_procs and peak["all"] > 0:
        source, value = "all_processes", peak["all"]
    else:
        source, value = "device_used_delta", peak["used"] - (base_used or 0)
    return {
        "rc": child.returncode, "wall_s": wall, "samples": samples,
        "interval_ms_mean": 1e3 * wall / max(samples, 1),
        "peak_mib": value / MIB, "peak_source": source,
        "child_peak_mib": peak["child"] / MIB if matched else None,
        "all_processes_peak_mib": peak["all"] / MIB,
        "device_used_peak_mib": peak["used"] / MIB,
        "device_baseline_mib": (base_used or 0) / MIB,
        "processes_before": len(base_procs),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 usage="%(prog)s [options] -- COMMAND [ARGS...]")
    ap.add_argument("--gpu", type=int, help="NVML device index (default: CUDA_VISIBLE_DEVICES' first, else 0)")
    ap.add_argument("--interval-ms", type=float, default=5.0)
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--allow-missing", action="store_true", help="without NVML, run the command unmeasured")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given (put it after --)")
    report = {"command": command}
    try:
        nvml = Nvml(gpu_index(args.gpu))
    except (OSError, RuntimeError, AttributeError) as e:
        print(f"gpu_peak_memory: skipped: no NVML ({e})", flush=True)
        if not args.allow_missing:
            sys.exit(77)
        report.update(skipped=f"no NVML: {e}", rc=subprocess.call(command))
        nvml = None
    if nvml is not None:
        report.update(gpu=nvml.name(), gpu_index=gpu_index(args.gpu), nvml_function=nvml.procs_name,
                      interval_ms_target=args.interval_ms)
        report.update(measure(nvml, command, args.interval_ms / 1e3))
        report["process_entry_bytes"] = nvml.stride
        nvml.lib.nvmlShutdown()
        print(f"gpu_peak_memory: peak {report['peak_mib']:.0f} MiB ({report['peak_source']}); device used "
              f"{report['device_baseline_mib']:.0f} MiB before, {report['device_used_peak_mib']:.0f} MiB at most; "
              f"{report['samples']} samples over {report['wall_s']:.1f} s (every {report['interval_ms_mean']:.1f} ms); "
              f"child exit {report['rc']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    sys.exit(report["rc"] if report["rc"] >= 0 else 128 - report["rc"])


if __name__ == "__main__":
    main()
