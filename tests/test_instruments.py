"""The instrument taxonomy: table contents, GM mapping, name lookup, sampler weights."""

import numpy as np
import pytest

from jointist_jax import instruments


def test_forty_conditions_with_empty_last():
    assert len(instruments.classes()) == instruments.CONDITION_SIZE == 40
    assert instruments.CLASS_NAMES[instruments.EMPTY_INDEX] == "Empty"
    assert instruments.CLASS_NAMES[0] == "Piano"
    assert instruments.CLASS_NAMES[38] == "Drums"


def test_every_program_maps_to_a_real_class():
    seen = {instruments.class_of_program(p) for p in range(129)}
    assert seen == set(range(39))
    assert instruments.class_of_program(128) == 38
    assert instruments.class_of_program(33) == 10  # Electric Bass (finger)
    assert instruments.class_of_program(55) == 15  # Orchestra Hit -> Strings
    assert instruments.class_of_program(69) == 22  # English Horn -> Horn
    with pytest.raises(ValueError, match="129"):
        instruments.class_of_program(129)


def test_gm_programs_column_agrees_with_program_table():
    for c in instruments.classes()[:39]:
        for program in c.gm_programs:
            assert instruments.class_of_program(program) == c.index


def test_output_programs_and_drum_flag():
    assert instruments.output_program(10) == (38, False)
    assert instruments.output_program(38) == (0, True)
    assert instruments.output_program(15) == (48, False)
    with pytest.raises(ValueError, match="Empty"):
        instruments.output_program(39)


@pytest.mark.parametrize("name, expected", [
    ("piano", "Piano"), ("PIANO", "Piano"), ("drums", "Drums"), ("bass", "Bass"),
    ("guitar", "Electric Guitar"), ("Acoustic Grand Piano", "Piano"),
    ("electric_bass_(finger)", "Bass"), ("  synth   pad ", "Synth Pad"), ("Violin", "Violin"),
    ("Slap Bass 1", "Bass"), ("vocals", "Voice"), ("english-horn", "Horn"),
])
def test_name_lookup(name, expected):
    assert instruments.CLASS_NAMES[instruments.class_index(name)] == expected


def test_unknown_name_lists_valid_names():
    with pytest.raises(instruments.UnknownInstrumentError) as err:
        instruments.class_index("kazoo")
    message = str(err.value)
    assert "kazoo" in message and "Electric Guitar" in message and "drums" in message


def test_empty_is_not_a_user_instrument():
    with pytest.raises(instruments.UnknownInstrumentError):
        instruments.class_index("empty")


def test_class_indices_deduplicates_in_order():
    assert instruments.class_indices(["bass", "Drums", "Bass"]) == [10, 38]


def test_condition_one_hot():
    onehot = instruments.condition_one_hot([0, 39])
    assert onehot.shape == (2, 40) and onehot.dtype == np.float32
    assert onehot[0, 0] == 1 and onehot[1, 39] == 1 and onehot.sum() == 2
    with pytest.raises(ValueError, match="0..39"):
        instruments.condition_one_hot([40])


def test_occurrence_weights_match_reference_table():
    w = instruments.occurrence_weights(0.5)
    assert w.shape == (39,)
    np.testing.assert_allclose(w[[0, 12, 34, 38]], [0.0354, 0.4472, 1.0, 0.0275], atol=1e-4)
    assert np.all(instruments.occurrence_weights(0.0) == 1.0)


def test_drum_stem_rule():
    assert instruments.is_drum_stem("pop_kit", 0)
    assert instruments.is_drum_stem(None, 128)
    assert not instruments.is_drum_stem("grand_piano", 0)
