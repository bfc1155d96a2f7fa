"""keep_freed_memory: XLA's per-execution CPU buffers are reused instead of mapped and faulted in anew."""
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only"),
              pytest.mark.slow]  # subprocesses that allocate 512 MiB each

# An execution whose temporaries (two 256 MiB buffers the barriers keep apart) come from the allocator.
SCRIPT = """
import resource, sys, time
from electra_jax.host_memory import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
import jax, jax.numpy as jnp

def f(x):
    y = jax.lax.optimization_barrier(x + 1.0)
    z = jax.lax.optimization_barrier(jnp.sin(y))
    return (z * y).sum() + (jnp.cos(y) * x).sum()
step = jax.jit(f)
x = jnp.ones(64 * 2 ** 20)
faults, rss = [], []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x).block_until_ready()
    time.sleep(0.5)  # the runtime frees an execution's temporaries just after its result is ready
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096)
print(min(faults[-4:]), max(faults[-4:]), rss[-4], rss[-1])
"""


def run(mode: str) -> list[int]:
    """Over the last 4 of 12 executions: fewest and most page faults, resident bytes before and after."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}).stdout
    return [int(v) for v in out.split()]


def test_buffers_are_reused_without_page_faults_and_memory_stays_flat():
    default_fewest, _, _, _ = run("default")
    _, tuned_most, rss_before, rss_after = run("tuned")
    page = 4096
    assert default_fewest > 2 ** 28 // page // 2  # glibc's own behaviour: each 256 MiB buffer faulted in anew
    assert tuned_most < 1000  # once warm, no buffer is faulted in again
    assert rss_after <= rss_before * 1.02  # and the heap has stopped growing
