"""Differentiable rendering in pure PyTorch.

`rasterizer` decides visibility (the nearest face per pixel centre; not differentiable),
`shading` recomputes barycentrics from the vertices and samples textures (differentiable),
`silhouette` gives an optional DIB-R-style soft mask, and `MeshRenderer` joins them.
"""

from .rasterizer import Fragments, rasterize
from .renderer import MeshRenderer, RenderOutput
from .shading import CoveredPixels, covered_pixels, interpolate_corner_attributes, interpolate_vertex_attributes, sample_texture
from .silhouette import soft_silhouette

__all__ = [
    "MeshRenderer", "RenderOutput", "Fragments", "rasterize", "CoveredPixels", "covered_pixels",
    "interpolate_corner_attributes", "interpolate_vertex_attributes", "sample_texture", "soft_silhouette",
]
