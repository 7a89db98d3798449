"""What each job writes, slice by slice: the generators :func:`~emzoo.engine.run` drains.

Each yields ``(index, raw slice)`` in output order from a checked plan, its opened input and a
midpoint engine; input slices are copied, never re-quantised.
"""

from emzoo.engine.job import resample, unit
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.positions import repair_positions, upscale_positions

_CHUNK_GRID = 64  # dense-grid slices per chunk of input pairs (bounds memory)


def upscaled_slices(plan, source, engine):
    """Yields ``(j, raw)`` for the output slices of the upscaling ``plan``, one chunk of pairs at
    a time, with the midpoint ``engine``."""
    num_slices = plan.input_shape[0]
    positions, grid = upscale_positions(num_slices, plan.factor)
    levels = grid.bit_length() - 1
    chunk = max(1, min(engine.batch_size, _CHUNK_GRID // grid))
    next_out = 0
    left_unit = unit(source, 0)
    for first in range(0, num_slices - 1, chunk):
        last = min(first + chunk, num_slices - 1)
        dense = {first * grid: left_unit}
        for z in range(first + 1, last + 1):
            dense[z * grid] = unit(source, z)
        engine.fill_grid(dense, first * grid, last * grid, levels, plan.options.residual_scales)
        final_chunk = last == num_slices - 1
        while next_out < positions.count:
            position = positions[next_out] * grid  # in dense-grid units
            if position >= last * grid and not (final_chunk and position == last * grid):
                break
            if position.denominator == 1 and position.numerator % grid == 0:
                # An input slice: copied, never re-quantised.
                yield next_out, source.read(position.numerator // grid)
            else:
                yield next_out, resample(dense, position, source, plan.dtype)
            next_out += 1
        left_unit = dense[last * grid]
        engine.forget(keep=(last * grid,))
        del dense
        release_freed_memory()


def repaired_slices(plan, source, engine):
    """Yields ``(z, raw)`` for every slice of the repair ``plan``: good ones copied, each damaged
    run interpolated with the midpoint ``engine``."""
    starts = dict(plan.runs)
    z = 0
    while z < plan.input_shape[0]:
        if z not in starts:
            yield z, source.read(z)
            z += 1
            continue
        last = starts[z]
        positions, grid = repair_positions(last - z + 1)
        dense = {0: unit(source, z - 1), grid: unit(source, last + 1)}
        engine.fill_grid(dense, 0, grid, grid.bit_length() - 1)
        for k, position in enumerate(positions):
            yield z + k, resample(dense, position, source, plan.dtype)
        engine.forget()
        release_freed_memory()
        z = last + 1
