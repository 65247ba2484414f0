"""3D iterated function systems: ExFractalDB / MV-FractalDB (CVPR 2022) and 3D-OFDB.

A system is N affine maps of 12 parameters (row-major 3x3 linear part, then translation) with
selection probabilities |det| normalised. Point clouds are min-max normalised jointly into
[-1, 1] and centred on their centroid. Views are rendered in software (no GPU, no display):
a perspective camera at distance 4 looking at the origin, white 1-px points on black.

Pure functions of (parameters, numpy Generator); nothing here touches files.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

POINTS = 10_000
#: instance scalings: identity, then each of the 12 parameters times one of these (12 x 12 + 1)
FACTORS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)
INSTANCES_PER_CLASS = 12 * len(FACTORS) + 1
CAMERA_DISTANCE = 4.0
FOV_DEGREES = 45.0
NEAR, FAR = 1.0, 100.0


class SearchFailed(ValueError):
    """The category search found no acceptable system within its budget."""


def random_system(rng: np.random.Generator, min_maps: int = 2, max_maps: int = 7) -> np.ndarray:
    """(N, 13): 12 map parameters ~ U(-1, 1) and the selection probability |det| / sum |det|."""
    maps = int(rng.integers(min_maps, max_maps + 1))
    params = rng.uniform(-1.0, 1.0, (maps, 12))
    return with_probabilities(params)


def with_probabilities(params: np.ndarray) -> np.ndarray:
    dets = np.abs(np.linalg.det(params[:, :9].reshape(-1, 3, 3)))
    total = dets.sum()
    probs = dets / total if total > 0 else np.full(len(params), 1.0 / len(params))
    return np.column_stack([params, probs])


@njit(cache=True)
def _chaos_game(params, cumulative, choices):
    points = np.empty((choices.size, 3))
    x = y = z = 0.0
    for i in range(choices.size):
        m = np.searchsorted(cumulative, choices[i], side="right")
        if m >= cumulative.size:
            m = cumulative.size - 1
        p = params[m]
        x, y, z = (p[0] * x + p[1] * y + p[2] * z + p[9],
                   p[3] * x + p[4] * y + p[5] * z + p[10],
                   p[6] * x + p[7] * y + p[8] * z + p[11])
        points[i, 0] = x
        points[i, 1] = y
        points[i, 2] = z
    return points


def chaos_game(system: np.ndarray, rng: np.random.Generator, points: int = POINTS) -> np.ndarray:
    """(points, 3) raw attractor samples from the origin; may hold inf/NaN for expanding systems."""
    cumulative = np.cumsum(system[:, 12])
    params = np.ascontiguousarray(system[:, :12])
    with np.errstate(over="ignore", invalid="ignore"):
        return _chaos_game(params, cumulative, rng.random(points) * cumulative[-1])


def normalise(points: np.ndarray) -> np.ndarray | None:
    """Jointly min-max into [-1, 1], then centred on the centroid; None when degenerate."""
    if not np.isfinite(points).all():
        return None
    low, high = points.min(), points.max()
    with np.errstate(over="ignore", invalid="ignore"):
        span = high - low
        if not (np.isfinite(span) and span > 1e-12):
            return None
        scaled = (points - low) * (2.0 / span) - 1.0
    return scaled - scaled.mean(axis=0)


def accepts(cloud: np.ndarray | None, variance: float) -> bool:
    return cloud is not None and bool(np.all(cloud.var(axis=0) > variance))


def search_system(rng: np.random.Generator, variance: float = 0.05, points: int = POINTS,
                  max_tries: int = 20_000) -> np.ndarray:
    """Draw systems until one's normalised cloud has per-axis variance above ``variance`` and all
    its instance variations stay finite (a NaN/inf system is rejected here, never rendered)."""
    for _ in range(max_tries):
        system = random_system(rng)
        if accepts(normalise(chaos_game(system, rng, points)), variance) and _variants_finite(
                system, rng, points):
            return system
    raise SearchFailed(f"no 3D IFS with per-axis variance > {variance} in {max_tries:,} tries")


def _variants_finite(system: np.ndarray, rng: np.random.Generator, points: int) -> bool:
    return all(normalise(chaos_game(instance_system(system, i), rng, points)) is not None
               for i in range(1, INSTANCES_PER_CLASS))


def instance_system(system: np.ndarray, instance: int) -> np.ndarray:
    """Instance 0 is the class itself; 1 + 12 * param + k scales parameter ``param`` of every map
    by FACTORS[k]. The selection probabilities stay those of the class."""
    if not 0 <= instance < INSTANCES_PER_CLASS:
        raise ValueError(f"instance {instance} outside 0..{INSTANCES_PER_CLASS - 1}")
    varied = system.copy()
    if instance:
        param, k = divmod(instance - 1, len(FACTORS))
        varied[:, param] *= FACTORS[k]
    return varied


def instance_cloud(system: np.ndarray, instance: int, rng: np.random.Generator,
                   points: int = POINTS) -> np.ndarray:
    """The normalised, centred (points, 3) cloud of one instance; a degenerate variation (NaN,
    inf, a single point) falls back to the class system so no broken cloud is ever returned."""
    cloud = normalise(chaos_game(instance_system(system, instance), rng, points))
    if cloud is None:
        cloud = normalise(chaos_game(system, rng, points))
    if cloud is None:
        raise ValueError("degenerate 3D IFS system: its attractor is not finite")
    return cloud


# --- camera and software rasteriser --------------------------------------------------------------


def eye_position(azimuth: float, elevation: float, distance: float = CAMERA_DISTANCE) -> np.ndarray:
    """Camera position on a sphere around the origin; y is the vertical axis."""
    return distance * np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                                math.cos(elevation) * math.cos(azimuth)])


def look_at(eye: np.ndarray) -> np.ndarray:
    """3x3 world-to-camera rotation (rows: right, up, backward) for a camera looking at the origin."""
    backward = eye / np.linalg.norm(eye)
    up = np.array([0.0, 1.0, 0.0])
    if abs(backward @ up) > 0.999:
        up = np.array([0.0, 0.0, -1.0])
    right = np.cross(up, backward)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(backward, right), backward])


@njit(cache=True)
def _splat(points, rotation, eye, focal, near, far, image):
    size = image.shape[0]
    half = size / 2.0
    for i in range(points.shape[0]):
        dx = points[i, 0] - eye[0]
        dy = points[i, 1] - eye[1]
        dz = points[i, 2] - eye[2]
        cam_x = rotation[0, 0] * dx + rotation[0, 1] * dy + rotation[0, 2] * dz
        cam_y = rotation[1, 0] * dx + rotation[1, 1] * dy + rotation[1, 2] * dz
        depth = -(rotation[2, 0] * dx + rotation[2, 1] * dy + rotation[2, 2] * dz)
        if depth < near or depth > far:
            continue
        col = math.floor(half + half * focal * cam_x / depth)
        row = math.floor(half - half * focal * cam_y / depth)
        if 0 <= col < size and 0 <= row < size:
            image[row, col] = 255


def render_view(cloud: np.ndarray, eye: np.ndarray, size: int = 224,
                fov_degrees: float = FOV_DEGREES) -> np.ndarray:
    """uint8 size x size: every point projected by the perspective camera at ``eye`` as one white
    pixel on black (OpenGL conventions: near 1, far 100, y up)."""
    image = np.zeros((size, size), dtype=np.uint8)
    focal = 1.0 / math.tan(math.radians(fov_degrees) / 2.0)
    _splat(np.ascontiguousarray(cloud, dtype=np.float64), look_at(eye), np.asarray(eye, dtype=np.float64),
           focal, NEAR, FAR, image)
    return image


def fixed_view(k: int, views: int, rng: np.random.Generator, elevation_deg: float = 30.0,
               jitter_deg: float = 3.0) -> np.ndarray:
    """MV-FractalDB: view k of ``views`` around the vertical axis, 30 degrees up, small jitter."""
    jitter = np.radians(rng.uniform(-jitter_deg, jitter_deg, 2))
    azimuth = 2.0 * math.pi * k / views + jitter[0]
    return eye_position(azimuth, math.radians(elevation_deg) + jitter[1])


def random_view(rng: np.random.Generator) -> np.ndarray:
    """ExFractalDB: a viewpoint drawn uniformly on the sphere."""
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    elevation = math.asin(rng.uniform(-1.0, 1.0))
    return eye_position(azimuth, elevation)


def ply_bytes(cloud: np.ndarray) -> bytes:
    """Binary little-endian PLY of an (N, 3) point cloud."""
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(cloud)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    return header.encode("ascii") + np.ascontiguousarray(cloud, dtype="<f4").tobytes()
