"""Composes short multi-instrument songs for the synthetic Slakh-format dataset.

A song has a tempo, a key (major or natural minor), a looping chord progression and 4-9 parts.
Every song has drums, a bass line and at least one of piano / guitar / strings (which one
rotates with the track number, so any three consecutive tracks cover all three). The remaining
parts are drawn from a pool of roles (comping chords, sustained pads, melodies, arpeggios, low
counter-lines, stabs and hits) played by General MIDI programs spread over 29 of the 39 classes.
Slakh's near-empty classes (Synth Effects, Ethnic, Percussive, Sound Effects, each seen once in
Slakh) are never drawn.

All pitches here are *sounding* pitches. :mod:`data_pipelines.synth.midi` turns parts into MIDI
and applies Slakh's bass-octave convention when writing files.

Everything is a pure function of ``(seed, track_number, seconds)``: the random generator is
``np.random.default_rng([seed, track_number])``, so a track's song does not depend on the split
sizes, on the number of workers or on which other tracks are rendered.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jointist_jax import instruments

DRUMS_PROGRAM = instruments.DRUMS_PROGRAM

# Sounding ranges (lowest, highest MIDI pitch) of every GM program the composer uses, from the
# usual orchestration/instrument ranges. Class limits are the union over a class's programs.
PROGRAM_RANGES: dict[int, tuple[int, int]] = {
    # Pianos (A0-C8), electric pianos (E1-G7), harpsichord, clavinet.
    0: (21, 108), 1: (21, 108), 2: (21, 108), 3: (21, 108),
    4: (28, 103), 5: (28, 103), 6: (29, 89), 7: (29, 88),
    # Chromatic percussion: celesta, glockenspiel, music box, vibraphone, marimba, xylophone,
    # tubular bells, dulcimer.
    8: (60, 108), 9: (79, 108), 10: (60, 96), 11: (53, 89), 12: (36, 96), 13: (65, 108),
    14: (60, 77), 15: (48, 84),
    # Organs, accordions, harmonica.
    16: (36, 96), 17: (36, 96), 18: (36, 96), 19: (36, 96), 20: (36, 96),
    21: (41, 89), 23: (41, 89), 22: (60, 96),
    # Guitars (E2 upwards).
    24: (40, 84), 25: (40, 84), 26: (40, 86), 27: (40, 86), 28: (40, 86), 29: (40, 86),
    30: (40, 86),
    # Basses: E1-G3.
    32: (28, 55), 33: (28, 55), 34: (28, 55), 35: (28, 55), 36: (28, 55), 37: (28, 55),
    38: (28, 55), 39: (28, 55),
    # Violin G3-A7, viola C3-E6, cello C2-E5, contrabass E1-C4.
    40: (55, 105), 41: (48, 88), 42: (36, 76), 43: (28, 60),
    # String ensembles, tremolo and pizzicato strings.
    44: (36, 96), 45: (36, 96), 48: (36, 96), 49: (36, 96), 50: (36, 96), 51: (36, 96),
    # Harp C1-G7, timpani D2-A3.
    46: (24, 103), 47: (38, 57),
    # Choir aahs, voice oohs, synth voice: E2-C6.
    52: (40, 84), 53: (40, 84), 54: (40, 84),
    # Brass: trumpet, trombone, tuba, muted trumpet, horn, brass sections.
    56: (54, 82), 57: (40, 72), 58: (28, 58), 59: (54, 82), 60: (41, 77),
    61: (40, 84), 62: (40, 84), 63: (40, 84),
    # Saxophones: soprano, alto, tenor, baritone.
    64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 68),
    # Reeds: oboe, English horn, bassoon, clarinet.
    68: (58, 91), 69: (52, 81), 70: (34, 75), 71: (50, 91),
    # Pipes: piccolo D5-C8, flute C4-C7, recorder, pan flute, shakuhachi, ocarina.
    72: (74, 108), 73: (60, 96), 74: (72, 98), 75: (60, 96), 77: (55, 86), 79: (60, 84),
    # Synth leads and pads.
    80: (36, 96), 81: (36, 96), 82: (36, 96), 83: (36, 96), 84: (36, 96), 85: (36, 96),
    86: (36, 96), 87: (36, 96),
    88: (36, 96), 89: (36, 96), 90: (36, 96), 91: (36, 96), 92: (36, 96), 93: (36, 96),
    94: (36, 96), 95: (36, 96),
}

# GM percussion keys used by the drum patterns; all lie in 35-59, inside the 24-90 the
# Slakh loader keeps for drum stems.
KICKS = (35, 36)
SNARES = (38, 40)
SIDE_STICK, CLAP = 37, 39
CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 42, 44, 46
CRASHES = (49, 57)
RIDE = 51
TOMS = (50, 48, 47, 45, 43, 41)  # high to low
TAMBOURINE, COWBELL = 54, 56
DRUM_PITCH_RANGE = (35, 59)

# The harmony instrument every song has one of: (name, role, programs).
CORE_PARTS = (
    ("piano", "chords", (0, 1, 2, 3)),
    ("guitar", "chords", (24, 25, 26, 27, 28, 29, 30)),
    ("strings", "pad", (48, 49, 50, 51, 44)),
)

# Extra parts: role -> (draw weight, programs).
EXTRA_ROLES: dict[str, tuple[float, tuple[int, ...]]] = {
    "chords": (0.20, (0, 1, 4, 5, 6, 7, 16, 17, 18, 24, 25, 26, 27, 28, 29, 30)),
    "pad": (0.20, (48, 49, 50, 51, 44, 88, 89, 90, 91, 92, 93, 94, 95, 19, 20, 21, 23, 52,
                   53, 54)),
    "lead": (0.25, (80, 81, 82, 83, 84, 85, 86, 87, 73, 72, 74, 75, 77, 79, 68, 69, 71, 64,
                    65, 66, 56, 59, 60, 57, 40, 22, 54, 29, 30)),
    "arpeggio": (0.15, (46, 8, 9, 10, 11, 12, 13, 15, 6, 7, 4, 24, 25, 0, 45)),
    "counter": (0.12, (42, 43, 58, 70, 41, 57, 67, 32, 35)),
    "stabs": (0.08, (47, 14, 61, 62, 63)),
}

# Where each role likes to sit (centre pitch of a two-octave window, clamped to the range).
ROLE_CENTRE = {"chords": 62, "pad": 62, "lead": 74, "arpeggio": 68, "counter": 45,
               "stabs": 62, "bass": 38}

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Chord progressions as 0-based scale degrees.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0),
              (0, 3, 0, 4), (0, 2, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4),
              (0, 2, 5, 6)),
}
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

MIN_STEMS, MAX_STEMS = 4, 9
MIN_CORE_STEMS = 3  # drums, bass and the core part: the least ``max_stems`` allows
# Shorter songs cannot hold a note of every part.
MIN_SECONDS = 0.5
MIN_NOTE_SECONDS = 0.02
# A note must start this long before the end of the song to be audible at all.
TAIL_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class ComposedNote:
    """One note as the composer writes it (before MIDI and rendering): times in seconds, sounding
    MIDI pitch, MIDI velocity 1-127. The package's own notes are :class:`jointist_jax.music.Notes`."""

    start: float
    end: float
    pitch: int
    velocity: int


@dataclasses.dataclass(frozen=True)
class Part:
    """One stem of a song: GM program 0-127, or 128 (Slakh's drum program) for drums."""

    program: int
    role: str
    notes: tuple[ComposedNote, ...]

    @property
    def is_drum(self) -> bool:
        return self.program == DRUMS_PROGRAM


@dataclasses.dataclass(frozen=True)
class Chord:
    """A chord sounding from ``start`` to ``end`` seconds; ``pitch_classes[0]`` is the root."""

    start: float
    end: float
    pitch_classes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Song:
    """A composed song: its harmony and its parts (sounding pitches)."""

    seconds: float
    tempo: float
    key: str
    mode: str
    progression: tuple[int, ...]
    chords: tuple[Chord, ...]
    parts: tuple[Part, ...]

    @property
    def beat(self) -> float:
        return 60.0 / self.tempo

    @property
    def scale(self) -> tuple[int, ...]:
        root = KEY_NAMES.index(self.key)
        return tuple((root + s) % 12 for s in (MAJOR if self.mode == "major" else MINOR))

    def chord_at(self, t: float) -> Chord:
        """The chord sounding at time ``t`` (the last one for ``t`` past the end)."""
        for chord in self.chords:
            if chord.start <= t < chord.end:
                return chord
        return self.chords[-1]


def class_pitch_limits(class_index: int) -> tuple[int, int]:
    """(lowest, highest) sounding pitch the composer may give a class (union of its programs).

    Drums: the GM percussion keys the patterns use.
    """
    if class_index == instruments.class_of_program(DRUMS_PROGRAM):
        return DRUM_PITCH_RANGE
    ranges = [r for p, r in PROGRAM_RANGES.items()
              if instruments.class_of_program(p) == class_index]
    if not ranges:
        raise ValueError(f"the composer never uses class {instruments.CLASS_NAMES[class_index]!r}")
    return min(lo for lo, _ in ranges), max(hi for _, hi in ranges)


def compose_song(seed: int, track_number: int, seconds: float, max_stems: int = MAX_STEMS) -> Song:
    """Composes the song of track ``track_number`` (1-based) of a dataset rendered with ``seed``.

    ``max_stems`` (3 to :data:`MAX_STEMS`) caps the number of parts: the song is the one composed
    without the cap, keeping its drums, bass, core part and first extra parts (all its random
    draws are the same, so the cap only removes parts).

    Raises:
      ValueError: if ``seconds`` is below :data:`MIN_SECONDS`, ``track_number`` is below 1 or
        ``max_stems`` is outside 3..MAX_STEMS.
    """
    if not MIN_CORE_STEMS <= max_stems <= MAX_STEMS:
        raise ValueError(f"max_stems must be in {MIN_CORE_STEMS}..{MAX_STEMS} (drums, bass and a core part "
                         f"at least), got {max_stems}")
    if not seconds >= MIN_SECONDS:
        raise ValueError(f"song length must be at least {MIN_SECONDS} s, got {seconds} s")
    if track_number < 1:
        raise ValueError(f"track numbers start at 1, got {track_number}")
    rng = np.random.default_rng([seed, track_number])
    tempo = float(rng.integers(70, 161))
    mode = "major" if rng.random() < 0.6 else "minor"
    key = KEY_NAMES[int(rng.integers(12))]
    progressions = PROGRESSIONS[mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    # Harmonic rhythm: slow songs change chord every 2 beats or every bar, fast ones every bar
    # or every two bars.
    chord_beats = int(rng.choice([2, 4]) if tempo < 100 else rng.choice([4, 4, 8]))
    skeleton = Song(seconds, tempo, key, mode, progression, (), ())
    chords = _chords(skeleton, chord_beats)
    song = dataclasses.replace(skeleton, chords=chords)

    n_stems = int(rng.integers(MIN_STEMS, MAX_STEMS + 1))
    _, core_role, core_programs = CORE_PARTS[(track_number - 1) % len(CORE_PARTS)]
    plan = [("drums", DRUMS_PROGRAM), ("bass", int(rng.integers(32, 40))),
            (core_role, int(rng.choice(core_programs)))]
    roles = list(EXTRA_ROLES)
    weights = np.array([EXTRA_ROLES[r][0] for r in roles])
    for _ in range(n_stems - len(plan)):
        role = roles[int(rng.choice(len(roles), p=weights / weights.sum()))]
        plan.append((role, int(rng.choice(EXTRA_ROLES[role][1]))))
    # Slakh's stem order carries no meaning, so neither does ours: drums are not always S00.
    order = rng.permutation(len(plan))
    parts = tuple(_make_part(rng, song, *plan[i]) for i in order)
    # The cap is applied after every draw, so a capped song is the uncapped one minus its last extras.
    kept = tuple(part for i, part in zip(order, parts) if i < max_stems)
    return dataclasses.replace(song, parts=kept)


def _chords(song: Song, chord_beats: int) -> tuple[Chord, ...]:
    scale = song.scale
    span = chord_beats * song.beat
    out = []
    for i in range(max(1, math.ceil(song.seconds / span))):
        degree = song.progression[i % len(song.progression)]
        pcs = tuple(scale[(degree + k) % 7] for k in (0, 2, 4))
        out.append(Chord(i * span, min((i + 1) * span, song.seconds), pcs))
    return tuple(out)


def _make_part(rng: np.random.Generator, song: Song, role: str, program: int) -> Part:
    density = float(rng.uniform(0.3, 1.0))
    velocity = int(rng.integers(55, 111))
    if role == "drums":
        notes = _drums(rng, song, density, velocity)
    else:
        window = _window(program, ROLE_CENTRE[role])
        generator = {"bass": _bass, "chords": _comp, "pad": _pad, "lead": _lead,
                     "arpeggio": _arpeggio, "counter": _counter, "stabs": _stabs}[role]
        notes = generator(rng, song, window, density, velocity, program)
    final = _finalise(notes, song.seconds)
    if not final:
        # Sparse rhythms on very short songs can leave a part silent; a stem must have notes.
        pitch = (int(rng.choice([KICKS[1], SNARES[0]])) if role == "drums" else
                 _nearest(song.chords[0].pitch_classes[0], window, sum(window) / 2))
        final = _finalise([(0.0, min(song.beat, song.seconds), pitch, velocity)], song.seconds)
    return Part(program, role, final)


def _window(program: int, centre: int) -> tuple[int, int]:
    """A two-octave window around ``centre``, moved and cut to fit the program's range."""
    lo, hi = PROGRAM_RANGES[program]
    centre = min(max(centre, lo + 6), hi - 6)
    return max(lo, centre - 12), min(hi, centre + 12)


def _nearest(pitch_class: int, window: tuple[int, int], target: float) -> int:
    """The pitch of ``pitch_class`` inside ``window`` closest to ``target``."""
    candidates = [p for p in range(window[0], window[1] + 1) if p % 12 == pitch_class]
    return min(candidates, key=lambda p: (abs(p - target), p))


def _voicing(chord: Chord, window: tuple[int, int], centre: float, size: int) -> list[int]:
    """``size`` distinct chord tones inside ``window`` around ``centre`` (close position)."""
    pcs = list(chord.pitch_classes)
    pitches = sorted({_nearest(pc, window, centre) for pc in pcs})
    # Add octave doublings of the root and fifth until the voicing has ``size`` notes.
    extra = [pcs[0], pcs[2], pcs[0]]
    step = 12
    while len(pitches) < size and extra:
        pc = extra.pop(0)
        for p in (max(pitches) + step, min(pitches) - step):
            cand = _nearest(pc, window, p)
            if cand not in pitches:
                pitches.append(cand)
                break
        pitches.sort()
    return pitches


def _vel(rng: np.random.Generator, base: int, accent: bool = False) -> int:
    v = base + int(rng.integers(-8, 9)) + (10 if accent else 0)
    return int(min(127, max(1, v)))


def _grid(song: Song, step_beats: float):
    """Yields (time, step index, is a strong beat) on a grid of ``step_beats`` beats."""
    step = step_beats * song.beat
    for i in range(math.ceil(song.seconds / step)):
        t = i * step
        beat_pos = i * step_beats
        yield t, i, abs(beat_pos - round(beat_pos)) < 1e-9 and round(beat_pos) % 2 == 0


def _drums(rng, song, density, velocity):
    style = str(rng.choice(["rock", "four", "halftime", "latin"]))
    kick, snare = int(rng.choice(KICKS)), int(rng.choice(SNARES))
    crash = int(rng.choice(CRASHES))
    hat_step = 1 if density > 0.75 else 2  # 16ths or 8ths
    patterns = {
        "rock": ({0, 8} | ({10} if density > 0.5 else set()), {4, 12}),
        "four": ({0, 4, 8, 12}, {4, 12}),
        "halftime": ({0, 6} if density > 0.5 else {0}, {8}),
        "latin": ({0, 3, 8, 11}, {4, 12}),
    }
    kicks, snares = patterns[style]
    backbeat = CLAP if style == "four" and rng.random() < 0.5 else snare
    ride = style == "latin" or rng.random() < 0.2
    fill_bars = rng.random() < density
    sixteenth = song.beat / 4
    notes = []
    n_bars = math.ceil(song.seconds / (4 * song.beat))
    for bar in range(n_bars):
        fill = fill_bars and bar % 4 == 3
        for s in range(16):
            t = (bar * 16 + s) * sixteenth
            hit = []
            if fill and s >= 8:
                if s % 2 == 0 or density > 0.6:
                    hit.append((TOMS[min((s - 8) * len(TOMS) // 8, len(TOMS) - 1)], velocity + 5))
            else:
                if s in kicks:
                    hit.append((kick, velocity + 8))
                if s in snares:
                    hit.append((backbeat, velocity + 5))
                elif s % 2 == 1 and rng.random() < 0.15 * density:
                    hit.append((snare, velocity - 35))  # ghost note
                if s % hat_step == 0:
                    if ride:
                        hit.append((RIDE, velocity - 20 + (10 if s % 4 == 0 else 0)))
                    elif style == "four" and s % 4 == 2:
                        hit.append((OPEN_HAT, velocity - 15))
                    else:
                        hit.append((CLOSED_HAT, velocity - 25 + (12 if s % 4 == 0 else 0)))
                if style == "latin" and s in (0, 6, 10) and density > 0.5:
                    hit.append((COWBELL, velocity - 20))
                if style == "halftime" and s in (4, 12) and density > 0.6:
                    hit.append((TAMBOURINE, velocity - 25))
                if style == "rock" and s % 4 == 2 and density > 0.9:
                    hit.append((PEDAL_HAT, velocity - 30))
            if s == 0 and bar % 4 == 0:
                hit.append((crash, velocity + 5))
            if s == 15 and fill:
                hit.append((SIDE_STICK, velocity - 20))
            for pitch, v in hit:
                notes.append((t, t + 0.1, pitch, _vel(rng, v)))
    return notes


def _bass(rng, song, window, density, velocity, program):
    del program
    style = str(rng.choice(["whole", "root_fifth", "quarters", "eighths", "walking"],
                           p=[0.15, 0.2, 0.25, 0.25, 0.15] if density > 0.5
                           else [0.35, 0.3, 0.2, 0.1, 0.05]))
    low = (window[0], min(window[1], window[0] + 16))  # bass sits in its lowest octave and a bit
    step_beats = {"whole": None, "root_fifth": 2.0, "quarters": 1.0, "eighths": 0.5,
                  "walking": 1.0}[style]
    notes = []
    if step_beats is None:
        for chord in song.chords:
            root = _nearest(chord.pitch_classes[0], low, low[0] + 5)
            notes.append((chord.start, chord.end - 0.02, root, _vel(rng, velocity, True)))
        return notes
    step = step_beats * song.beat
    previous = None
    for t, i, strong in _grid(song, step_beats):
        chord = song.chord_at(t + 1e-6)
        root = _nearest(chord.pitch_classes[0], low, low[0] + 5)
        at_change = abs(t - chord.start) < 1e-6
        if at_change:
            pitch = root  # the bass always lands on the root when the chord changes
        elif style == "root_fifth":
            pitch = _nearest(chord.pitch_classes[2], window, root + 7)
        elif style == "eighths":
            pitch = root + 12 if (i % 4 == 3 and root + 12 <= window[1]) else root
        elif style == "walking" and previous is not None:
            pc = int(rng.choice(chord.pitch_classes + song.scale[:1]))
            pitch = _nearest(pc, window, previous)
        else:
            pitch = root
        previous = pitch
        if not at_change and rng.random() > 0.6 + 0.4 * density:
            continue  # a rest, never on a chord change
        notes.append((t, t + 0.9 * step, pitch, _vel(rng, velocity, strong)))
    return notes


def _comp(rng, song, window, density, velocity, program):
    strum = 24 <= program <= 31
    rhythm = str(rng.choice(["whole", "half", "quarter", "offbeat", "syncopated"]))
    sixteenths = {"whole": None, "half": (0, 8), "quarter": (0, 4, 8, 12),
                  "offbeat": (2, 6, 10, 14), "syncopated": (0, 3, 6, 10, 12)}[rhythm]
    size = int(rng.integers(3, 5))
    centre = (window[0] + window[1]) / 2
    notes = []
    hits = []
    if sixteenths is None:
        hits = [(c.start, c.end - c.start, True) for c in song.chords]
    else:
        sixteenth = song.beat / 4
        for bar in range(math.ceil(song.seconds / (4 * song.beat))):
            for k, s in enumerate(sixteenths):
                nxt = sixteenths[k + 1] if k + 1 < len(sixteenths) else 16
                length = (nxt - s) * sixteenth * (0.9 if density > 0.5 else 0.6)
                hits.append(((bar * 16 + s) * sixteenth, length, s == 0))
    for t, length, strong in hits:
        if not strong and rng.random() > 0.5 + 0.5 * density:
            continue
        chord = song.chord_at(t + 1e-6)
        voicing = _voicing(chord, window, centre, size)
        down = rng.random() < 0.7
        for j, pitch in enumerate(voicing if down else voicing[::-1]):
            # A strummed guitar sounds its strings one after another, 8-20 ms apart.
            offset = j * float(rng.uniform(0.008, 0.02)) if strum else 0.0
            notes.append((t + offset, t + length, pitch, _vel(rng, velocity, strong)))
    return notes


def _pad(rng, song, window, density, velocity, program):
    del density, program
    size = int(rng.integers(3, 5))
    centre = (window[0] + window[1]) / 2
    notes = []
    for chord in song.chords:
        for pitch in _voicing(chord, window, centre, size):
            notes.append((chord.start, chord.end - 0.02, pitch, _vel(rng, velocity - 10)))
    return notes


def _lead(rng, song, window, density, velocity, program):
    del program
    scale_pitches = [p for p in range(window[0], window[1] + 1) if p % 12 in song.scale]
    durations = [0.5, 1.0, 1.0, 2.0] if density < 0.6 else [0.25, 0.5, 0.5, 1.0]
    t = float(rng.choice([0.0, 0.0, 1.0])) * song.beat
    index = len(scale_pitches) // 2
    phrase_end = 8 * song.beat
    notes = []
    while t < song.seconds:
        if t >= phrase_end:
            t += float(rng.choice([1.0, 2.0])) * song.beat  # breathe between phrases
            phrase_end = t + 8 * song.beat
            continue
        length = float(rng.choice(durations)) * song.beat
        beat_pos = t / song.beat
        strong = abs(beat_pos - round(beat_pos)) < 1e-6
        if strong:
            # On the beat, land on the chord tone nearest to where the melody is.
            chord = song.chord_at(t + 1e-6)
            index = min(range(len(scale_pitches)),
                        key=lambda k: (scale_pitches[k] % 12 not in chord.pitch_classes,
                                       abs(k - index)))
        else:
            index += int(rng.choice([-2, -1, -1, 1, 1, 2]))
            index = min(max(index, 0), len(scale_pitches) - 1)
        if rng.random() > 0.15 + 0.2 * (1 - density):
            notes.append((t, t + 0.95 * length, scale_pitches[index], _vel(rng, velocity, strong)))
        t += length
    return notes


def _arpeggio(rng, song, window, density, velocity, program):
    step_beats = 0.25 if density > 0.7 else 0.5
    ringing = program in (46, 8, 9, 10, 11, 12, 13, 14, 15)  # harp and mallets let notes ring
    step = step_beats * song.beat
    shape = str(rng.choice(["up", "down", "updown"]))
    notes = []
    for t, i, strong in _grid(song, step_beats):
        chord = song.chord_at(t + 1e-6)
        tones = _voicing(chord, window, (window[0] + window[1]) / 2, 4)
        cycle = {"up": tones, "down": tones[::-1], "updown": tones + tones[-2:0:-1]}[shape]
        pitch = cycle[i % len(cycle)]
        length = step * (2.0 if ringing else 0.9)
        notes.append((t, t + length, pitch, _vel(rng, velocity - 5, strong)))
    return notes


def _counter(rng, song, window, density, velocity, program):
    del program
    step_beats = 2.0 if density > 0.5 else 4.0
    step = step_beats * song.beat
    notes = []
    previous = (window[0] + window[1]) / 2
    for t, _, strong in _grid(song, step_beats):
        chord = song.chord_at(t + 1e-6)
        pc = chord.pitch_classes[int(rng.choice([0, 0, 1, 2]))]
        pitch = _nearest(pc, window, previous)
        previous = pitch
        notes.append((t, t + 0.95 * step, pitch, _vel(rng, velocity - 5, strong)))
    return notes


def _stabs(rng, song, window, density, velocity, program):
    notes = []
    if program == 47 or program == 14:
        # Timpani and tubular bells: the chord root on each chord change, and for timpani on
        # beat 3 of busy songs too.
        for t, i, strong in _grid(song, 2.0):
            chord = song.chord_at(t + 1e-6)
            on_change = abs(t - chord.start) < 1e-6
            if on_change or (program == 47 and density > 0.6):
                pc = chord.pitch_classes[0] if on_change else chord.pitch_classes[2]
                pitch = _nearest(pc, window, (window[0] + window[1]) / 2)
                notes.append((t, t + 1.5 * song.beat, pitch, _vel(rng, velocity, on_change)))
        return notes
    # Brass sections: short chord stabs on 1 and the "and" of 2, sometimes on 4.
    hits = (0, 6, 12) if density > 0.6 else (0, 6)
    sixteenth = song.beat / 4
    for bar in range(math.ceil(song.seconds / (4 * song.beat))):
        for s in hits:
            t = (bar * 16 + s) * sixteenth
            chord = song.chord_at(t + 1e-6)
            for pitch in _voicing(chord, window, (window[0] + window[1]) / 2, 3):
                notes.append((t, t + 1.5 * sixteenth, pitch, _vel(rng, velocity, s == 0)))
    return notes


def _finalise(raw, seconds: float) -> tuple[ComposedNote, ...]:
    """Cleans a part's raw ``(start, end, pitch, velocity)`` notes into sorted :class:`ComposedNote` s.

    Times are rounded to the microsecond and cut at the song end; notes too short or starting
    too close to the end to be heard are dropped. Two notes of the same pitch must not overlap:
    in a MIDI file the first note-off would silence both, so the audio would no longer match the
    labels. An earlier note is therefore cut where the next one of its pitch starts.
    """
    by_pitch: dict[int, list[tuple[float, float, int]]] = {}
    for start, end, pitch, velocity in raw:
        start = round(float(start), 6)
        end = round(min(float(end), seconds), 6)
        if start >= seconds - TAIL_SECONDS:
            continue
        by_pitch.setdefault(int(pitch), []).append((start, end, int(velocity)))
    out = []
    for pitch, notes in by_pitch.items():
        notes.sort(key=lambda n: (n[0], -n[2]))
        for k, (start, end, velocity) in enumerate(notes):
            if k > 0 and start == notes[k - 1][0]:
                continue  # same pitch struck twice at once: keep the loudest
            later = [s for s, _, _ in notes[k + 1:] if s > start]
            if later:
                end = min(end, later[0])
            if end - start >= MIN_NOTE_SECONDS:
                out.append(ComposedNote(start, end, pitch, velocity))
    return tuple(sorted(out, key=lambda n: (n.start, n.pitch)))
