"""Shortest paths over a maze grid, the planner behind D4RL's maze2d and Minari's PointMaze data.

Breadth-first search from the goal cell gives each free cell its distance to the goal; following
strictly decreasing distance is the greedy policy of D4RL's Q-iteration on the same grid.
"""

from __future__ import annotations

from collections import deque

import numpy as np

MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))  # fixed order keeps tie-breaking deterministic


def distances_to(goal: tuple[int, int], free: np.ndarray) -> np.ndarray:
    """Steps from every cell to `goal` moving between 4-neighbouring free cells (-1: unreachable)."""
    dist = np.full(free.shape, -1, dtype=np.int64)
    dist[goal] = 0
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            nr, nc = r + dr, c + dc
            if 0 <= nr < free.shape[0] and 0 <= nc < free.shape[1] and free[nr, nc] and dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def shortest_path(start: tuple[int, int], goal: tuple[int, int], free: np.ndarray) -> list[tuple[int, int]]:
    """Cells from `start` to `goal` inclusive."""
    dist = distances_to(goal, free)
    if dist[start] < 0:
        raise ValueError(f"cell {goal} cannot be reached from {start}")
    path = [start]
    while path[-1] != goal:
        r, c = path[-1]
        path.append(next((r + dr, c + dc) for dr, dc in MOVES
                         if 0 <= r + dr < free.shape[0] and 0 <= c + dc < free.shape[1] and dist[r + dr, c + dc] == dist[r, c] - 1))
    return path
