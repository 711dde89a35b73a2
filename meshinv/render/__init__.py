"""Differentiable rendering in pure PyTorch.

`rasterizer` decides visibility (the nearest face per pixel centre; not differentiable),
`shading` recomputes barycentrics from the vertices and samples textures (differentiable),
`silhouette` gives an optional DIB-R-style soft mask, and `MeshRenderer` joins them. Code outside
this package makes renderers with `make_renderer(RenderSettings(...))` (`settings`), which picks the
backend.
"""

from .rasterizer import Fragments, rasterize
from .renderer import MeshRenderer, RenderOutput
from .settings import Renderer, RenderSettings, make_renderer
from .shading import CoveredPixels, covered_pixels, interpolate_corner_attributes, interpolate_vertex_attributes, sample_texture
from .silhouette import soft_silhouette

__all__ = [
    "MeshRenderer", "RenderOutput", "Renderer", "RenderSettings", "make_renderer", "Fragments", "rasterize",
    "CoveredPixels", "covered_pixels", "interpolate_corner_attributes", "interpolate_vertex_attributes", "sample_texture", "soft_silhouette",
]
