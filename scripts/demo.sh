#!/usr/bin/env bash
# The main job on an embedded synthetic dataset, end to end on this machine's CPU.
# Everything it writes goes under demo/ (git-ignored). Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEMO=demo
mkdir -p "$DEMO"
start=$(date +%s)

echo "== 1. Render a synthetic Slakh-format dataset (FluidSynth, General MIDI soundfont)"
# At most 3 parts per song (drums, bass and a piano/guitar/strings part; the paper's Slakh songs
# have more): a model trained for minutes on a CPU can learn these.
$PY -m data_pipelines.synth_slakh --out "$DEMO/slakh_synth" --seconds 20 --seed 0 --max_stems 3 \
    --splits train=24,validation=4,test=4 --workers 2

echo "== 2. Pack it into TFRecord clips with tensorflow-datasets"
$PY -m data_pipelines.build_slakh --slakh_dir "$DEMO/slakh_synth" --data_dir "$DEMO/tfds" \
    --hop_seconds 5 --workers 2

echo "== 3. Pre-train the transcriber (transcription:runlocal)"
$PY launch/train.py --config=transcription:runlocal --workdir="$DEMO/workdirs/transcription" \
    --config.data.data_dir="$DEMO/tfds"

echo "== 4. Train transcriber + separator jointly from it (joint_pretrained:runlocal, the paper's pTS)"
$PY launch/train.py --config=joint_pretrained:runlocal --workdir="$DEMO/workdirs/pts" \
    --config.data.data_dir="$DEMO/tfds" --config.init_from="$DEMO/workdirs/transcription"

echo "== 5. Evaluate it on the held-out test songs: every metric of the paper (and MT3's) to TensorBoard"
$PY launch/eval.py --config=joint_pretrained:runlocal --workdir="$DEMO/workdirs/pts" \
    --config.data.data_dir="$DEMO/tfds" --split=test --media_songs=2

echo "== 6. Held-out scores of the trained model beside the same model untrained"
step=$($PY -c "import sys; from jointist_jax import run_dir; print(run_dir.RunDir.at(sys.argv[1]).latest_step())" "$DEMO/workdirs/pts")
$PY scripts/compare_untrained.py --run "$DEMO/workdirs/pts" --data_dir "$DEMO/tfds" --split test \
    --trained_metrics "$DEMO/workdirs/pts/eval/test/$step/metrics.json"

echo "== 7. Transcribe and separate a held-out test song with the trained model"
song="$DEMO/slakh_synth/test/Track00029"
# The song's instruments, as the user would name them (the demo trains no recognizer).
names=$($PY -c "
import sys, yaml
from jointist_jax import instruments
stems = yaml.safe_load(open(sys.argv[1]))['stems'].values()
classes = sorted({instruments.class_of_program(s['program_num']) for s in stems})
print(','.join(instruments.CLASS_NAMES[c] for c in classes))" "$song/metadata.yaml")
mkdir -p "$DEMO/songs"
cp "$song/mix.flac" "$DEMO/songs/Track00029.flac"
$PY launch/transcribe.py --checkpoint "$DEMO/workdirs/pts" --audio "$DEMO/songs/Track00029.flac" \
    --instruments "$names" --separate --out "$DEMO/transcriptions" --quiet
echo "MIDI, notes, piano roll, posteriorgrams and stems ($names):"
ls -R "$DEMO/transcriptions/Track00029"
echo "Notes per instrument in the MIDI (transcribed) and in the song's own MIDI (truth):"
$PY -c "
import sys, glob, pretty_midi
for label, path in (('transcribed', glob.glob(sys.argv[1] + '/*.mid')[0]), ('truth', sys.argv[2])):
    midi = pretty_midi.PrettyMIDI(path)
    print(f'  {label:<12}', ', '.join(f'{i.name or pretty_midi.program_to_instrument_name(i.program)}: {len(i.notes)}'
                                      for i in midi.instruments))" "$DEMO/transcriptions/Track00029" "$song/all_src.mid"

echo "== done in $(( $(date +%s) - start )) s. TensorBoard: .venv/bin/tensorboard --logdir $DEMO/workdirs"
