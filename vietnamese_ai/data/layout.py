"""Lay tokenised sequences out in rows for one forward pass, wasting as little compute as possible.

A *sequence* is a list of `Piece`s: trunk pieces (branch 0) followed by optional branch pieces.
Every trunk token sees the trunk tokens before it; a branch token sees the whole trunk and the
earlier tokens of its own branch, never another branch. Branch positions continue from the end of the
trunk, so each branch is computed exactly as if it were the only continuation. This is how a
preference pair shares its prompt: [prompt | chosen | rejected] with chosen and rejected as branches
1 and 2. A plain SFT example is a single trunk piece.

Packing (padding-free): several sequences share one row; position ids restart at 0 for each, and the
attention mask never crosses a sequence boundary. How long should a row be? Padding wastes the linear
layers' work, which one long row avoids entirely; but attention over a row of width W costs W^2 no
matter how much of it the mask hides. Per layer and token, the linear layers cost about 24 d^2 FLOPs
and attention about 4 W d, so a row costs W (1 + W / 6d) in units of one token's linear work.
`choose_rows` tries a few row capacities, fills rows first-fit-decreasing, and keeps the cheapest: a
7B model (d = 4096) packs a micro-batch into one row, a tiny one keeps rows near the longest sequence.

Targets are listed explicitly instead of as a shifted label tensor: target p is token `targets[p]`,
predicted from the kept position `target_index[p]`, and summed into group `target_groups[p]`. This
is what lets one position predict two tokens (the last prompt token predicts the first token of both
responses) and lets logits be computed only at positions that predict something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE = -100


@dataclass
class Piece:
    input_ids: list[int]
    labels: list[int]  # Hugging Face convention: labels[t] is input_ids[t] when it is a target, else -100
    branch: int = 0    # 0: trunk; k > 0: a private continuation of the trunk
    group: int = 0     # the per-sequence sum (0 <= group < num_groups) this piece's targets add into


Sequence = list[Piece]


@dataclass
class PackedBatch:
    """One micro-batch, ready for the model.

    Shape:
        input_ids, position_ids: (R, L) long
        segment_ids: (R, L) long, index of the sequence within its row, -1 on padding
        branch_ids: (R, L) long, 0 on trunk tokens and padding
        logits_mask: (R, L) bool, positions whose next-token logits are needed (K of them)
        target_index: (P,) long in [0, K), row-major order of logits_mask
        targets: (P,) long
        target_groups: (P,) long in [0, num_groups)
        group_ends: (G,) long, flat index (row * L + column) of each group's last token: where a reward
            head reads a response (its EOS)
        end_index: (G,) long in [0, K), each group end's place among the kept positions; only when
            the layout was asked to keep them (keep_ends=True), else empty
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    branch_ids: torch.Tensor
    logits_mask: torch.Tensor
    target_index: torch.Tensor
    targets: torch.Tensor
    target_groups: torch.Tensor
    num_groups: int
    num_tokens: int                 # real tokens, padding excluded (for tokens/s)
    num_items: int                  # what the loss is averaged over (tokens for SFT, pairs for DPO)
    packed: bool                    # several sequences share a row, or branches exist
    group_ends: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    end_index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    extras: dict[str, "torch.Tensor | PackedBatch"] = field(default_factory=dict)  # method-specific inputs

    def to(self, device: torch.device | str) -> "PackedBatch":
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items() if k != "extras"}
        return PackedBatch(**moved, extras={k: v.to(device) for k, v in self.extras.items()})

    def response_lengths(self) -> torch.Tensor:
        """Number of targets in each group. Shape: (num_groups,)"""
        return torch.zeros(self.num_groups, device=self.targets.device).index_add(
            0, self.target_groups, torch.ones_like(self.targets, dtype=torch.float))


def sequence_length(sequence: Sequence) -> int:
    return sum(len(piece.input_ids) for piece in sequence)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins of total length <= capacity (longest items placed first).

    >>> first_fit_decreasing([3, 5, 2, 4], capacity=5)
    [[1], [3], [0, 2]]
    """
    bins: list[list[int]] = []
    space: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(space):
            if lengths[i] <= free:
                bins[b].append(i)
                space[b] -= lengths[i]
                break
        else:
            bins.append([i])
            space.append(capacity - lengths[i])
    return bins


def row_cost(rows: int, width: int, pair_cost: float, causal: bool = False) -> float:
    """Estimated cost of a (rows, width) batch: linear work per token plus attention per token pair.
    `causal`: every row holds one unbranched sequence, so the batch needs no attention mask and the
    kernel's causal path computes about half the token pairs (a mask makes it compute them all)."""
    return rows * width * (1.0 + width * pair_cost * (0.5 if causal else 1.0))


def batch_cost(lengths: list[int], pack: bool, pair_cost: float, branched: bool) -> float:
    """`row_cost` of the rows `layout` would choose for sequences of these lengths (`branched`: they
    have branches, so every row needs a mask)."""
    rows = choose_rows(lengths, pair_cost) if pack else [[i] for i in range(len(lengths))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    return row_cost(len(rows), width, pair_cost, causal=not branched and all(len(row) == 1 for row in rows))


def choose_rows(lengths: list[int], pair_cost: float) -> list[list[int]]:
    """The cheapest first-fit-decreasing packing over a few row capacities.

    `pair_cost` is attention's cost per token pair relative to one token's linear layers, about
    1 / (6 * hidden_size); 0 packs everything into one row.

    >>> choose_rows([5, 5, 5, 5], pair_cost=0.0)
    [[0, 1, 2, 3]]
    >>> choose_rows([5, 5, 5, 5], pair_cost=1.0)
    [[0], [1], [2], [3]]
    >>> choose_rows([6, 3, 3, 6], pair_cost=0.02)  # rows of 6 waste nothing and keep attention short
    [[0], [3], [1, 2]]
    """
    longest, total = max(lengths), sum(lengths)
    capacities = sorted({min(total, int(longest * m)) for m in (1, 1.5, 2, 3, 4, 6, 8)} | {total})
    best, best_cost = None, float("inf")
    for capacity in capacities:
        rows = first_fit_decreasing(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in rows)
        cost = row_cost(len(rows), width, pair_cost)
        if cost <= best_cost:  # on a tie, fewer and longer rows
            best, best_cost = rows, cost
    return best


def layout(sequences: list[Sequence], pack: bool = True, num_groups: int | None = None,
           pad_token_id: int = 0, num_items: int | None = None, pair_cost: float = 0.0,
           keep_ends: bool = False) -> PackedBatch:
    """Lay sequences out in rows. With pack=False each sequence gets a row of its own (padded);
    with pack=True rows are chosen by `choose_rows` (pair_cost 0: one row). keep_ends=True also keeps
    the logits (and hidden states) at each group's last token."""
    lengths = [sequence_length(s) for s in sequences]
    rows = choose_rows(lengths, pair_cost) if pack else [[i] for i in range(len(sequences))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    branch_ids = torch.zeros(shape, dtype=torch.long)
    predictions: list[tuple[int, int, int]] = []  # (flat position, target token, group)
    ends: dict[int, int] = {}  # group -> flat position of its last token
    has_branches = False

    for r, row in enumerate(rows):
        offset = 0
        for s, index in enumerate(row):
            last_trunk = None  # flat column of the last trunk token so far
            in_branches = False
            trunk_length = 0
            for piece in sequences[index]:
                n = len(piece.input_ids)
                if n == 0:  # an empty prompt: nothing to place, and nothing for the next piece to follow
                    continue
                columns = range(offset, offset + n)
                input_ids[r, offset:offset + n] = torch.tensor(piece.input_ids)
                segment_ids[r, offset:offset + n] = s
                branch_ids[r, offset:offset + n] = piece.branch
                if piece.branch == 0:
                    if in_branches:
                        raise ValueError("trunk pieces must come before branch pieces")
                    position_ids[r, offset:offset + n] = torch.arange(trunk_length, trunk_length + n)
                    previous = last_trunk
                    trunk_length += n
                    last_trunk = offset + n - 1
                else:
                    has_branches = in_branches = True
                    position_ids[r, offset:offset + n] = torch.arange(trunk_length, trunk_length + n)
                    previous = last_trunk
                for t, column in enumerate(columns):
                    source = column - 1 if t > 0 else previous
                    if piece.labels[t] != IGNORE and source is not None:
                        predictions.append((r * width + source, piece.labels[t], piece.group))
                if any(label != IGNORE for label in piece.labels):  # prompt pieces belong to no group
                    ends[piece.group] = r * width + offset + n - 1
                offset += n

    flat = torch.tensor([p[0] for p in predictions], dtype=torch.long)
    groups = torch.tensor([p[2] for p in predictions], dtype=torch.long)
    total_groups = num_groups if num_groups is not None else max([int(groups.max()) + 1 if len(groups) else 0,
                                                                  max(ends, default=-1) + 1])
    group_ends = torch.tensor([ends.get(g, 0) for g in range(total_groups)], dtype=torch.long)
    logits_mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    logits_mask[flat] = True
    if keep_ends:
        logits_mask[group_ends] = True
    kept = logits_mask.nonzero().squeeze(1)
    target_index = torch.searchsorted(kept, flat)
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        segment_ids=segment_ids,
        branch_ids=branch_ids,
        logits_mask=logits_mask.view(shape),
        target_index=target_index,
        targets=torch.tensor([p[1] for p in predictions], dtype=torch.long),
        target_groups=groups,
        num_groups=total_groups,
        num_tokens=sum(lengths),
        num_items=num_items if num_items is not None else len(predictions),
        packed=has_branches or any(len(row) > 1 for row in rows),
        group_ends=group_ends,
        end_index=torch.searchsorted(kept, group_ends) if keep_ends else torch.empty(0, dtype=torch.long),
    )


def attention_allowed(segment_ids: torch.Tensor, branch_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                      window: int | None = None) -> torch.Tensor:
    """Which key each query may attend to: same sequence, not in the future, and on the trunk or on
    the query's own branch; with a sliding `window`, also at most window - 1 positions back
    (transformers' rule, kv > q - window), measured in position ids so that a branch sees exactly the
    trunk tokens it would see as a plain sequence. Padding attends to itself only, so no softmax row
    is empty (no NaN).

    Shape:
        segment_ids, branch_ids, position_ids: (R, L)
        returns: (R, 1, L, L) bool, [row, 0, query, key]

    >>> seg, br = torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 1, 2, 2]])   # trunk, branch 1, branch 2
    >>> attention_allowed(seg, br)[0, 0].int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [1, 0, 1, 1]], dtype=torch.int32)
    >>> attention_allowed(seg, br, torch.tensor([[0, 1, 1, 2]]), window=2)[0, 0].int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [0, 0, 1, 1]], dtype=torch.int32)
    """
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    same_sequence = segment_ids[:, :, None] == segment_ids[:, None, :]
    visible_branch = (branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])
    real = (segment_ids >= 0)[:, :, None]
    allowed = causal & same_sequence & visible_branch & real
    if window is not None:
        allowed &= (position_ids[:, :, None] - position_ids[:, None, :]) < window
    eye = torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    return (allowed | (eye & ~real))[:, None]


def attention_pair_cost(hidden_size: int) -> float:
    """Attention's cost per token pair relative to a token's linear layers (4 W d vs 24 d^2 per layer)."""
    return 1.0 / (6.0 * hidden_size)


def sft_sequence(input_ids: list[int], labels: list[int], group: int = 0) -> Sequence:
    return [Piece(input_ids, labels, branch=0, group=group)]
