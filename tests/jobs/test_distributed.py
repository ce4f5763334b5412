"""Several machines: the SLURM environment, and a machine that never joins. (2 machines x 1 process == 1 process x 2
micro-batches, bit for bit, with the evaluation gathered on rank 0: test_accumulation_equivalence.py.)"""

from detgn.jobs.launch import find_free_port

from tests.engine.util import QUICK, run_train_net


def test_slurm_hostlist_and_environment():
    from detgn.jobs.slurm import expand_hostlist, slurm_environment

    assert expand_hostlist("gpu[003-004,010],login1") == ["gpu003", "gpu004", "gpu010", "login1"]
    assert expand_hostlist("rack[1-2]-n[08-09]") == ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]
    srun = {
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NODELIST": "gpu[003-006]",
        "SLURM_JOB_NODELIST": "gpu[003-006]",
        "SLURM_JOB_ID": "4242424",
    }
    assert slurm_environment(srun) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu003",
        "MASTER_PORT": str(20000 + 4242424 % 20000),
    }
    assert (
        slurm_environment(dict(srun, MASTER_PORT="29500", MASTER_ADDR="head"))["MASTER_ADDR"] == "head"
    )  # the user's win
    assert slurm_environment(dict(srun, RANK="0", WORLD_SIZE="2")) is None  # torchrun's variables win
    batch = {k: v for k, v in srun.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert slurm_environment(batch) is None  # the sbatch script itself (not an srun step): a plain launch


def test_a_machine_that_never_joins_is_named_within_the_timeout(tmp_path):
    """(srun tasks, torchrun on 2 nodes and preempted/restarted jobs: test_restarts.py)"""
    r = run_train_net(
        [
            "--config-file",
            QUICK,
            "--num-machines",
            "2",
            "--machine-rank",
            "0",
            "--dist-url",
            f"tcp://127.0.0.1:{find_free_port()}",
            "--dist-timeout",
            "2",
            "OUTPUT_DIR",
            str(tmp_path / "alone"),
        ],
        timeout=300,
    )
    assert (
        r.returncode == 2 and "could not join the process group at tcp://127.0.0.1:" in r.stderr and "1/2" in r.stderr
    ), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
