"""Each family of names is defined once (gradlab.vocabulary) and every reader agrees with it:
the engine's registries, config validation, the CLI's choices, the theory, docs/config.md."""

import re
from pathlib import Path

import pytest

from gradlab import analysis, config, theory, vocabulary
from gradlab.cli import theory_command
from gradlab.engine import ACTIVATIONS, LOSSES, clip, init, model, optim

DOCS = (Path(__file__).parent.parent / "docs" / "config.md").read_text(encoding="utf-8")


def _docs_allowed(key: str) -> tuple[str, ...]:
    """The names in the 'allowed' column of ``key``'s row in docs/config.md."""
    row = next(line for line in DOCS.splitlines() if line.startswith(f"| `{key}` |"))
    return tuple(re.findall(r"`([^`]+)`", row.split("|")[4]))


@pytest.mark.parametrize(
    "key, names",
    [
        ("data.source", vocabulary.DATA_SOURCES),
        ("model.activation", vocabulary.ACTIVATIONS),
        ("model.norm", vocabulary.NORMS),
        ("model.init.scheme", vocabulary.INIT_SCHEMES),
        ("train.loss", ("auto", *vocabulary.LOSSES)),
        ("train.optimizer", vocabulary.OPTIMIZERS),
        ("train.clip.mode", vocabulary.CLIP_MODES),
        ("model.residual.branch", vocabulary.RESIDUAL_BRANCHES),
        ("model.residual.norm_position", vocabulary.NORM_POSITIONS),
        ("analysis.spectrum.at", vocabulary.SPECTRUM_TIMES),
        ("train.schedule.kind", vocabulary.SCHEDULES),
    ],
)
def test_config_choices_and_docs_agree_with_the_vocabulary(key, names):
    assert config.CHOICES[key] == names
    assert _docs_allowed(key) == names


def test_engine_registries_agree_with_the_vocabulary():
    assert tuple(ACTIVATIONS) == vocabulary.ACTIVATIONS
    assert tuple(LOSSES) == vocabulary.LOSSES
    assert tuple(init.WEIGHT_INITS) == vocabulary.INIT_SCHEMES
    assert clip.CLIP_MODES == vocabulary.CLIP_MODES
    assert optim.OPTIMIZERS == vocabulary.OPTIMIZERS
    assert model.NORMS == vocabulary.NORMS
    for name in vocabulary.OPTIMIZERS:  # every name is handled, not only listed
        optim.make_optimizer(name, 0.1)


def test_cli_and_theory_choices_agree_with_the_vocabulary():
    choices = {
        param.name: param.type.choices
        for param in theory_command.params
        if param.name in ("activation", "norm", "residual", "norm_position")
    }
    assert choices == {
        "activation": vocabulary.ACTIVATIONS,
        "norm": vocabulary.NORMS,
        "residual": vocabulary.RESIDUAL_BRANCHES,
        "norm_position": vocabulary.NORM_POSITIONS,
    }
    assert theory.ACTIVATIONS == vocabulary.ACTIVATIONS and theory.NORMS == vocabulary.NORMS
    for name in vocabulary.ACTIVATIONS:  # every name has a theory, with every norm
        for norm in vocabulary.NORMS:
            prediction = theory.predict(name, 1.0, norm=norm, batch_size=8)
            assert prediction.applicable and prediction.factor > 0


def test_one_verdict_rule():
    assert analysis.verdict is vocabulary.regime_of
    results = {vocabulary.regime_of(m) for m in (0.5, 1.0, 2.0, float("inf"), None, float("nan"))}
    assert results == set(vocabulary.REGIMES)


def test_a_half_added_name_is_refused():
    with pytest.raises(ImportError, match="missing from the vocabulary"):
        vocabulary.check_registry(
            "activation", (*vocabulary.ACTIVATIONS, "swish"), vocabulary.ACTIVATIONS
        )
