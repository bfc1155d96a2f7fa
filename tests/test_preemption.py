"""preemption.py: a first Ctrl-C asks for a save at the step's end; a second one exits at once with 130."""
import signal
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, signal, time
    from electra_jax.preemption import PreemptionWatch
    with PreemptionWatch() as watch:
        os.kill(os.getpid(), signal.SIGINT)
        assert watch.signalled.is_set() and watch.name == "SIGINT"
        print("saving", flush=True)
        os.kill(os.getpid(), signal.SIGINT)  # the user will not wait
        time.sleep(30)
    print("not reached")
""")


def test_a_second_ctrl_c_exits_at_once():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert result.stdout.strip() == "saving"
    assert "interrupted again: exiting now without saving" in result.stderr and "Traceback" not in result.stderr


def test_a_repeated_sigterm_does_not_stop_the_save():
    script = SCRIPT.replace("signal.SIGINT)  # the user", "signal.SIGTERM)  # a scheduler's repeat").replace(
        'os.kill(os.getpid(), signal.SIGINT)\n', 'os.kill(os.getpid(), signal.SIGTERM)\n', 1).replace(
        '"SIGINT"', '"SIGTERM"').replace("time.sleep(30)", "time.sleep(0.5)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["saving", "not", "reached"]
