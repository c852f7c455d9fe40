"""What differs between two resolved jobs, and what a resumed run may change."""

from loom.config.job_changes import (
    describe_differences,
    job_differences,
    length_change_refused,
    unresumable,
)


def test_a_new_argument_of_a_component_is_no_difference_but_a_new_component_is():
    saved = {"optimizer": {"name": "adam", "lr": 0.1}, "callbacks": []}
    newer_torch = {"optimizer": {"name": "adam", "lr": 0.1, "decoupled": False}, "callbacks": []}
    assert job_differences(saved, newer_torch) == []
    added = {**saved, "callbacks": [{"name": "progress_bar"}]}
    assert job_differences(saved, added) == ["callbacks.0.name"]
    assert describe_differences(["callbacks.0.name"], saved, added) == (
        "callbacks.0.name (absent in the run, 'progress_bar' now)"
    )


def test_only_the_length_may_change_and_not_under_a_schedule_shaped_by_it():
    run = {"scheduler": {"name": "cosine"}, "trainer": {"max_duration": "5ep"}}
    longer = {"scheduler": {"name": "cosine"}, "trainer": {"max_duration": "9ep"}}
    assert unresumable(job_differences(run, longer)) == []
    assert length_change_refused(run, longer) == (
        "trainer.max_duration (5ep in the run, 9ep now) cannot change: the cosine schedule "
        "is shaped by the run's length, which its checkpoint holds"
    )
    stepped = {**run, "scheduler": {"name": "step"}}
    assert length_change_refused(stepped, {**longer, "scheduler": {"name": "step"}}) is None
    assert length_change_refused(run, run) is None
