"""A scripted waypoint controller for PointMaze, the way D4RL made its maze2d datasets.

The controller plans on the maze grid with a breadth-first search from the goal cell, steers
toward the centre of the next cell on the shortest path (the goal itself once in the goal's
cell) with a PD law on the point's position and velocity, and adds Gaussian action noise.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["WaypointController"]


class WaypointController:
    """Shortest-path waypoint controller for gymnasium-robotics' PointMaze envs.

    Args:
        maze_map: the maze grid, ``maze_map[row][col]`` is ``1`` for a wall (anything else,
            ``0``/``"g"``/``"r"``/``"c"``, is free), as ``env.unwrapped.maze.maze_map``.
        cell_xy_to_rowcol: maps an ``(x, y)`` position to its ``(row, col)`` cell.
        cell_rowcol_to_xy: maps a ``(row, col)`` cell to its centre ``(x, y)``.
        p_gain: proportional gain on the position error.
        d_gain: damping gain on the velocity.
        noise: standard deviation of the Gaussian noise added to every action.
        action_low: lower action bound (the action is clipped).
        action_high: upper action bound.

    Example:
        >>> import numpy as np
        >>> grid = [[1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
        >>> to_rc = lambda xy: np.array([int(1.5 - xy[1]), int(xy[0] + 2)])
        >>> to_xy = lambda rc: np.array([rc[1] - 1.5, 1.5 - rc[0] - 0.5 + 0.0])
        >>> ctrl = WaypointController(grid, to_rc, to_xy, noise=0.0)
        >>> obs = {"observation": np.array([-0.5, 0.0, 0.0, 0.0]),
        ...        "desired_goal": np.array([0.5, 0.0])}
        >>> action = ctrl.act(obs, np.random.default_rng(0))
        >>> bool(action[0] > 0)  # heads right, toward the goal
        True
    """

    def __init__(
        self,
        maze_map,
        cell_xy_to_rowcol,
        cell_rowcol_to_xy,
        *,
        p_gain: float = 10.0,
        d_gain: float = -1.0,
        noise: float = 0.3,
        action_low: float = -1.0,
        action_high: float = 1.0,
    ):
        self.free = np.array([[c != 1 for c in row] for row in maze_map], dtype=bool)
        self.to_rowcol = cell_xy_to_rowcol
        self.to_xy = cell_rowcol_to_xy
        self.p_gain, self.d_gain, self.noise = p_gain, d_gain, noise
        self.low, self.high = action_low, action_high
        self._goal_cell: tuple[int, int] | None = None
        self._next: dict[tuple[int, int], tuple[int, int]] = {}

    @classmethod
    def from_env(cls, env, **kwargs) -> WaypointController:
        """The controller of a (wrapped) PointMaze env, reading its maze."""
        maze = env.unwrapped.maze
        space = env.action_space
        return cls(
            maze.maze_map,
            maze.cell_xy_to_rowcol,
            maze.cell_rowcol_to_xy,
            action_low=float(np.min(space.low)),
            action_high=float(np.max(space.high)),
            **kwargs,
        )

    def _plan(self, goal_cell: tuple[int, int]) -> None:
        # BFS from the goal: for every reachable cell, the neighbour one step closer to it.
        self._goal_cell = goal_cell
        self._next = {goal_cell: goal_cell}
        queue = deque([goal_cell])
        rows, cols = self.free.shape
        while queue:
            r, c = queue.popleft()
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nr < rows and 0 <= nc < cols and self.free[nr, nc]:
                    if (nr, nc) not in self._next:
                        self._next[(nr, nc)] = (r, c)
                        queue.append((nr, nc))

    def waypoint(self, position: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The point to steer to: the next cell's centre on the shortest path, or the goal."""
        goal_cell = tuple(int(v) for v in self.to_rowcol(goal))
        if goal_cell != self._goal_cell:
            self._plan(goal_cell)
        cell = tuple(int(v) for v in self.to_rowcol(position))
        nxt = self._next.get(cell)
        if nxt is None or nxt == goal_cell:  # unplanned cell, or the goal's cell is next/here
            return np.asarray(goal, dtype=np.float64)
        return np.asarray(self.to_xy(np.array(nxt)), dtype=np.float64)

    def act(self, observation: dict, rng: np.random.Generator | None = None) -> np.ndarray:
        """A float32 action for one dict observation (``observation`` = x, y, vx, vy)."""
        state = np.asarray(observation["observation"], dtype=np.float64)
        target = self.waypoint(state[:2], np.asarray(observation["desired_goal"]))
        action = self.p_gain * (target - state[:2]) + self.d_gain * state[2:4]
        if self.noise > 0 and rng is not None:
            action = action + self.noise * rng.standard_normal(action.shape)
        return np.clip(action, self.low, self.high).astype(np.float32)
