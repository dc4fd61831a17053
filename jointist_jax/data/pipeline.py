"""The training and validation input pipeline: records → crops → examples → global jax.Arrays.

Design (docs/reference.md §4.3, §3.1; docs/deviations.md 8, 12, 13, 14, 29, 30):

* Every setting comes in one :class:`jointist_jax.data.spec.InputSpec`.
* Every host indexes the split once (:mod:`records`: the saved record index, one small read);
  which crops are read is :mod:`crops` (per-track or all-audio sampling, silent-crop redraws, the
  fixed evaluation crops), what one example holds is :mod:`examples`.
* The global batch is a function of ``(seed, step)`` and the data only: global example ``g`` of
  step ``s`` and slot ``b`` is ``g = s * global_batch + b``, and host ``p`` builds slots
  ``p * local_batch .. (p + 1) * local_batch - 1`` by random access. A run is therefore the same on
  any number of hosts and devices, and a pipeline started at step ``n`` reads nothing before it.
  The epoch order of example ``g`` comes from :mod:`crops`; ``default_rng([seed, 0, g])`` then
  draws everything else of the example.
* Evaluation (``random_crop=False``): one crop per track (:func:`crops.eval_crops`), tracks in
  dataset order, dealt round-robin to hosts; one finite pass; rows sampled with
  ``default_rng([seed, 2, track_position])``, the same at every validation; the last batch is
  padded by repeating the host's last crop, with ``valid`` = 0 on the padding rows.
* Rows are built in numpy inside a ``tf.data`` parallel map (deterministic order), batched,
  prefetched, then each host's batch becomes one global ``jax.Array`` sharded along ``data_axis``.
"""

from __future__ import annotations

import math
import threading
from typing import Iterator

import numpy as np

from jointist_jax import storage
from jointist_jax.data import crops, examples, records
from jointist_jax.data.spec import InputSpec

# Examples built at once. Each reads one record (a few MB); from a bucket each read waits tens of
# milliseconds for the first byte, so many reads must be in flight to keep up with local disk.
# 16 kept at least 80 % of the rate without latency under 30 ms to the first byte, for both
# stages' shapes (benchmarks/input_pipeline.py --gcs_emulator --latency; README.md, Benchmarks).
LOCAL_WORKERS, REMOTE_WORKERS = 4, 16
_INFINITE = 1 << 62


def _local_batch(global_batch: int, process_count: int) -> int:
    if global_batch <= 0 or global_batch % process_count:
        raise ValueError(f"global_batch {global_batch} must be a positive multiple of the process "
                         f"count {process_count}")
    return global_batch // process_count


class InputPipeline:
    """Iterator over global batches (dicts of ``jax.Array``); see the module docstring.

    Iterate it for global arrays, or call :meth:`local_batches` for this host's numpy batches.
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, data_dir, split: str, spec: InputSpec, *, mesh=None, start_step: int = 0,
                 process_index: int | None = None, process_count: int | None = None):
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got start_step={start_step}")
        self._jax_layout = process_index is None and process_count is None
        if self._jax_layout:
            import jax
            process_index, process_count = jax.process_index(), jax.process_count()
        elif process_index is None or process_count is None:
            raise ValueError("pass both process_index and process_count, or neither")
        self.process_index, self.process_count = process_index, process_count
        self.spec = spec
        self.global_batch = spec.global_batch
        self.local_batch = _local_batch(spec.global_batch, process_count)
        self.mesh, self.data_axis = mesh, spec.data_axis
        self.seed, self.start_step = spec.seed, start_step
        self.random_crop, self.crop_sampling = spec.random_crop, spec.crop_sampling

        self.dataset = records.open_dataset(data_dir)
        num_workers = spec.num_workers
        if num_workers is None:
            num_workers = REMOTE_WORKERS if storage.is_remote(self.dataset.path) else LOCAL_WORKERS
        self.prefetch, self.num_workers = spec.prefetch, max(1, num_workers)
        self.split = split
        clip_seconds, random_crop = spec.clip_seconds, spec.random_crop
        if self.dataset.sample_rate != spec.sample_rate:
            raise ValueError(f"{str(self.dataset.path)!r} holds {self.dataset.sample_rate}-Hz audio; the input "
                             f"spec reads {spec.sample_rate}-Hz clips (sample_rate)")
        clip = spec.clip_samples
        if self.dataset.clip_samples is not None and clip > self.dataset.clip_samples:
            raise ValueError(f"clip_seconds {clip_seconds} is longer than the dataset's clip "
                             f"({self.dataset.clip_samples / self.dataset.sample_rate} s) in "
                             f"{str(self.dataset.path)!r}")
        # Every host indexes the whole split: the global batch does not depend on the host count.
        self.index = records.split_index(self.dataset, split)
        if len(self.index) == 0:
            raise ValueError(f"split {split!r} of {str(self.dataset.path)!r} has no records")
        self.table = crops.crop_table(self.index, clip, crops.resolve_hop(self.dataset, self.index))
        if random_crop:
            if self.table.total == 0:
                raise ValueError(f"split {split!r}: no valid {clip_seconds}-s crop start in {str(self.dataset.path)!r}")
            self.tracks = crops.TrackStarts.of(self.index, self.table)
            self.examples_per_epoch = (len(self.tracks) if self.crop_sampling == "per_track"
                                       else crops.epoch_size(self.table, clip))
            self.steps_per_epoch = max(1, self.examples_per_epoch // self.global_batch)
            self._slots = None
        else:
            fixed = crops.eval_crops(self.index, self.table, clip, self.dataset.sample_rate, spec.eval_offset_seconds)
            if not fixed:
                raise ValueError(f"split {split!r} of {str(self.dataset.path)!r} has no track at least one "
                                 f"{clip_seconds}-s clip long")
            mine = list(range(process_index, len(fixed), process_count))
            most = math.ceil(len(fixed) / process_count)
            self.steps_per_epoch = math.ceil(most / self.local_batch)
            self.num_tracks = len(fixed)
            # (track position, record, start, valid); padding repeats the host's last crop.
            fill = mine[-1] if mine else 0
            self._slots = [(p, *fixed[p], 1.0) for p in mine]
            self._slots += [(fill, *fixed[fill], 0.0)] * (self.steps_per_epoch * self.local_batch - len(mine))
            if start_step > self.steps_per_epoch:
                raise ValueError(f"start_step {start_step} is past the {self.steps_per_epoch} evaluation steps")
        self.reader = records.RecordReader(self.dataset, self.index)
        self._positions: dict[int, np.ndarray] = {}
        self._positions_lock = threading.Lock()
        self._corruption: records.CorruptRecordError | None = None  # the first, raised by local_batches
        self._iterator = None

    # -- examples --

    def _epoch_positions(self, epoch: int) -> np.ndarray:
        with self._positions_lock:
            if epoch not in self._positions:
                if len(self._positions) >= 2:
                    self._positions.pop(min(self._positions))
                self._positions[epoch] = (
                    crops.epoch_tracks(self.seed, epoch, len(self.tracks)) if self.crop_sampling == "per_track"
                    else crops.epoch_positions(self.seed, epoch, self.table.total, self.examples_per_epoch))
            return self._positions[epoch]

    def global_example(self, i: int) -> int:
        """The global example that local example ``i`` of this host is (module docstring)."""
        step, slot = divmod(i, self.local_batch)
        return step * self.global_batch + self.process_index * self.local_batch + slot

    def example(self, i: int) -> dict[str, np.ndarray]:
        """Local example ``i`` of this host: a pure function of the seed, the global example
        number and the data (evaluation: of the seed, the track and the data)."""
        if self._slots is not None:
            position, record, start, valid = self._slots[i]
            rng = np.random.default_rng([self.seed, 2, position])
            record_data, start = crops.audible_eval_crop(self.index, self.table, (record, start),
                                                         self.reader.read_lazy, self.spec)
            return examples.build_example(record_data, start, rng, self.spec, valid=valid)
        g = self.global_example(i)
        epoch, j = divmod(g, self.examples_per_epoch)
        rng = np.random.default_rng([self.seed, 0, g])
        drawn = int(self._epoch_positions(epoch)[j])
        if self.crop_sampling == "per_track":
            track = drawn
            first = self.tracks.draw(track, rng, self.table)
        else:
            first = self.table.locate(drawn)
            track = int(self.tracks.track_of_record[first[0]])
        record, start = crops.draw_audible_crop(first, lambda: self.tracks.draw(track, rng, self.table),
                                                self.reader.read_lazy, self.spec)
        return examples.build_example(record, start, rng, self.spec)

    def _tf_dataset(self):
        import tensorflow as tf

        fields = self.spec.fields()
        first = self.start_step * self.local_batch
        last = _INFINITE if self._slots is None else len(self._slots)

        def produce(i):
            try:
                ex = self.example(int(i))
            except records.CorruptRecordError as error:
                if self._corruption is None:  # several workers may race here: any of theirs will do
                    self._corruption = error
                raise
            return tuple(np.asarray(ex[name], dtype=dtype) for name, dtype, _ in fields)

        def to_dict(i):
            values = tf.numpy_function(produce, [i], [tf.as_dtype(d) for _, d, _ in fields], stateful=False)
            out = {}
            for (name, _, shape), value in zip(fields, values):
                value.set_shape(shape)
                out[name] = value
            return out

        ds = tf.data.Dataset.range(first, last)
        ds = ds.map(to_dict, num_parallel_calls=self.num_workers, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=True)
        if self.prefetch:
            ds = ds.prefetch(self.prefetch)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options)

    def local_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """This host's batches as numpy dicts, ``local_batch`` clips each.

        A record that fails its CRC check stops the iteration with its own
        :class:`records.CorruptRecordError` (shard, record, byte offset, track id), not the
        ``tf.data`` error that carries it."""
        import tensorflow as tf

        try:
            for batch in self._tf_dataset().as_numpy_iterator():
                yield batch
        except tf.errors.OpError:
            if self._corruption is not None:
                raise self._corruption from None
            raise

    # -- global arrays --

    def _sharding(self):
        import jax
        from jax.sharding import NamedSharding, PartitionSpec

        mesh = self.mesh
        if mesh is None:
            mesh = jax.make_mesh((len(jax.devices()),), (self.data_axis,))
        if self.data_axis not in mesh.axis_names:
            raise ValueError(f"mesh axes {mesh.axis_names} lack the data axis {self.data_axis!r}")
        size = mesh.shape[self.data_axis]
        if self.global_batch % size:
            raise ValueError(f"global_batch {self.global_batch} is not divisible by the mesh's "
                             f"{self.data_axis!r} axis size {size}")
        return NamedSharding(mesh, PartitionSpec(self.data_axis))

    def __iter__(self):
        import jax

        if not self._jax_layout:
            raise RuntimeError("global arrays need the real process layout; this pipeline was built with "
                               "explicit process_index/process_count, use local_batches()")
        sharding = self._sharding()

        def generate():
            for batch in self.local_batches():
                yield {key: jax.make_array_from_process_local_data(
                    sharding, value, (self.global_batch,) + value.shape[1:]) for key, value in batch.items()}

        self._iterator = generate()
        return self._iterator

    def close(self) -> None:
        """Stops iteration and closes the shard files."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_train_iterator(data_dir, split: str, spec: InputSpec, mesh=None, *, start_step: int = 0,
                        process_index: int | None = None, process_count: int | None = None) -> InputPipeline:
    """Builds the input pipeline (module docstring); iterate it for dicts of global ``jax.Array``.

    Args:
      data_dir: TFDS data dir holding ``slakh2100/clips/<version>`` (or the version dir itself),
        local or ``gs://``.
      split: ``train``, ``validation`` or ``test``.
      spec: every setting of the batches (:class:`jointist_jax.data.spec.InputSpec`, usually
        :func:`jointist_jax.data.spec.input_spec` of a stage and a config).
      mesh: batches are sharded along ``spec.data_axis`` of it (default mesh: all devices).
      start_step: first step to produce; earlier batches are not read.
      process_index, process_count: for tests (default: jax's); explicit values allow only
        :meth:`InputPipeline.local_batches`.
    """
    return InputPipeline(data_dir, split, spec, mesh=mesh, start_step=start_step, process_index=process_index,
                         process_count=process_count)


def steps_per_epoch(data_dir, split: str, spec: InputSpec) -> int:
    """Training steps per epoch (examples per epoch // global batch, at least 1)."""
    with InputPipeline(data_dir, split, spec, process_index=0, process_count=1) as pipe:
        return pipe.steps_per_epoch
