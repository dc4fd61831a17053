"""The input spec (jointist_jax/data/spec.py): one value with every input-pipeline setting, derived
from a stage and a config by one function."""

import dataclasses

import pytest

from configs import ir as ir_config
from jointist_jax.data import spec as spec_lib
from jointist_jax import stages


def test_the_spec_of_a_stage_carries_every_setting_of_the_config():
    config = ir_config.get_config("runlocal")
    # Every field away from its default, so that none can be dropped or hard-coded unnoticed.
    config.seed = 5
    config.data.update(global_batch=4, num_positive=2, num_negative=3, temperature=0.25,
                       transcribe_negatives=True, clip_seconds=1.5, crop_sampling="all_audio")
    spec = spec_lib.input_spec(stages.get("joint"), config)
    defaults = spec_lib.InputSpec(global_batch=1)
    assert spec == dataclasses.replace(
        defaults, global_batch=4, num_positive=2, num_negative=3, temperature=0.25, transcribe_negatives=True,
        clip_seconds=1.5, crop_sampling="all_audio", targets=True, stems=True, seed=5)
    for name in ("num_positive", "num_negative", "temperature", "transcribe_negatives", "clip_seconds",
                 "crop_sampling", "seed"):
        assert getattr(spec, name) != getattr(defaults, name), name
    ir = spec_lib.input_spec(stages.get("ir"), config)
    assert (ir.targets, ir.stems) == (False, False)
    separation = spec_lib.input_spec(stages.get("separation"), config, random_crop=False)
    assert (separation.targets, separation.stems, separation.random_crop) == (False, True, False)


def test_the_spec_names_the_batch_fields_and_shapes():
    config = ir_config.get_config("runlocal")
    config.data.update(num_positive=2, num_negative=3, clip_seconds=1.5)
    spec = spec_lib.input_spec(stages.get("transcription"), config)
    assert (spec.clip_samples, spec.sample_rate, spec.rows, spec.frames) == (24000, 16000, 5, 151)
    fields = {name: shape for name, _, shape in spec.fields()}
    assert fields["waveform"] == (24000,) and fields["frame_roll"] == (5, 151, 88)
    assert "source" not in fields and "valid" not in fields
    evaluation = spec_lib.input_spec(stages.get("separation"), config, random_crop=False).fields()
    assert [(n, s) for n, _, s in evaluation if n in ("source", "valid", "frame_roll")] == [
        ("source", (5, 24000)), ("valid", ())]
    recognizer = spec_lib.InputSpec(global_batch=2, clip_seconds=1.5)
    assert [name for name, _, _ in recognizer.fields()] == ["waveform", "instruments"]


@pytest.mark.parametrize("field, value, message", [
    ("crop_sampling", "per_song", "crop_sampling must be one of"),
    ("seed", -1, "seed must be >= 0"),
    ("num_negative", -2, "num_positive/num_negative must be >= 0"),
])
def test_bad_settings_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        spec_lib.InputSpec(global_batch=2, **{field: value})
