"""meshinv: single-image textured-mesh reconstruction by GAN inversion (MeshInversion, ECCV 2022).

Packages, lowest first (each imports only from those above it in this list; docs/method.md
describes what they compute):
    utils       generic helpers: typed configs, atomic file writes, image reading, logging, weight files
    geometry    mesh template, OBJ I/O, weak-perspective camera, rotations
    render      differentiable rasteriser (hard visibility + differentiable shading), RenderSettings
    models      ConvMesh generator, UV and image discriminators, camera predictor, checkpoint files
    losses      Chamfer mask and texture losses, VGG-19 features, regularisers
    data        the Sample type, crops, dataset readers (folders, synthetic, CUB, PASCAL3D+), pseudo-GT
    training    GAN pretraining and the camera predictor's training
    inversion   the inversion engine (z search, 4-stage optimisation) and its resumable batch job
    evaluation  metrics (mask IoU, FID, 3D metrics) over inversion results, and the report
`meshinv.config` holds the experiment config, one section per stage.
"""

__version__ = "0.1.0"
