"""meshinv: single-image textured-mesh reconstruction by GAN inversion (MeshInversion, ECCV 2022).

Packages, in the direction data flows:
    geometry   mesh template, OBJ I/O, weak-perspective camera, rotations
    render     differentiable rasteriser (hard visibility + differentiable shading)
    utils      atomic file writes, logging, configuration, weight-file lookup
"""

__version__ = "0.1.0"
