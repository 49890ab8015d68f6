"""Config loading: defaults, partial files, overrides, round trips and every class of error."""

import re
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gradlab.config import (
    CHOICES,
    RANGES,
    Config,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config_yaml,
    load_config,
    parse_override,
    set_value,
)
from gradlab.errors import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def write_config(tmp_path, text, filename="config.yaml"):
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path, overrides=(), seed=None, origin="--set") -> ConfigError:
    """The ConfigError of loading ``path``; overrides named as the CLI names them."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides, seed=seed, origin=origin)
    message = str(caught.value)
    assert "\n" not in message, "user-facing messages are one line"
    return caught.value


def leaf_paths(mapping, prefix=""):
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


# --- defaults and partial files ---------------------------------------------------------


def test_empty_file_gives_every_default_and_the_file_stem_as_name(tmp_path):
    config = load_config(write_config(tmp_path, "", "deep_sigmoid.yaml"))
    assert config == replace(Config(), name="deep_sigmoid")
    assert config.seed == 0
    assert config.dtype == "float64"
    assert config.data.n_train == 2048
    assert config.model.depth == 20
    assert config.model.activation == "sigmoid"
    assert config.model.init.weight_scale == 1.0
    assert config.model.batchnorm.momentum == 0.1
    assert config.model.layernorm.eps == 1e-5
    assert config.train.batch_size == 64
    assert config.train.clip.mode == "none"
    assert config.log.every == 10
    assert config.analysis.fit_skip == 0.15


def test_dict_without_name_is_called_run():
    assert config_from_dict({}).name == "run"
    assert config_from_dict({"name": None}).name == "run"


def test_partial_file_changes_only_its_keys(tmp_path):
    path = write_config(
        tmp_path,
        "name: wide\nmodel:\n  width: 128\n  init: {scheme: xavier}\ntrain:\n  lr: 1e-3\n",
    )
    config = load_config(path)
    assert config.name == "wide"
    assert config.model.width == 128
    assert config.model.init.scheme == "xavier"
    assert config.model.init.weight_scale == 1.0  # untouched sibling keeps its default
    assert config.model.depth == 20
    assert config.train.lr == 1e-3  # PyYAML reads 1e-3 as a string; a float field accepts it
    assert config.train.optimizer == "sgd"


def test_section_left_empty_in_yaml_means_defaults(tmp_path):
    config = load_config(write_config(tmp_path, "model:\n  # depth: 3\ntrain:\n"))
    assert config.model == Config().model
    assert config.train == Config().train


def test_numbers_in_exponent_form_and_ints_become_floats(tmp_path):
    path = write_config(
        tmp_path, "model:\n  batchnorm: {eps: 1.0e-5}\n  layernorm: {eps: 1E-7}\ntrain: {lr: 1}\n"
    )
    config = load_config(path)
    assert config.model.batchnorm.eps == 1e-5
    assert config.model.layernorm.eps == 1e-7
    assert config.train.lr == 1.0
    assert isinstance(config.train.lr, float)


def test_config_is_frozen():
    with pytest.raises(FrozenInstanceError):
        Config().seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("task", "loss", "resolved", "output_dim"),
    [
        ("regression", "auto", "mse", 1),
        ("binary", "auto", "bce", 1),
        ("binary", "mse", "mse", 1),
        ("binary", "cross_entropy", "cross_entropy", 2),
        ("multiclass", "auto", "cross_entropy", 5),
        ("multiclass", "mse", "mse", 5),
    ],
)
def test_resolved_loss_and_output_dim(task, loss, resolved, output_dim):
    config = config_from_dict({"data": {"task": task, "classes": 5}, "train": {"loss": loss}})
    assert config.resolved_loss == resolved
    assert config.output_dim == output_dim


def test_full_batch_resolves_to_the_training_set_size():
    config = config_from_dict({"data": {"n_train": 300}, "train": {"batch_size": "full"}})
    assert config.train.batch_size == "full"
    assert config.resolved_batch_size == 300


# --- overrides ----------------------------------------------------------------------------


def test_overrides_parse_values_as_yaml_and_beat_the_file(tmp_path):
    path = write_config(tmp_path, "train: {lr: 0.5}\nmodel: {depth: 3}\n")
    config = load_config(
        path,
        [
            "train.lr=1e-3",
            "train.batch_size=full",
            "model.init.weight_scale=4",
            "data.normalize_inputs=true",
            "name=sweep-a_1.5",
        ],
    )
    assert config.train.lr == 1e-3
    assert config.train.batch_size == "full"
    assert config.model.init.weight_scale == 4.0
    assert config.data.normalize_inputs is True
    assert config.name == "sweep-a_1.5"
    assert config.model.depth == 3  # from the file, not overridden


def test_later_override_wins_and_seed_beats_overrides(tmp_path):
    path = write_config(tmp_path, "seed: 1\n")
    config = load_config(path, ["train.lr=0.2", "train.lr=0.3", "seed=5"], seed=7)
    assert config.train.lr == 0.3
    assert config.seed == 7


def test_null_name_override_falls_back_to_the_stem(tmp_path):
    path = write_config(tmp_path, "name: custom\n", "base.yaml")
    assert load_config(path, ["name=null"]).name == "base"


def test_parse_override_splits_on_the_first_equals_sign():
    assert parse_override("name=lr=0.1") == ("name", "lr=0.1")
    assert parse_override(" train.lr = 1e-3") == ("train.lr", "1e-3")
    assert parse_override("name=") == ("name", None)


def test_apply_overrides_copies_and_checks_the_path():
    base = {"train": {"lr": 0.5}}
    changed = apply_overrides(base, {"train.clip.threshold": 2.0, "model.depth": 4})
    assert changed == {"train": {"lr": 0.5, "clip": {"threshold": 2.0}}, "model": {"depth": 4}}
    assert base == {"train": {"lr": 0.5}}, "the input mapping is left alone"
    with pytest.raises(ConfigError, match=r"model\.dept: unknown key in sweep grid; did you mean"):
        apply_overrides(base, {"model.dept": 4}, origin="sweep grid")


def test_set_value_creates_levels_and_refuses_to_walk_through_a_value():
    mapping = {"model": None}
    set_value(mapping, "model.init.scheme", "he")
    assert mapping == {"model": {"init": {"scheme": "he"}}}
    with pytest.raises(ConfigError, match=r"model\.init\.scheme: must be a mapping"):
        set_value(mapping, "model.init.scheme.x", 1)


# --- round trips ----------------------------------------------------------------------------


def test_to_dict_keeps_schema_order_and_round_trips():
    config = config_from_dict(
        {"name": "x", "data": {"task": "binary"}, "train": {"batch_size": "full", "lr": 3e-4}}
    )
    as_dict = config_to_dict(config)
    assert list(as_dict) == ["name", "seed", "dtype", "data", "model", "train", "log", "analysis"]
    assert list(as_dict["model"]) == [
        "depth",
        "width",
        "activation",
        "norm",
        "leaky_slope",
        "dropout",
        "init",
        "batchnorm",
        "layernorm",
        "residual",
    ]
    assert config_from_dict(as_dict) == config


def test_dump_then_load_gives_the_same_config(tmp_path):
    config = config_from_dict(
        {"name": "dumped", "model": {"batchnorm": {"eps": 1e-7}}, "train": {"lr": 1e-3}}
    )
    text = dump_config_yaml(config)
    assert text.startswith("name: dumped\nseed: 0\ndtype: float64\ndata:\n")
    assert load_config(write_config(tmp_path, text, "other.yaml")) == config


@given(lr=st.floats(min_value=0.0, exclude_min=True, allow_infinity=False))
def test_any_positive_lr_override_round_trips(lr):
    config = config_from_dict({}, [f"train.lr={lr!r}"])
    assert config.train.lr == lr
    assert config_from_dict(yaml.safe_load(dump_config_yaml(config))) == config


# --- the schema tables and the docs agree with the dataclasses ------------------------------


def test_choice_and_range_tables_name_real_keys():
    paths = set(leaf_paths(config_to_dict(Config())))
    assert set(CHOICES) <= paths
    assert set(RANGES) <= paths


def test_defaults_obey_their_own_rules():
    defaults = dict(zip(leaf_paths(config_to_dict(Config())), _leaf_values(Config()), strict=True))
    for path, allowed in CHOICES.items():
        assert defaults[path] in allowed or path == "train.batch_size"
    for path, rule in RANGES.items():  # null: a key the default kind does not read
        assert defaults[path] is None or defaults[path] in rule, path


def _leaf_values(config):
    def walk(mapping):
        for value in mapping.values():
            if isinstance(value, dict):
                yield from walk(value)
            else:
                yield value

    return list(walk(config_to_dict(config)))


def test_docs_describe_every_key_and_choice():
    text = DOCS.read_text(encoding="utf-8")
    for path in leaf_paths(config_to_dict(Config())):
        assert f"`{path}`" in text, f"docs/config.md does not describe {path}"
    for allowed in CHOICES.values():
        for choice in allowed:
            assert f"`{choice}`" in text, f"docs/config.md does not mention {choice}"


# --- errors: file level -------------------------------------------------------------------


def test_missing_file(tmp_path):
    error = load_error(tmp_path / "nope.yaml")
    assert str(error) == f"{tmp_path / 'nope.yaml'}: no such config file"


def test_directory_instead_of_file(tmp_path):
    assert "is a directory, not a config file" in str(load_error(tmp_path))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "seed: 1\nmodel:\n  depth: [3\n  width: 4\nlog: {every: 2}\n")
    message = str(load_error(path))
    assert message.startswith(f"{path} line ")
    assert re.match(rf"{re.escape(str(path))} line \d+, column \d+: ", message)


def test_yaml_syntax_error_line_number_is_right(tmp_path):
    path = write_config(tmp_path, "seed: 1\ndtype: float64\ntrain: lr: 0.1\n")
    assert str(load_error(path)).startswith(f"{path} line 3, column 10: mapping values")


def test_unsafe_python_tag_is_reported_not_run(tmp_path):
    path = write_config(tmp_path, "name: !!python/object/apply:os.system ['echo hi']\n")
    message = str(load_error(path))
    assert message.startswith(f"{path} line 1, column 7: could not determine a constructor")
    assert "plain YAML only" in message


@pytest.mark.parametrize(
    ("text", "key_path", "line", "first"),
    [
        ("seed: 1\ndtype: float64\nseed: 2\n", "seed", 3, 1),
        ("train:\n  lr: 0.1\n  steps: 5\n  lr: 0.2\n", "train.lr", 4, 2),
        ("model:\n  init: {scheme: normal, scheme: he}\n", "model.init.scheme", 2, 2),
        ("train:\n  lr: 0.1\nlog:\n  every: 2\ntrain:\n  steps: 3\n", "train", 5, 1),
        ("seed: 1\n'seed': 2\n", "seed", 2, 1),  # quoting does not make another key
    ],
)
def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path, text, key_path, line, first):
    path = write_config(tmp_path, text)
    error = load_error(path)
    assert str(error) == (
        f"{path} line {line}: {key_path}: key given twice (first at line {first}); keep one of them"
    )
    assert error.key_path == key_path


def test_equal_keys_in_different_mappings_and_distinct_typed_keys_are_fine(tmp_path):
    text = "data:\n  noise: 0.1\ntrain:\n  clip: {mode: norm, threshold: 0.5}\nlog:\n  every: 5\n"
    assert load_config(write_config(tmp_path, text)).log.every == 5
    # a key next to a merge key (<<) overrides the merged one: YAML's own rule, not a duplicate
    merged = "model:\n  <<: {depth: 3, width: 8}\n  depth: 4\n"
    model = load_config(write_config(tmp_path, merged)).model
    assert (model.depth, model.width) == (4, 8)


@pytest.mark.parametrize(
    ("text", "got"),
    [("- 1\n- 2\n", "got a list"), ("just words\n", "got 'just words'"), ("3\n", "got 3")],
)
def test_document_must_be_a_mapping(tmp_path, text, got):
    path = write_config(tmp_path, text)
    message = str(load_error(path))
    assert message.startswith(f"{path}: the config must be a mapping of keys")
    assert message.endswith(got)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    assert str(load_error(path)) == f"{path}: not a text file (not UTF-8)"


# --- errors: keys, types, ranges, cross-key rules -----------------------------------------


@pytest.mark.parametrize(
    ("text", "key_path", "message"),
    [
        # unknown keys, at every level, naming the file they are in
        (
            "trian: {lr: 1}",
            "trian",
            "trian: unknown key in {file}; did you mean 'train'? (allowed: name, seed, dtype, "
            "data, model, train, log, analysis)",
        ),
        (
            "model: {activaton: relu}",
            "model.activaton",
            "model.activaton: unknown key in {file}; did you mean 'activation'? (allowed: depth, "
            "width, activation, norm, leaky_slope, dropout, init, batchnorm, layernorm, residual)",
        ),
        (
            "model: {init: {weight_scal: 2}}",
            "model.init.weight_scal",
            "model.init.weight_scal: unknown key in {file}; did you mean 'weight_scale'? "
            "(allowed: scheme, weight_scale, bias_scale)",
        ),
        (
            "train: {clip: {zzz: 2}}",
            "train.clip.zzz",
            "train.clip.zzz: unknown key in {file} (allowed: mode, threshold)",
        ),
        # unknown choices
        (
            "model: {norm: btach}",
            "model.norm",
            "model.norm: 'btach' is not one of none, batch, layer; did you mean 'batch'?",
        ),
        (
            "train: {optimizer: adamw}",
            "train.optimizer",
            "train.optimizer: 'adamw' is not one of sgd, momentum, nesterov, adam; "
            "did you mean 'adam'?",
        ),
        (
            "dtype: float16",
            "dtype",
            "dtype: 'float16' is not one of float64, float32; did you mean 'float64'?",
        ),
        # wrong types: bool is not an int, a float is not an int, a string is not a number
        ("model: {depth: true}", "model.depth", "model.depth: must be an integer >= 1, got true"),
        ("model: {depth: 2.5}", "model.depth", "model.depth: must be an integer >= 1, got 2.5"),
        ("train: {lr: fast}", "train.lr", "train.lr: must be a number > 0, got 'fast'"),
        ("train: {lr: .nan}", "train.lr", "train.lr: must be a finite number, got nan"),
        ("seed: 1.0", "seed", "seed: must be an integer >= 0, got 1.0"),
        (
            "data: {normalize_inputs: maybe}",
            "data.normalize_inputs",
            "data.normalize_inputs: must be true or false, got 'maybe'",
        ),
        (
            "model: {activation: 3}",
            "model.activation",
            "model.activation: must be one of sigmoid, tanh, relu, linear, erf, gelu, silu, "
            "softplus, leaky_relu, elu, got 3",
        ),
        (
            "train: {batch_size: 2.0}",
            "train.batch_size",
            "train.batch_size: must be an integer >= 1 or 'full', got 2.0",
        ),
        (
            "train: {batch_size: ful}",
            "train.batch_size",
            "train.batch_size: must be an integer >= 1 or 'full', got 'ful'; did you mean 'full'?",
        ),
        (
            "model: 3",
            "model",
            "model: must be a mapping of keys (depth, width, activation, norm, leaky_slope, "
            "dropout, init, batchnorm, layernorm, residual), got 3",
        ),
        ("name: 12", "name", "name: must be a string, got 12"),
        # out of range
        ("train: {lr: -0.1}", "train.lr", "train.lr: must be > 0, got -0.1"),
        ("train: {lr: 0}", "train.lr", "train.lr: must be > 0, got 0"),
        ("model: {depth: 0}", "model.depth", "model.depth: must be >= 1, got 0"),
        ("train: {batch_size: 0}", "train.batch_size", "train.batch_size: must be >= 1, got 0"),
        ("train: {momentum: 1}", "train.momentum", "train.momentum: must be in [0, 1), got 1"),
        (
            "model: {batchnorm: {momentum: 0}}",
            "model.batchnorm.momentum",
            "model.batchnorm.momentum: must be in (0, 1], got 0",
        ),
        (
            "analysis: {fit_skip: 0.5}",
            "analysis.fit_skip",
            "analysis.fit_skip: must be in [0, 0.5), got 0.5",
        ),
        ("data: {classes: 1}", "data.classes", "data.classes: must be >= 2, got 1"),
        ("data: {noise: -1e-3}", "data.noise", "data.noise: must be >= 0, got -0.001"),
        ("seed: -1", "seed", "seed: must be >= 0, got -1"),
        # rules joining several keys
        (
            "data: {n_train: 100}\ntrain: {batch_size: 101}",
            "train.batch_size",
            "train.batch_size: must be <= data.n_train (100), got 101; "
            "use 'full' for full-batch gradient descent",
        ),
        (
            "model: {norm: batch}\ntrain: {batch_size: 1}",
            "train.batch_size",
            "train.batch_size: BatchNorm needs at least 2 samples per batch "
            "(model.norm is 'batch'), got 1",
        ),
        (
            "model: {norm: batch}\ndata: {n_train: 1}\ntrain: {batch_size: full}",
            "train.batch_size",
            "train.batch_size: BatchNorm needs at least 2 samples per batch "
            "(model.norm is 'batch'), got 'full' = data.n_train = 1",
        ),
        (
            "data: {task: multiclass}\ntrain: {loss: bce}",
            "train.loss",
            "train.loss: 'bce' needs data.task 'binary', got 'multiclass'; "
            "use cross_entropy or mse",
        ),
        (
            "model: {dropout: 1}",
            "model.dropout",
            "model.dropout: must be in [0, 1), got 1",
        ),
        (
            "train: {loss: bce}",
            "train.loss",
            "train.loss: 'bce' needs data.task 'binary', got 'regression'; use mse",
        ),
        (
            "train: {loss: cross_entropy}",
            "train.loss",
            "train.loss: 'cross_entropy' needs data.task 'binary' or 'multiclass', "
            "got 'regression'; use mse",
        ),
    ],
)
def test_bad_value_message_names_the_key_the_value_and_the_rule(tmp_path, text, key_path, message):
    path = write_config(tmp_path, text + "\n")
    error = load_error(path)
    assert str(error) == message.replace("{file}", str(path))
    assert error.key_path == key_path


def test_batch_norm_with_two_samples_is_fine():
    config = config_from_dict({"model": {"norm": "batch"}, "train": {"batch_size": 2}})
    assert config.resolved_batch_size == 2


@pytest.mark.parametrize(
    "name",
    ["../x", "a/../../b", "/abs/path", "", ".", "..", ".hidden", "a b", "a/b", "x" * 201],
)
def test_names_that_could_escape_the_results_folder_are_refused(tmp_path, name):
    error = load_error(write_config(tmp_path, yaml.safe_dump({"name": name})))
    assert str(error).startswith("name: ")
    assert "is not a valid run name" in str(error)
    assert error.key_path == "name"


@pytest.mark.parametrize("name", ["a", "lr=0.1,depth=20", "run-1_b.c+d", "x" * 200, "0"])
def test_safe_names_are_kept(name):
    assert config_from_dict({"name": name}).name == name


def test_file_stem_that_is_not_a_valid_name_is_reported(tmp_path):
    error = load_error(write_config(tmp_path, "", "my config.yaml"))
    assert str(error).startswith("name: 'my config' is not a valid run name")


def test_direct_construction_is_checked_too():
    with pytest.raises(ConfigError, match=r"^train\.lr: must be > 0, got -1$"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match=r"^train\.loss: 'bce' needs"):
        replace(Config(), train=TrainConfig(loss="bce"))


# --- errors: --set ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.activaton=relu",
            "model.activaton: unknown key in --set; did you mean 'activation'? (allowed: depth, "
            "width, activation, norm, leaky_slope, dropout, init, batchnorm, layernorm, residual)",
        ),
        (
            "trian.lr=1",
            "trian: unknown key in --set; did you mean 'train'? (allowed: name, seed, dtype, "
            "data, model, train, log, analysis)",
        ),
        ("train.lr.x=1", "train.lr.x: unknown key in --set; train.lr is a value, not a section"),
        ("train.lr", "--set 'train.lr': expected key.path=value, e.g. --set train.lr=0.01"),
        ("=0.1", "--set '=0.1': expected key.path=value, e.g. --set train.lr=0.01"),
        ("train..lr=1", "--set 'train..lr=1': expected key.path=value, e.g. --set train.lr=0.01"),
        ("train.lr=-1", "train.lr: must be > 0, got -1"),
        (
            "train.batch_size=fulll",
            "train.batch_size: must be an integer >= 1 or 'full', "
            "got 'fulll'; did you mean 'full'?",
        ),
        (
            "name=[x",
            "--set 'name=[x': the value is not valid YAML "
            "(expected ',' or ']', but got '<stream end>')",
        ),
    ],
)
def test_bad_override(tmp_path, override, message):
    path = write_config(tmp_path, "")
    assert str(load_error(path, [override])) == message


def test_bad_seed_option(tmp_path):
    error = load_error(write_config(tmp_path, ""), seed=-3)
    assert str(error) == "seed: must be >= 0, got -3"


def test_override_value_of_infinity_is_refused():
    with pytest.raises(ConfigError, match=r"^train\.lr: must be a finite number, got inf$"):
        config_from_dict({}, ["train.lr=.inf"])


# --- errors name where the bad key came from: the file, the dict, --set, overrides ----------


def test_a_dict_config_error_names_the_dict_not_set():
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"model": {"depht": 3}})
    assert str(caught.value).startswith(
        "model.depht: unknown key in the config dict; did you mean 'depth'?"
    )
    assert caught.value.key_path == "model.depht"
    with pytest.raises(ConfigError, match=r"^trian: unknown key in my dict; did you mean"):
        config_from_dict({"trian": {}}, source="my dict")


def test_overrides_of_the_python_api_are_not_called_set(tmp_path):
    for call in (
        lambda: config_from_dict({}, ["train.lrr=1"]),
        lambda: load_config(write_config(tmp_path, ""), ["train.lrr=1"]),
    ):
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value).startswith("train.lrr: unknown key in overrides; did you mean")
    with pytest.raises(ConfigError, match=r"^overrides 'train\.lr': expected key\.path=value"):
        config_from_dict({}, ["train.lr"])
    with pytest.raises(ConfigError, match=r"^train\.lrr: unknown key in --set; did you mean"):
        config_from_dict({}, ["train.lrr=1"], origin="--set")


def test_a_sweep_spec_is_not_taken_for_a_config():
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"name": "s", "config": {}, "seeds": [0, 1]})
    assert str(caught.value) == (
        "the config dict is a sweep spec (it has 'config'), not a run config: "
        "run it with `gradlab sweep`"
    )
