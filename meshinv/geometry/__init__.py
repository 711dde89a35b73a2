"""Mesh template, OBJ I/O, weak-perspective camera and rotations."""

from .camera import (
    WeakPerspectiveCamera, euler_to_matrix, matrix_to_euler, matrix_to_quaternion, normalize_quaternion,
    pixel_centers, quaternion_multiply, quaternion_rotate, quaternion_to_matrix, rotation_about_y,
    rotation_angle_deg, turntable_quaternions,
)
from .mesh_ops import face_adjacency, face_normals, vertex_normals
from .obj_io import MeshData, export_textured_mesh, read_obj, write_obj
from .sphere import uv_sphere
from .template import MeshTemplate, TemplateConfig, build_template

__all__ = [
    "WeakPerspectiveCamera", "euler_to_matrix", "matrix_to_euler", "matrix_to_quaternion", "normalize_quaternion",
    "pixel_centers", "quaternion_multiply", "quaternion_rotate", "quaternion_to_matrix", "rotation_about_y",
    "rotation_angle_deg", "turntable_quaternions",
    "face_adjacency", "face_normals", "vertex_normals", "MeshData", "export_textured_mesh", "read_obj", "write_obj",
    "uv_sphere", "MeshTemplate", "TemplateConfig", "build_template",
]
