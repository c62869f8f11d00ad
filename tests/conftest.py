import os
from pathlib import Path

import pytest
import torch

from helpers import ROOT, make_layouts

# The suite uses the pinned testbed weights (None), or trained ones when FLATBENCH_ZOO names a directory.
ZOO = Path(os.environ["FLATBENCH_ZOO"]) if os.environ.get("FLATBENCH_ZOO") else None

# chunk and channels_last default to a rule (no timing). A test that asks for "measure" names
# its own tuning file, so no test's choice depends on which test measured first.
os.environ.pop("FLATBENCH_TUNING_FILE", None)


# The tests that took 25 s or more each in a clean-clone `.ci/run` on the 2-core AVX2-only AMD EPYC
# (`PYTEST_ADDOPTS=--durations=80`, main at fb155ae: 51 min 54 s in all there, with other work beside
# it). `make test` leaves them out so that it stays within about 15 minutes on that machine;
# `make test-long` runs them, and CI (.ci/run) runs both. Kept in `make test` although as slow: the
# README table test, the kernel pin and one sweep-then-report, the checks a change most often breaks.
LONG = {
    "test_package.py::test_the_gpu_check_dry_run_runs_on_the_cpu",
    "test_slurm.py::test_two_task_cell_hit_by_its_time_limit_resumes_every_rank_to_the_uninterrupted_images",
    "test_paper_experiments.py::test_transferattack_rn50_sweep_and_compare_published",
    "test_integrity.py::test_rerun_into_the_same_dir_with_other_settings_never_relabels",
    "test_performance.py::test_two_cells_started_together_craft_the_images_of_one_alone",
    "test_slurm.py::test_scontrol_requeue_and_scancel_term_lose_no_batch_and_a_rerun_finishes",
    "test_integrity.py::test_every_report_output_leaves_the_inputs_byte_identical",
    "test_reliability.py::test_two_killed_processes_in_one_sweep_both_resume",
    "test_performance.py::test_the_command_line_keeps_the_attack_s_blocks_in_the_heap",
    "test_sweeps.py::test_evaluate_adds_only_missing_targets_and_never_recrafts",
    "test_slurm.py::test_sweep_on_slurm_equals_local_and_a_failing_cell_spares_the_others",
    "test_flatness.py::test_flatness_on_adds_columns_files_and_report",
    "test_package.py::test_wheel_installs_and_runs_outside_the_repository",
    "test_performance.py::test_bf16_asr_within_one_point_of_fp32",
    "test_sweeps.py::test_killed_cell_resumes_and_equals_uninterrupted",
    "test_planning.py::test_plan_predicts_grad_evals_and_counts_only_what_is_left",
    "test_integrity.py::test_evaluate_with_other_settings_refuses_and_changes_nothing",
    "test_integrity.py::test_multirun_with_a_failing_middle_cell_finishes_the_others",
    "test_sweeps.py::test_rerun_skips_finished_cell_and_force_recomputes",
    "test_paper_experiments.py::test_paper_experiment_cell_runs",
    "test_integrity.py::test_tables_and_mcnemar_never_mix_cells_that_differ_in_a_setting",
    "test_integrity.py::test_single_run_failure_is_one_line_and_full_error_shows_the_traceback",
    "test_search.py::test_wandb_runs_of_a_sweep_share_a_group_and_the_report_joins_it",
    "test_sweeps.py::test_report_ci_mcnemar_and_param_plot",
    "test_budget.py::test_budget_and_the_explicit_equivalent_are_one_cell_and_plan_shows_the_knob",
    "test_performance.py::test_targets_are_checked_before_crafting_and_built_after",
    "test_search.py::test_optuna_search_every_trial_a_cell_and_the_best_printed",
    "test_testbed.py::test_retraining_through_the_cli_matches_the_pinned_model",
    "test_package.py::test_listing_names_everything_from_the_cli_and_python",
    "test_flat_family.py::test_family_cells_from_the_command_line",
    "test_sweeps.py::test_torchrun_two_gloo_ranks_equal_single_process",
    # measured in the clean-clone .ci/run of d8240d2 (make test: 15 min 23 s of pytest there)
    "test_snapshots.py::test_snapshots_through_the_command_line",
    # issue 37: four random-init ImageNet CNNs as the surrogate (about 90 s)
    "test_paper_experiments.py::test_transferattack_ensemble_cwa_and_compare_published",
    # issue 37: two random-init ResNet-50 snapshots written in LGV's layout, then the ImageNet zoo
    "test_paper_experiments.py::test_transferattack_lgv_runs_the_release_layout_and_compares_published",
    # issue 36 section 4: a 2-task SLURM cell, one rank killed, then the rerun (about 4 minutes)
    "test_slurm.py::test_a_dead_rank_ends_its_two_task_job_and_the_rerun_completes",
    # issue 36 section 7: batches longer than a 1-minute allocation, requeued until done (about 4 minutes)
    "test_slurm.py::test_a_batch_longer_than_an_allocation_still_finishes",
    # issue 36 section 7: SIGTERM inside a batch of 64 PGN images, the rerun and a reference (about 60 s)
    "test_pause.py::test_sigterm_mid_batch_keeps_its_state_and_the_rerun_continues_it",
    # issue 37: an LGV cell with flatness measured on the base network (about 40 s)
    "test_lgv.py::test_flatness_on_the_base_model_of_an_lgv_cell",
    # issue 36 section 8: a second cluster of two nodes; one cell on it, then one under a 1-minute limit
    "test_slurm.py::test_a_two_node_cell_is_one_data_parallel_cell_equal_to_one_process",
    "test_slurm.py::test_a_two_node_cell_hit_by_its_time_limit_resumes_both_ranks",
    # the ImageNet path end to end: a sweep at 224 px with random-init timm and torchvision models, export,
    # re-evaluation and the report (about 40 s); the damaged-cache cases, five runs of two cells (about 60 s)
    "test_researcher_path.py::test_imagenet_end_to_end_sweep_export_reevaluate_and_report",
    "test_researcher_path.py::test_a_damaged_cache_is_set_aside_and_recomputed_to_the_clean_run",
    # every flat_family preset from each surrogate at 64 images, RAP's 400 steps included (3 to 4 minutes each)
    "test_whitebox.py::test_every_flat_family_preset_fools_its_own_surrogate",
}
LONG_FIXTURES = {"study"}   # test_conclusions.py's three-seed study (117 s to set up there)


@pytest.hookimpl(tryfirst=True)   # before the -m selection reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if name in LONG or LONG_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.long)




@pytest.fixture(scope="session")
def zoo_dir():
    return ZOO


@pytest.fixture(scope="session")
def trained_zoo(zoo_dir):
    from flatbench.models import load_model
    from flatbench.models.testbed import ARCHITECTURES

    return {name: load_model(name, zoo_dir=zoo_dir, progress=False) for name in ARCHITECTURES}


@pytest.fixture
def small_cnn():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(8 * 16, 5),
    ).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net






@pytest.fixture(scope="session")
def layouts(tmp_path_factory):
    return make_layouts(tmp_path_factory.mktemp("imagenet_layouts"))


SLURM_SCRIPT = ROOT / "scripts" / "slurm_local.sh"


def _local_cluster(env: dict, what: str):
    """A cluster of scripts/slurm_local.sh (its settings in ``env``): used when running, else started
    and stopped at the end; skipped, with the script's reason, where it cannot start (not root, no
    apt-get), and failed under CI=true (.ci/run sets it)."""
    import subprocess

    def script(*args, timeout=900):
        return subprocess.run(["bash", str(SLURM_SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env})

    started = False
    if script("status").returncode != 0:
        p = script("start")
        if p.returncode != 0:
            reason = (p.stderr.strip() or p.stdout.strip() or "unknown").splitlines()[-1]
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI=true but {what} did not start: {reason}")  # CI runs them, never skips
            pytest.skip(f"no {what}: {reason}")
        started = True
    conf = script("env").stdout.strip().split("=", 1)[1]
    yield {"SLURM_CONF": conf}
    if started:
        script("stop")


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node cluster of scripts/slurm_local.sh (CI starts it in .ci/run)."""
    yield from _local_cluster({}, "the local SLURM cluster")


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """A second cluster beside the first: two nodes, n1 and n2, as two slurmd daemons of this host
    (FLATBENCH_SLURM_NODES=2), with its own directory and ports; started here, stopped at the end."""
    yield from _local_cluster({"FLATBENCH_SLURM_DIR": "/tmp/flatbench-slurm-2nodes", "FLATBENCH_SLURM_PORT": "6840",
                               "FLATBENCH_SLURM_NODES": "2"}, "the two-node local SLURM cluster")
