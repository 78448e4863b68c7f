"""Gather plans and their flat table encoding (subnet_kernels/plan.py)."""
import pytest
import torch

from subnet_kernels import plan as P
from subnet_kernels import reference as R
from kernel_utils import program_plans


def _random_plans(sources, n_plans=8):
    plans = []
    for _ in range(n_plans):
        sid = int(torch.randint(len(sources), ()))
        index = []
        for size in sources[sid].shape:
            choice = int(torch.randint(3, ()))
            if choice == 0:
                index.append(None)
            elif choice == 1:  # sorted subset, as pruning produces
                index.append(torch.randperm(size)[: max(1, size // 2)].sort().values)
            else:  # any order, repeats allowed
                index.append(torch.randint(size, (int(torch.randint(1, size + 2, ())),)))
        plans.append(P.GatherPlan(sid, tuple(index)))
    return plans


def _sources():
    return [torch.randn(7), torch.randn(6, 5), torch.randn(4, 3, 5), torch.randn(3, 4, 2, 5)]


def test_table_decoding_matches_index_select():
    sources = _sources()
    plans = _random_plans(sources, 12)
    table = P.build_table(sources, plans)
    flat = R.gather_flat(sources, table.table, table.total)
    for got, want in zip(P.split_outputs(flat, table), R.gather_compact(sources, plans)):
        assert torch.equal(got, want)


def test_outputs_are_views_of_one_buffer():
    sources = _sources()
    table = P.build_table(sources, _random_plans(sources, 5))
    flat = torch.arange(table.total, dtype=torch.float32)
    outs = P.split_outputs(flat, table)
    assert all(o.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() for o in outs)
    assert sum(o.numel() for o in outs) == table.total


def test_flat_source_is_zero_copy_for_consecutive_views():
    buf = torch.randn(60)
    views = [buf[:20].view(4, 5), buf[20:60].view(2, 4, 5)]
    flat = P.flat_source(views)
    assert flat.data_ptr() == buf.data_ptr() and flat.numel() == 60
    separate = [torch.randn(3), torch.randn(2, 2)]
    assert torch.equal(P.flat_source(separate), torch.cat([separate[0], separate[1].reshape(-1)]))


def test_pairs_and_plans_are_equivalent():
    w = torch.randn(4, 6)
    idx = torch.tensor([0, 2])
    a = P.build_table([w], [(0, (idx, None))]).table
    b = P.build_table([w], [P.GatherPlan(0, (idx, None))]).table
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad, err", [
    ((1, (None,)), IndexError),                        # no source 1
    ((0, (None,)), ValueError),                        # 1 index entry for a 2-D source
    ((0, (torch.tensor([4]), None)), IndexError),      # row 4 of 4
    ((0, (torch.tensor([[0]]), None)), ValueError),    # 2-D index
])
def test_invalid_plans_are_rejected(bad, err):
    with pytest.raises(err):
        P.build_table([torch.randn(4, 6)], [bad])


def test_empty_outputs():
    w = torch.randn(4, 6)
    table = P.build_table([w], [(0, (torch.tensor([], dtype=torch.long), None)), (0, (None, None))])
    outs = P.split_outputs(R.gather_flat([w], table.table, table.total), table)
    assert outs[0].shape == (0, 6) and torch.equal(outs[1], w)


# --- copy programs (what the GPU backends run) -------------------------------------------

@pytest.mark.parametrize("element_size", [1, 2, 4, 8])
def test_program_copies_what_the_table_says(element_size):
    sources, plans = program_plans()
    table = P.build_table(sources, plans)
    numels = [s.numel() for s in sources]
    program = P.build_program(table.table, numels, element_size)
    got = P.program_source_index(program, numels, table.total)
    assert torch.equal(got, P.table_source_index(table.table))


@pytest.mark.parametrize("element_size", [1, 2, 4, 8])
def test_program_tasks_are_bounded_and_their_vec_claims_hold(element_size):
    sources, plans = program_plans()
    sources = sources + sources[:2]
    plans = plans + _random_plans(sources, 12)
    table = P.build_table(sources, plans)
    program = P.build_program(table.table, [s.numel() for s in sources], element_size)
    vec = 16 // element_size
    tasks, offs = program.tasks, program.offsets
    kinds = set()
    for kind, sid, src_off, dst, nrows, ncols, rows_at, cols_at in tasks.tolist():
        kinds.add(kind)
        assert nrows * ncols * element_size <= P.CHUNK_BYTES or nrows * ncols == 1
        if kind & P.VEC:  # every row start and every 16 bytes of columns aligned
            assert ncols % vec == 0 and dst % vec == 0 and src_off % vec == 0
            if kind & 3 != P.SPAN:
                assert bool((offs[rows_at:rows_at + nrows] % vec == 0).all())
            if kind & 3 == P.GATHER:
                groups = offs[cols_at:cols_at + ncols].view(-1, vec)
                assert bool((groups[:, 0] % vec == 0).all())
                assert torch.equal(groups - groups[:, :1], torch.arange(vec).expand_as(groups))
    if element_size == 4:  # the plans above exercise every kind, with and without VEC
        assert kinds == {P.SPAN, P.ROWS, P.GATHER, P.SPAN | P.VEC, P.ROWS | P.VEC, P.GATHER | P.VEC}


def test_program_is_cached_per_device_and_element_size():
    sources, plans = program_plans()
    table = P.build_table(sources, plans)
    first = table.program(sources)
    assert table.program(sources) is first
    halves = [s.half() for s in sources]
    assert table.program(halves) is not first


def test_program_rejects_reads_outside_a_source():
    w = torch.randn(4, 6)
    table = P.build_table([w], [(0, (torch.tensor([1]), None))])
    bad = table.table.clone()
    bad[-1] = 9  # kept row 9 of 4
    with pytest.raises(ValueError, match="past the end"):
        P.build_program(bad, [w.numel()], 4)
    bad[-1] = -1
    with pytest.raises(ValueError, match="negative"):
        P.build_program(bad, [w.numel()], 4)
