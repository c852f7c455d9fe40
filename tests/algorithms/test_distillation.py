"""Distillation: the teacher frozen and apart from the student, on the inputs the student
saw; the loss optimised and recorded is the blend; checkpoints hold the teacher's hash;
its weights from a run or a file, in Python and in a job; every mistake named."""

import contextlib
import copy
import hashlib
import io
import shutil

import pytest
import torch
import torch.nn.functional as F
import yaml

from loom import Trainer
from loom.algorithms import Distillation, MixUp
from loom.algorithms.distillation import weights_sha256
from loom.callbacks import Checkpoint, latest_checkpoint
from loom.config import ALGORITHMS, ConfigError
from loom.config.build import build_job
from loom.config.job import dump_job, resolve_job
from loom.models import MLP
from loom.runs import train_job
from loom.trainer import CheckpointError, CompositionError
from tests.conftest import one_batch
from tests.runs.test_predict import DATA
from tests.runs.test_predict import JOB as RANKED_JOB

INPUTS = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


class Recording(torch.nn.Module):
    """A linear model that remembers its inputs, its mode and whether autograd was on."""

    def __init__(self, seed, num_classes=4):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(5, num_classes)
        self.seen, self.training_modes, self.grad_enabled, self.output_dtypes = [], [], [], []

    def forward(self, inputs):
        self.seen.append(inputs.clone())
        self.training_modes.append(self.training)
        self.grad_enabled.append(torch.is_grad_enabled())
        outputs = self.linear(inputs)
        self.output_dtypes.append(outputs.dtype)
        return outputs


def trainer_with(algorithms, student=None, batches=None, **arguments):
    student = student or Recording(seed=0)
    return Trainer(
        student,
        batches or [(INPUTS, LABELS)],
        max_duration=arguments.pop("max_duration", "1ba"),
        device="cpu",
        optimizers=torch.optim.SGD(student.parameters(), lr=arguments.pop("lr", 0.0)),
        algorithms=algorithms,
        seed=3,
        **arguments,
    )


def by_hand(student_logits, teacher_logits, labels, temperature, alpha):
    """The blended loss written out in float64."""
    student = student_logits.double() / temperature
    teacher = teacher_logits.double() / temperature
    log_q = student - student.exp().sum(dim=1, keepdim=True).log()
    log_p = teacher - teacher.exp().sum(dim=1, keepdim=True).log()
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    hard = F.cross_entropy(student_logits.double(), labels)
    return alpha * temperature**2 * kl + (1 - alpha) * hard


def test_the_teacher_sees_the_mixed_inputs_the_student_saw_frozen_and_in_eval_mode():
    teacher = Recording(seed=1)
    mixup = MixUp(alpha=1.0)  # w uniform: the mixture differs from the batch
    trainer = trainer_with([mixup, Distillation(teacher)], max_duration="2ba", lr=0.5)
    before = copy.deepcopy(teacher.state_dict())
    trainer.fit()
    student = trainer.state.model
    assert len(teacher.seen) == 2
    for seen_by_teacher, seen_by_student in zip(teacher.seen, student.seen[:2], strict=True):
        torch.testing.assert_close(seen_by_teacher, seen_by_student)
        assert not torch.equal(seen_by_teacher, INPUTS)  # mixed
    assert teacher.training_modes == [False, False]
    assert teacher.grad_enabled == [False, False]
    assert all(not parameter.requires_grad for parameter in teacher.parameters())
    assert all(parameter.grad is None for parameter in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key])  # the student trained; the teacher did not
    optimized = {
        id(p) for group in trainer.state.optimizers[0].param_groups for p in group["params"]
    }
    assert optimized.isdisjoint(id(parameter) for parameter in teacher.parameters())
    assert set(student.state_dict()) == {"linear.weight", "linear.bias"}


def test_listed_before_mixup_it_is_refused():
    with pytest.raises(CompositionError, match=r"Distillation .*List Distillation after MixUp\."):
        trainer_with([Distillation(Recording(seed=1)), MixUp(alpha=0.2)])


def test_train_loss_and_the_gradient_are_those_of_the_blend():
    student, teacher = Recording(seed=0), Recording(seed=1)
    gradients, metrics = one_batch(
        student, (INPUTS, LABELS), algorithms=[Distillation(teacher, temperature=3.0, alpha=0.7)]
    )
    with torch.no_grad():
        teacher_logits = teacher.linear(INPUTS)
    expected = by_hand(student.linear(INPUTS), teacher_logits, LABELS, 3.0, 0.7)
    assert metrics["train/loss"] == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()
    for gradient, parameter in zip(gradients, student.parameters(), strict=True):
        torch.testing.assert_close(gradient, parameter.grad.float())


def test_without_distillation_the_loss_differs():
    # The hand computation above can tell: the plain loss is another number.
    _, plain = one_batch(Recording(seed=0), (INPUTS, LABELS))
    _, distilled = one_batch(
        Recording(seed=0), (INPUTS, LABELS), algorithms=[Distillation(Recording(seed=1))]
    )
    assert plain["train/loss"] != pytest.approx(distilled["train/loss"])


def test_the_teacher_runs_at_the_runs_precision_and_on_its_own_input_key():
    teacher = Recording(seed=1)
    view = torch.randn(8, 5)
    batch = {"image": INPUTS, "teacher_view": view, "label": LABELS}
    trainer_with(
        [Distillation(teacher, input_key="teacher_view")],
        batches=[batch],
        input_key="image",
        target_key="label",
        precision="bf16",
    ).fit()
    torch.testing.assert_close(teacher.seen[0], view)
    assert teacher.output_dtypes == [torch.bfloat16]  # under the run's autocast


def test_a_checkpoint_holds_the_teachers_source_and_hash_and_refuses_another_teacher(tmp_path):
    teacher = Recording(seed=1)
    algorithm = Distillation(teacher)
    trainer = trainer_with([algorithm], callbacks=[Checkpoint(tmp_path, interval="1ba")])
    trainer.fit()
    path = latest_checkpoint(tmp_path)
    saved = torch.load(path, weights_only=True)
    assert saved["algorithms"] == [
        {
            "name": "Distillation",
            "state": {"teacher_source": "in memory", "teacher_sha256": weights_sha256(teacher)},
        }
    ]
    assert set(saved["model"]) == {"linear.weight", "linear.bias"}  # no teacher in it
    resumed = trainer_with([Distillation(copy.deepcopy(teacher))], load_path=path)
    assert resumed.state.timestamp.batch == 1
    other = Recording(seed=2)
    with pytest.raises(CheckpointError) as refused:
        trainer_with([Distillation(other)], load_path=path)
    message = str(refused.value)
    assert "Distillation: the checkpoint was trained with another teacher" in message
    assert weights_sha256(teacher) in message
    assert weights_sha256(other) in message


def test_the_hash_is_of_the_weights_in_key_order():
    model = torch.nn.Linear(2, 3)
    tensors = b"".join(
        tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        for tensor in model.state_dict().values()
    )
    assert weights_sha256(model) == hashlib.sha256(tensors).hexdigest()
    assert weights_sha256(copy.deepcopy(model)) == weights_sha256(model)


def test_repr():
    assert repr(Distillation(torch.nn.Linear(2, 2))) == (
        "Distillation(teacher=Linear, temperature=4.0, alpha=0.9)"
    )
    assert repr(Distillation(torch.nn.Linear(2, 2), temperature=2, alpha=0, input_key="x")) == (
        "Distillation(teacher=Linear, temperature=2.0, alpha=0.0, input_key='x')"
    )


# A teacher run of `loom train`, and a student job that distils it.

# The ranked run of the prediction tests (interval and best checkpoints, the best not
# the final weights), two epochs long.
TEACHER_JOB = {**RANKED_JOB, "trainer": {"max_duration": "2ep", "device": "cpu"}}


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        train_job(resolve_job(TEACHER_JOB), run_dir)
    return run_dir


def teacher_model(hidden_sizes=(8,)):
    return MLP(num_classes=3, in_features=4, hidden_sizes=list(hidden_sizes))


def weights_in(path):
    saved = torch.load(path, weights_only=True)
    return saved["model"] if "format" in saved else saved


def assert_has_weights(model, weights):
    state = model.state_dict()
    assert set(state) == set(weights)
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def test_weights_come_from_a_runs_model_pt_or_a_checkpoint(teacher_run):
    final = teacher_run / "model.pt"
    algorithm = Distillation(teacher_model(), weights=final)
    assert_has_weights(algorithm.teacher, weights_in(final))
    assert algorithm.state_dict()["teacher_source"] == str(final)
    best = next((teacher_run / "best").glob("best-*.pt"))
    algorithm = Distillation(teacher_model(), weights=str(best))
    assert_has_weights(algorithm.teacher, weights_in(best))
    assert algorithm.teacher_sha256 != weights_sha256(Distillation(teacher_model(), final).teacher)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {"teacher": "runs/teacher"},
            TypeError,
            r"Distillation: teacher='runs/teacher' names a teacher as a job file does",
        ),
        ({"teacher": 3}, TypeError, r"Distillation: teacher must be a torch\.nn\.Module, got 3"),
        ({"weights": 3}, TypeError, r"Distillation: weights=3 must be the path"),
        ({"temperature": 0}, ValueError, r"Distillation: temperature=0 must be a positive"),
        ({"temperature": "hot"}, TypeError, r"Distillation: temperature='hot' must be"),
        ({"alpha": 1.5}, ValueError, r"Distillation: alpha=1\.5 must lie in \[0, 1\]"),
        ({"input_key": 1.5}, TypeError, r"Distillation: input_key=1\.5 is not a batch key"),
    ],
)
def test_bad_arguments_are_named(arguments, error, message):
    with pytest.raises(error, match=message):
        Distillation(**{"teacher": torch.nn.Linear(2, 2), **arguments})


def test_bad_weights_files_are_named_when_it_is_made(teacher_run, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=rf"Distillation: weights='{missing}': .*exist"):
        Distillation(teacher_model(), weights=missing)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError,
        match=r"Distillation: weights='.*damaged\.pt' cannot be loaded into teacher \(MLP\): "
        r".*cannot be read",
    ):
        Distillation(teacher_model(), weights=damaged)
    with pytest.raises(
        CheckpointError, match=r"Distillation: weights='.*model\.pt' .*does not fit this model"
    ):
        Distillation(teacher_model(hidden_sizes=(5,)), weights=teacher_run / "model.pt")


def test_a_teacher_of_other_classes_is_named_at_the_first_batch():
    trainer = trainer_with([Distillation(Recording(seed=1, num_classes=3))])
    with pytest.raises(
        ValueError,
        match=r"Distillation: teacher \(Recording\) gives outputs of shape \(8, 3\), "
        r"the student \(8, 4\)",
    ) as refused:
        trainer.fit()
    assert "raised by algorithm Distillation at event 'after_forward'" in refused.value.__notes__


def test_the_student_itself_or_a_teacher_sharing_its_weights_is_refused():
    student = Recording(seed=0)
    with pytest.raises(ValueError, match=r"Distillation: teacher \(Recording\) is the model"):
        trainer_with([Distillation(student)], student=student)
    sharing = torch.nn.Sequential(student.linear)
    with pytest.raises(ValueError, match=r"shares its parameter '0\.weight' with the model"):
        trainer_with([Distillation(sharing)], student=student)


STUDENT_JOB = {
    "seed": 0,
    "model": {"name": "mlp", "hidden_sizes": [4]},
    "data": {"train": {**DATA, "num_samples": 16, "batch_size": 8}},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "trainer": {"max_duration": "1ba", "device": "cpu"},
}


def student_job(teacher, **arguments):
    entry = {"name": "distillation", "teacher": teacher, **arguments}
    return resolve_job({**STUDENT_JOB, "algorithms": [entry]})


def last_checkpoint(run):
    return latest_checkpoint(run / "checkpoints")


def best_checkpoint(run):
    return next((run / "best").glob("best-*.pt"))


@pytest.mark.parametrize(
    ("form", "weights"),
    [
        (lambda run: str(run), lambda run: run / "model.pt"),
        (lambda run: {"run": str(run)}, lambda run: run / "model.pt"),
        (lambda run: {"run": str(run), "checkpoint": "final"}, lambda run: run / "model.pt"),
        (lambda run: {"run": str(run), "checkpoint": "last"}, last_checkpoint),
        (lambda run: {"run": str(run), "checkpoint": "best"}, best_checkpoint),
        (
            lambda run: {"run": str(run), "checkpoint": str(best_checkpoint(run))},
            best_checkpoint,
        ),
        (
            lambda run: {"run": str(run), "checkpoint": "best/" + best_checkpoint(run).name},
            best_checkpoint,
        ),
        (
            lambda run: {
                "model": {"name": "mlp", "hidden_sizes": [8]},
                "weights": str(run / "model.pt"),
            },
            lambda run: run / "model.pt",
        ),
    ],
    ids=["run", "run-mapping", "final", "last", "best", "path", "path-in-run", "model-weights"],
)
def test_every_teacher_form_of_a_job_builds(teacher_run, form, weights):
    teacher = form(teacher_run)
    job = student_job(teacher, temperature=2.0, alpha=0.5)
    assert yaml.safe_load(dump_job(job))["algorithms"][0]["teacher"] == teacher  # as given
    parts = build_job(job)
    (algorithm,) = parts.algorithms
    assert isinstance(algorithm, Distillation)
    assert (algorithm.temperature, algorithm.alpha) == (2.0, 0.5)
    assert algorithm.weights == str(weights(teacher_run))
    assert_has_weights(algorithm.teacher, weights_in(weights(teacher_run)))
    assert algorithm.teacher is not parts.model


def test_a_job_with_a_teacher_trains(teacher_run):
    metrics = build_job(student_job(str(teacher_run))).trainer().fit()
    assert set(metrics) == {"train/loss"}


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (
            lambda run: str(run.parent / "nope"),
            r"algorithms\.0\.teacher: run directory '.*nope' does not exist",
        ),
        (
            lambda run: str(run / "best"),
            r"algorithms\.0\.teacher: .*best holds no config\.yaml",
        ),
        (
            lambda run: {"run": str(run), "checkpoint": "missing.pt"},
            r"algorithms\.0\.teacher: checkpoint missing\.pt: no such file \(nor in .*run\)",
        ),
        (
            lambda run: {"run": str(run), "chekpoint": "best"},
            r"algorithms\.0\.teacher\.chekpoint: unknown key \(did you mean 'checkpoint'\?\)",
        ),
        (
            lambda run: {"model": {"name": "mlp", "hidden_sizes": [8]}},
            r"algorithms\.0\.teacher\.weights: missing",
        ),
        (
            lambda run: {"model": {"name": "mlp"}, "weights": str(run / "missing.pt")},
            r"algorithms\.0\.teacher\.weights: no such file '.*missing\.pt'",
        ),
        (
            lambda run: {"model": {"name": "mlp", "hiden_sizes": [8]}, "weights": "x"},
            r"algorithms\.0\.teacher\.weights: no such file 'x'",
        ),
        (
            lambda run: {
                "model": {"name": "mlp", "hiden_sizes": [8]},
                "weights": str(run / "model.pt"),
            },
            r"algorithms\.0\.teacher\.model\.hiden_sizes: unknown key "
            r"\(did you mean 'hidden_sizes'",
        ),
        (
            lambda run: {
                "model": {"name": "mlp", "hidden_sizes": [5]},
                "weights": str(run / "model.pt"),
            },
            r"algorithms\.0\.teacher: \{'model': .*\}: Distillation: weights='.*model\.pt' "
            r"cannot be loaded into teacher \(MLP\): .*does not fit this model",
        ),
    ],
    ids=[
        "no-run",
        "not-a-run",
        "no-such-checkpoint",
        "unknown-key",
        "no-weights",
        "no-such-weights",
        "weights-checked-first",
        "unknown-model-key",
        "other-model",
    ],
)
def test_a_teacher_a_job_cannot_use_is_named_with_its_path(teacher_run, teacher, message):
    with pytest.raises(ConfigError, match=message):
        build_job(student_job(teacher(teacher_run)))


def test_a_run_without_checkpoints_has_no_last_or_best(teacher_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.yaml", "model.pt"):
        shutil.copy(teacher_run / name, bare / name)
    # Without its status (or summary), the run reads as one that died mid-training: its
    # model.pt would be an earlier segment's, and is refused as loom predict refuses it.
    with pytest.raises(ConfigError, match=r"checkpoint final: the run in .*bare failed"):
        build_job(student_job(str(bare)))
    shutil.copy(teacher_run / "status.json", bare / "status.json")
    (bare / "config.yaml").write_text(
        (teacher_run / "config.yaml").read_text().replace("folder: best", "folder: elsewhere")
    )
    assert build_job(student_job(str(bare))).algorithms[0].weights == str(bare / "model.pt")
    with pytest.raises(
        ConfigError,
        match=r"algorithms\.0\.teacher: checkpoint last: no checkpoint in .*bare/checkpoints",
    ):
        build_job(student_job({"run": str(bare), "checkpoint": "last"}))
    with pytest.raises(
        ConfigError, match=r"algorithms\.0\.teacher: checkpoint best: .*bare has no summary\.json"
    ):
        build_job(student_job({"run": str(bare), "checkpoint": "best"}))
    (bare / "model.pt").unlink()
    with pytest.raises(
        ConfigError, match=r"algorithms\.0\.teacher: .*bare has no model\.pt, the final weights"
    ):
        build_job(student_job(str(bare)))


def test_a_job_gives_the_teacher_as_plain_data_and_the_builder_builds_it():
    with pytest.raises(ConfigError, match=r"algorithms\.0\.teacher: expected str \| mapping"):
        student_job(17)
    assert "teacher: str | mapping[str, any]" in [
        parameter.describe() for parameter in ALGORITHMS.parameters("distillation")
    ]


def test_a_jobs_weights_beside_the_teacher_replace_the_file_its_entry_names(teacher_run):
    best = str(best_checkpoint(teacher_run))
    section = {"name": "mlp", "hidden_sizes": [8]}
    for teacher in (str(teacher_run), {"run": str(teacher_run)}, {"model": section}):
        (algorithm,) = build_job(student_job(teacher, weights=best)).algorithms
        assert algorithm.weights == best
        assert_has_weights(algorithm.teacher, weights_in(best))
    for teacher, named in (
        ({"run": str(teacher_run), "checkpoint": "last"}, "checkpoint"),
        ({"model": section, "weights": best}, "weights"),
    ):
        with pytest.raises(
            ConfigError,
            match=rf"algorithms\.0\.weights: '.*', but algorithms\.0\.teacher\.{named} names "
            r"the teacher's weights too",
        ):
            build_job(student_job(teacher, weights=best))
    with pytest.raises(ConfigError, match=r"algorithms\.0\.weights: no such file 'missing\.pt'"):
        build_job(student_job(str(teacher_run), weights="missing.pt"))


def test_a_teacher_run_of_other_classes_is_named_as_such(teacher_run):
    # The teacher is built for the student's data: 4 classes, where it learned 3.
    data = {**STUDENT_JOB["data"]["train"], "num_classes": 4}
    job = {**STUDENT_JOB, "data": {"train": data}}
    entry = {"name": "distillation", "teacher": str(teacher_run)}
    with pytest.raises(
        ConfigError,
        match=r"does not fit this model.*The teacher is built for this job's data \(4 classes\): "
        r"a teacher trained on other classes cannot teach this student\.",
    ):
        build_job(resolve_job({**job, "algorithms": [entry]}))
