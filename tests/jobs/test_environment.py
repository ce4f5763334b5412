"""jobs/environment.py: where a task joins its job (one formula for srun tasks and submitit's), and whether a start
is a restart that must continue its run."""

from detgn.jobs.environment import implied_auto_resume, job_port, torchrun_env
from detgn.jobs.slurm import slurm_environment


def test_every_task_of_a_job_derives_the_same_address_and_port():
    assert job_port("123456") == 20000 + 123456 % 20000 and job_port("123456_7") == job_port("1234567")
    assert 20000 <= job_port("") < 40000
    env = torchrun_env(rank=3, world_size=8, local_rank=1, local_world_size=4, hosts=["gpu003", "gpu004"], job_id=77)
    assert env == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu003",
        "MASTER_PORT": str(20077),
        "LOCAL_WORLD_SIZE": "4",
    }
    mine = torchrun_env(rank=0, world_size=2, local_rank=0, hosts=["a"], job_id=5, master_addr="b", master_port=29500)
    assert mine["MASTER_ADDR"] == "b" and mine["MASTER_PORT"] == "29500" and "LOCAL_WORLD_SIZE" not in mine
    # an srun task gets the same port from the same job id as submitit's TrainingJob
    srun = slurm_environment(
        {
            "SLURM_PROCID": "3",
            "SLURM_LOCALID": "1",
            "SLURM_STEP_NUM_TASKS": "8",
            "SLURM_STEP_NODELIST": "gpu[003-004]",
            "SLURM_JOB_ID": "77",
        }
    )
    assert {k: srun[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")} == {
        k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }


def test_auto_resume_is_implied_by_a_slurm_requeue_or_torchrun_restarts():
    assert implied_auto_resume({}) is None
    assert implied_auto_resume({"SLURM_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0"}) is None
    assert "SLURM_RESTART_COUNT=2" in implied_auto_resume({"SLURM_RESTART_COUNT": "2"})
    # a node restarted because another node's worker failed gets TORCHELASTIC_RESTART_COUNT=0: the maximum decides
    assert "--max-restarts 3" in implied_auto_resume(
        {"TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_RESTART_COUNT": "0"}
    )
    assert implied_auto_resume({"SLURM_RESTART_COUNT": "x"}) is None
