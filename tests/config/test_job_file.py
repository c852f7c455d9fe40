import pytest

from loom.cli import main
from loom.config.job_file import apply_overrides, read_job_file
from loom.config.schema import ConfigError


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_reads_a_mapping(tmp_path):
    assert read_job_file(write(tmp_path, "seed: 1\nmodel: {name: mlp}\n")) == {
        "seed": 1,
        "model": {"name": "mlp"},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"job\.yaml: the job file is empty"),
        ("# only a comment\n", r"is empty"),
        ("- a\n- b\n", r"a job file is a mapping of sections .*got a list"),
        ("model: {name: mlp\n", r"is not valid YAML"),
        (
            "model: !!python/object/apply:os.system ['echo hacked']\n",
            r"could not determine a constructor for the tag "
            r"'tag:yaml\.org,2002:python/object/apply:os\.system' at line 1, column 8\. "
            r"Job files hold plain data only",
        ),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        read_job_file(write(tmp_path, text))


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    text = "seed: 0\nmodel:\n  name: mlp\n  width: 8\n  width: 16\n"
    with pytest.raises(
        ConfigError,
        match=r"job\.yaml: key 'width' \(model\.width\) is given twice in one mapping, at line 4 "
        r"and at line 5; YAML would keep the second silently",
    ):
        read_job_file(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"key 'seed' is given twice .* line 1 and at line 3"):
        read_job_file(write(tmp_path, "seed: 0\nmodel: {name: mlp}\nseed: 1\n"))
    # The same key in two mappings is no repeat; merge keys still merge.
    merged = read_job_file(write(tmp_path, "a: &base {x: 1}\nb: {<<: *base, y: 2}\nc: {x: 3}\n"))
    assert merged == {"a": {"x": 1}, "b": {"x": 1, "y": 2}, "c": {"x": 3}}


def test_a_key_given_twice_in_a_section_is_named_by_its_config_path(tmp_path):
    text = "model: {name: mlp}\noptimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\n"
    with pytest.raises(
        ConfigError,
        match=r"^.*job\.yaml: key 'lr' \(optimizer\.lr\) is given twice in one mapping, "
        r"at line 4 and at line 5; YAML would keep the second silently\. Give it once\.$",
    ):
        read_job_file(write(tmp_path, text))
    in_a_list = "algorithms:\n  - name: mixup\n    alpha: 0.2\n    alpha: 0.4\n"
    with pytest.raises(ConfigError, match=r"key 'alpha' \(algorithms\.0\.alpha\) .* line 3 "):
        read_job_file(write(tmp_path, in_a_list))


def test_a_key_given_twice_on_one_line_is_named_with_both_columns(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"key 'lr' \(optimizer\.lr\) is given twice in one mapping, "
        r"at line 1, column 13 and at line 1, column 22;",
    ):
        read_job_file(write(tmp_path, "optimizer: {lr: 0.1, lr: 0.2}\n"))
    # Within a mapping merged in place, too; overriding what a merge brings is no repeat.
    with pytest.raises(ConfigError, match=r"key 'y' \(b\.y\) is given twice"):
        read_job_file(write(tmp_path, "a: &base {x: 1}\nb: {<<: [*base, {y: 2, y: 3}]}\n"))


def test_a_file_that_is_not_utf8_is_named_with_the_line_and_byte(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes("seed: 0\nname: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(
        ConfigError,
        match=r"^.*job\.yaml is not UTF-8 text: byte 0xe9 at line 2, column 10 \(byte offset "
        r"17\); a job file is a YAML text file, saved as UTF-8\.$",
    ):
        read_job_file(path)


def test_loom_train_names_a_job_file_that_is_not_utf8_in_one_line(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"seed: 0\nmodel: {name: caf\xe9}\n")
    assert main(["train", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"loom train: error: {path} is not UTF-8 text: byte 0xe9 at line 2, column 18 "
        "(byte offset 25); a job file is a YAML text file, saved as UTF-8.\n"
    )


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"job file '.*nope\.yaml' does not exist"):
        read_job_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"is a directory"):
        read_job_file(tmp_path)


def test_overrides_set_values_read_as_yaml():
    config = {"optimizer": {"lr": 0.1}, "algorithms": [{"name": "a", "alpha": 0.5}]}
    apply_overrides(
        config,
        [
            "optimizer.lr=0.05",
            "algorithms.0.alpha=0.3",
            "scheduler.name=cosine",  # a section the file leaves out
            "scheduler.milestones=[150ep, 225ep]",
            "seed=",
        ],
    )
    assert config == {
        "optimizer": {"lr": 0.05},
        "algorithms": [{"name": "a", "alpha": 0.3}],
        "scheduler": {"name": "cosine", "milestones": ["150ep", "225ep"]},
        "seed": None,
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr", r"override 'optimizer\.lr' must be key\.path=value"),
        ("optimizer..lr=1", r"must be key\.path=value"),
        ("algorithms.1.alpha=0.3", r"algorithms\.1 is not an item of a list of 1"),
        ("algorithms.x=0.3", r"algorithms\.x is not an item of a list of 1"),
        ("optimizer.lr.value=1", r"optimizer\.lr holds 0\.1, not a section with keys"),
    ],
)
def test_bad_overrides(override, message):
    config = {"optimizer": {"lr": 0.1}, "algorithms": [{"name": "a"}]}
    with pytest.raises(ConfigError, match=message):
        apply_overrides(config, [override])
