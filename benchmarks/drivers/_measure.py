"""Peak memory of this process (GPU if used, else resident set size), in MiB."""

import resource


def peak_memory_mib() -> dict:
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out
